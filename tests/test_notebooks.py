"""The notebooks: each one runs in smoke mode and learns, and the committed ones are clean.

The smoke run also compares the cells marked NBVAL_CHECK_OUTPUT with the committed full-run
outputs, as `pytest --nbval-lax notebooks/` would (without executing every notebook a second time).
"""
import json
import os
import re
from pathlib import Path

import pytest

from book_utils import exercises, results

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHANCE = 0.1  # every chapter's data set has ten classes
# "Learned something": the smoke runs' accuracy must be at least this many times chance.
WELL_ABOVE = {"01_mnist_mlp": 5, "02_mnist_cnn": 5}  # the rest: 2
MACHINE_PATH = re.compile(r"/(work|root|tmp|home|Users)/[\w.-]+")
MAX_BYTES = 5_000_000


def load(path: Path):
    """The notebook as nbformat reads it (cell sources as strings)."""
    import nbformat

    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def errors(nb):
    return [o for c in code_cells(nb) for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_there_are_chapters():
    assert [p.stem for p in NOTEBOOKS][:3] == ["01_mnist_mlp", "02_mnist_cnn", "03_cifar10_cnn"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_smoke_run_learns_and_records_its_results(notebook, tmp_path):
    import papermill

    out = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(out), parameters={"SMOKE": True}, cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=False)
    nb = load(out)
    assert not errors(nb)
    record = json.loads((Path(os.environ["BOOK_RESULTS_DIR"]) / f"{notebook.stem}.json").read_text())
    assert record["mode"] == "smoke" and record["chapter"] == notebook.stem
    assert record["data"] and record["params"] > 0 and record["model_bytes"] > 0.5 * record.get("weight_bits", 32) / 8 * record["params"]  # a real file
    assert record["test_accuracy"] >= WELL_ABOVE.get(notebook.stem, 2) * CHANCE, record
    text = "".join("".join(o.get("text", "")) for c in code_cells(nb) for o in c.get("outputs", []))
    assert f"data: {record['data']}" in text  # the notebook says which data it used
    committed = {c["source"]: c for c in code_cells(load(notebook)) if c["source"].startswith("# NBVAL_CHECK_OUTPUT")}
    for ran in code_cells(nb):
        stored = committed.get(ran["source"])
        if stored and stored.get("outputs"):
            assert checked_text(ran) == checked_text(stored), f"this cell prints something else than committed:\n{ran['source']}"


def checked_text(cell) -> str:
    """What a cell printed (streams and plain-text results), the part nbval compares."""
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_complete(notebook):
    from papermill.translators import PythonTranslator

    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", notebook.name)
    assert notebook.stat().st_size < MAX_BYTES, "keep notebooks light: smaller figures, fewer outputs"
    nb = load(notebook)
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    number = int(notebook.name[:2])
    assert first.startswith(f"# Chapter {number}:"), "the first cell is the chapter's title"
    assert f"colab.research.google.com/github/" in first and f"/notebooks/{notebook.name})" in first
    assert "You will learn" in first
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for section in ("## Exercises", "## Summary", "## Sources"):
        assert section in markdown, f"missing section {section}"
    assert len(exercises.questions(number)) >= 3

    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = PythonTranslator.inspect(tagged[0])
    assert {p.name for p in params} >= {"SMOKE", "EPOCHS", "SEED"}
    assert len(params) == len([ln for ln in "".join(tagged[0]["source"]).splitlines() if ln.strip()]), \
        "papermill must be able to parse every line of the parameters cell"

    assert not errors(nb)
    for i, cell in enumerate(code_cells(nb)):
        assert cell.get("execution_count") is not None, f"code cell {i} was never executed"
        found = MACHINE_PATH.search(json.dumps(cell.get("outputs", [])))
        assert not found, f"code cell {i} shows a machine path: {found.group(0)}"
    assert not MACHINE_PATH.search(json.dumps(nb["metadata"]))
    figures = sum("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c.get("outputs", []))
    assert figures >= 3


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_come_from_a_recorded_full_run(notebook):
    record = json.loads((ROOT / "results" / f"{notebook.stem}.json").read_text())
    assert record["mode"] == "full"
    text = "".join("".join(o.get("text", "")) for c in code_cells(load(notebook)) for o in c.get("outputs", []))
    assert "full run," in text and f"data: {record['data']}" in text
    assert f"{100 * record['test_accuracy']:.2f}" in text or f"{record['test_accuracy']:.2%}" in text


def test_readme_results_table_is_generated_from_the_records():
    table = results.table(results.load_all(ROOT / "results"))
    assert table in (ROOT / "README.md").read_text(), "run: python tools/run_book.py --readme"


def test_a_smoke_run_of_the_book_keeps_its_models_and_records_in_build(monkeypatch):
    """run_book.py --smoke must never replace a full run's trained models (models/) or records (results/)."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import run_book

    seen = {}

    def execute(notebook, smoke, output_dir):  # instead of papermill: what the notebook would see
        seen.update(smoke=smoke, models=os.environ["BOOK_MODELS_DIR"], results=os.environ["BOOK_RESULTS_DIR"])
        return output_dir / notebook.name

    for name in ("BOOK_MODELS_DIR", "BOOK_RESULTS_DIR"):  # restored after the test
        monkeypatch.setenv(name, "unset")
    monkeypatch.setattr(run_book, "execute", execute)
    assert run_book.main(["--smoke", "--only", "01"]) == 0
    assert seen == {"smoke": True, "models": str(ROOT / "build" / "models"), "results": str(ROOT / "build" / "results")}


SHOWN = re.compile(r"show_source\((\w+)\.(\w+)\)")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_listings_show_the_package_as_it_is(notebook):
    """Each committed show_source output is the current source of what it shows: a reader reads the code
    the package runs (a change to a shown function needs its chapter re-run)."""
    import importlib
    import inspect

    for i, cell in enumerate(code_cells(load(notebook))):
        shown = [importlib.import_module(f"book_utils.{module}").__dict__[name]
                 for module, name in SHOWN.findall(cell["source"])]
        listings = [o["data"]["text/plain"] for o in cell.get("outputs", []) if "text/plain" in o.get("data", {})]
        if shown:
            assert len(listings) == len(shown), f"code cell {i}: {len(shown)} listings, {len(listings)} outputs"
        for obj, listing in zip(shown, listings):
            assert listing.strip() == inspect.getsource(obj).strip(), \
                f"code cell {i} shows an older {obj.__qualname__}: re-run {notebook.stem}"
