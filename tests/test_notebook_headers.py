"""Every chapter's Colab badge and set-up cell are the ones generated from pyproject.toml's address and release."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import notebook_headers  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_address_lives_in_pyproject_only():
    p = notebook_headers.project()
    assert p["repository"] == PROJECT["urls"]["Repository"] and p["tag"] == f"v{PROJECT['version']}"
    pins = (ROOT / "requirements.txt").read_text()
    assert f"=={p['pins']['tensorflow']}" in pins and f"keras=={p['pins']['keras']}" in pins
    # No other file of the book spells the address out (the README's Colab instructions link to the site).
    for path in [*ROOT.glob("*.md"), *ROOT.glob("tools/*.py"), *ROOT.glob("book_utils/*.py"), ROOT / "Makefile"]:
        if path.name != "notebook_headers.py":
            assert p["slug"] not in path.read_text(), f"{path.name} spells out the repository address"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_badge_and_setup_cell_are_generated(notebook):
    problems = notebook_headers.check(notebook)
    assert not problems, f"{problems}; run: python tools/notebook_headers.py --write {notebook.relative_to(ROOT)}"
    cells = json.loads(notebook.read_text())["cells"]
    first, setup = "".join(cells[0]["source"]), "".join(cells[1]["source"])
    assert f"/blob/v{PROJECT['version']}/notebooks/{notebook.name})" in first
    assert f'git+{{BOOK}}@v{PROJECT["version"]}"' in setup, "installs the pinned release, not main"
    compile(setup, notebook.name, "exec")


def test_the_generator_is_idempotent_and_keeps_the_rest(tmp_path):
    source = NOTEBOOKS[-1]
    copy = tmp_path / source.name
    copy.write_text(source.read_text())
    notebook_headers.write(copy)
    once = copy.read_text()
    assert not notebook_headers.write(copy) and copy.read_text() == once  # a second run changes nothing
    before, after = json.loads(source.read_text())["cells"], json.loads(once)["cells"]
    assert before[2:] == after[2:] and before[1]["outputs"] == after[1]["outputs"]
    strip = lambda text: notebook_headers.BADGE.sub("", text)  # noqa: E731
    assert strip("".join(before[0]["source"])) == strip("".join(after[0]["source"]))


def run_setup(tmp_path, setup: str, colab: bool = False):
    """Run a set-up cell with pip replaced by a recorder; colab=True: as if book_utils were not installed."""
    if colab:
        setup = setup.replace('importlib.util.find_spec("book_utils") is None', "True")
    script = tmp_path / "setup.py"
    script.write_text("import json\ncalls = []\ndef _fake_run(args, **kw): calls.append(args)\n"
                      + setup.replace("subprocess.run(", "_fake_run(")
                      + "\nprint('PIP', json.dumps(calls)) if calls else None\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_setup_cell_installs_nothing_and_says_nothing_where_the_versions_match(tmp_path):
    """As the checkout runs it: book_utils is importable and the versions are the pinned ones."""
    assert run_setup(tmp_path, notebook_headers.setup_source(8, notebook_headers.project())) == ""


def test_on_colab_it_installs_the_release_and_pins_the_tensorflow_it_found(tmp_path):
    p = notebook_headers.project()
    out = run_setup(tmp_path, notebook_headers.setup_source(9, p), colab=True)
    args = json.loads(out.split("PIP ", 1)[1])[0]
    assert args[1:5] == ["-m", "pip", "install", "-q"]
    assert f"book-utils[deploy] @ git+{p['repository']}@{p['tag']}" in args
    assert f"keras=={p['pins']['keras']}" in args  # what is installed here, so pip cannot change it
    assert any(a.startswith(("tensorflow==", "tensorflow-cpu==")) for a in args), args
    out = run_setup(tmp_path, notebook_headers.setup_source(2, p), colab=True)
    assert f"book-utils @ git+{p['repository']}@{p['tag']}" in out  # Part I needs no [deploy] extra


def test_the_setup_cell_explains_other_versions_and_keeps_them(tmp_path):
    setup = notebook_headers.setup_source(2, notebook_headers.project())
    out = run_setup(tmp_path, setup.replace('RUN_WITH = {"tensorflow": "', 'RUN_WITH = {"tensorflow": "0.0.'))
    assert "this book was run with TensorFlow 0.0." in out and "keeps them" in out
    assert "pip install tensorflow==0.0." in out
