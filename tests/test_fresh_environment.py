"""A chapter opened alone, as on Colab: an empty folder, the package installed from a built wheel, no checkout.

One cheap chapter of each part is copied into an empty temporary folder and run in smoke mode by a
Python whose only book_utils is the wheel's (the book's pinned dependencies come from .venv; the
checkout is not importable, there is no results/ and no models/). The chapter must run, write its
record into the folder, show the same comparisons as in the checkout (the earlier chapters' recorded
full runs travel inside the package), and recreate a missing earlier model by a labelled short run.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from book_utils import results

ROOT = Path(__file__).resolve().parent.parent
RECORDS = {p.stem: json.loads(p.read_text()) for p in (ROOT / "results").glob("[0-9][0-9]_*.json")}


def recorded(chapter: str) -> dict:
    return RECORDS[chapter]


# One cheap chapter of each part; the earlier chapters whose recorded runs each compares with (shown by
# their test accuracy; chapter 4 compares per class only when both ran on the same test photos), and the
# earlier models it must recreate when they are missing.
CHAPTERS = {
    "02_mnist_cnn": {"compares_with": {"01_mnist_mlp": "any data"}, "recreates": []},  # Part I
    "04_vgg": {"compares_with": {"03_cifar10_cnn": "same data"}, "recreates": []},  # Part II
    "09_coreml": {"compares_with": {}, "recreates": ["02_mnist_cnn.keras", "06_mobilenets.keras"]},  # Part III
}


MISSING = re.compile(r"no record|Left out|run chapter \d|run notebooks/|first for the comparison")


def test_records_without_a_folder_fall_back_to_the_books_recorded_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_RESULTS_DIR", str(tmp_path))
    own = dict(RECORDS["02_mnist_cnn"], mode="smoke", test_accuracy=0.5)
    (tmp_path / "02_mnist_cnn.json").write_text(json.dumps(own))
    merged = {r["chapter"]: r for r in results.load_all()}
    assert merged["02_mnist_cnn"]["mode"] == "smoke"  # this folder's own run wins
    assert merged["01_mnist_mlp"] == RECORDS["01_mnist_mlp"]  # the book's recorded run fills the gap
    assert sorted(merged) == sorted(RECORDS)
    assert [r["chapter"] for r in results.load_all(tmp_path)] == ["02_mnist_cnn"]  # a folder: only its own


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    """A new virtual environment with book_utils installed from a wheel built from the sources."""
    tmp = tmp_path_factory.mktemp("fresh")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "book_utils", src / "book_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "results", src / "results")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp / "dist")],
                   check=True, cwd=tmp)
    wheel, = (tmp / "dist").glob("book_utils-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True)
    # The book's pinned dependencies (TensorFlow, Keras, papermill...) from .venv, as Colab has its own:
    # a path line in a .pth file. The .venv's own .pth files (its editable book_utils) are not read.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "book_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The notebook's kernel is this Python (a kernelspec found before any other, through JUPYTER_PATH).
    kernel = tmp / "jupyter" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fresh)", "language": "python"}))
    # Guard: were the checkout's package used, a chapter would write into the committed results/.
    check = subprocess.run([str(python), "-c", "import book_utils.env as e; print(e.repo_root())"],
                           capture_output=True, text=True, cwd=tmp, env=fresh_env(python))
    assert check.stdout.strip().endswith("None"), check.stdout + check.stderr[-2000:]
    return python


def fresh_env(python: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BOOK_RESULTS_DIR", "BOOK_MODELS_DIR", "BOOK_SMOKE", "PYTHONPATH", "VIRTUAL_ENV")}
    env["JUPYTER_PATH"] = str(python.parent.parent.parent / "jupyter")
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_is_the_only_book_utils(fresh_python, tmp_path):
    out = subprocess.run([str(fresh_python), "-c", "import book_utils, book_utils.env as e, book_utils.results as r; "
                          "print(book_utils.__file__); print(e.repo_root()); print(r.recorded_dir()); "
                          "print(len(r.load_all()))"],
                         check=True, capture_output=True, text=True, cwd=tmp_path, env=fresh_env(fresh_python))
    where, root, recorded_dir, count = out.stdout.split("\n")[-5:-1]
    assert Path(where).is_relative_to(fresh_python.parent.parent), where
    assert root == "None"  # not a checkout: results/ and models/ are the working folder's
    assert Path(recorded_dir).is_relative_to(fresh_python.parent.parent)
    assert int(count) == len(RECORDS), "the recorded full runs travel inside the wheel"


def table_rows(cell) -> list[str]:
    """The first column of every table row a cell showed: Markdown tables (without their header) and
    printed tables (lines whose first column is followed by two or more spaces)."""
    rows = []
    for o in cell.get("outputs", []):
        markdown = [line for line in "".join(o.get("data", {}).get("text/markdown", "")).splitlines()
                    if line.startswith("|") and not re.match(r"\|[-:| ]+\|$", line)]
        rows += [line.split("|")[1].strip() for line in markdown[1:]]
        for line in "".join(o.get("text", "")).splitlines():
            found = re.match(r"(\S.*?)\s{2,}\S", line)
            if found:
                rows.append(found.group(1))
    return rows


def printed(nb) -> str:
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_a_chapter_opened_alone_runs_and_shows_every_comparison(chapter, fresh_python, tmp_path):
    folder = tmp_path / "reader"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / f"{chapter}.ipynb", folder)
    out = folder / f"{chapter}.out.ipynb"
    run = subprocess.run([str(fresh_python), "-m", "papermill", f"{chapter}.ipynb", out.name, "-p", "SMOKE", "True",
                          "-k", "python3", "--no-progress-bar"],
                         cwd=folder, env=fresh_env(fresh_python), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    ran = json.loads(out.read_text())
    text = printed(ran)
    record = json.loads((folder / "results" / f"{chapter}.json").read_text())  # the folder's own results/
    assert record["mode"] == "smoke" and f"data: {record['data']}" in text
    committed_nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    compares_with = CHAPTERS[chapter]["compares_with"]
    comparable = [c for c, when in compares_with.items() if when == "any data" or recorded(c)["data"] == record["data"]]
    for earlier in comparable:  # the earlier chapter's recorded result, shown as in the checkout
        accuracy = f"{recorded(earlier)['test_accuracy']:.2%}"
        assert accuracy in text, f"{chapter} opened alone does not compare with {earlier} ({accuracy})"
    for filename in CHAPTERS[chapter]["recreates"]:  # a labelled short run for each missing earlier model
        assert f"stand-in for {filename}" in text and f"({filename} not found in the models folder)" in text
    if len(comparable) == len(compares_with):
        assert not MISSING.search(text), f"{chapter} opened alone leaves out: {MISSING.search(text).group(0)}"

    committed = {"".join(c["source"]): c for c in committed_nb["cells"] if c["cell_type"] == "code"}
    for cell in ran["cells"]:
        source = "".join(cell["source"])
        if source in committed and table_rows(committed[source]):  # every row of the checkout's tables
            lost = collections.Counter(table_rows(committed[source])) - collections.Counter(table_rows(cell))
            assert not lost, f"{chapter}: a table lost rows {sorted(lost)}:\n{source}"
