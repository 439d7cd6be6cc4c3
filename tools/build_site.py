"""Build the book's website from the committed, executed notebooks (no notebook is run again).

    python tools/build_site.py    # `make site`: build/site/html/index.html

Sphinx with MyST-NB and sphinx-book-theme (pinned in requirements.txt). The chapters are staged
with a generated landing page (the chapter list from README.md, the results table from results/)
in build/site/_src, and built into build/site/html. Everything is written under build/site/; the
site loads nothing from the internet (MathJax comes from a pinned wheel, the Colab badge image is
a local copy), so it can be read offline from the folder.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SRC, HTML, DOCTREES = SITE / "_src", SITE / "html", SITE / "_doctrees"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
PARTS = [  # (caption, first chapter, last chapter); later chapters go to the last part
    ("Part I: first networks", 1, 3),
    ("Part II: modern architectures", 4, 7),
    ("Part III: shipping a model", 8, 10),
    ("Appendix", 11, 99),
]


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def title(notebook: Path) -> str:
    """The chapter's title: the first line of its first cell, without the '# '."""
    import json

    first = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    return first.splitlines()[0].lstrip("# ").strip()


def readme_parts() -> tuple[str, dict[str, str]]:
    """README's opening paragraph and its chapter table's 'what you build' column, by notebook stem."""
    text = (ROOT / "README.md").read_text()
    intro = text.split("\n\n", 2)[1].strip()
    what = {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\| *\d+ *\| *\[`(\d\d_\w+)`\]\([^)]*\) *\| *(.*?) *\|$", text, re.M)}
    return intro, what


def repository() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def landing_page() -> str:
    sys.path.insert(0, str(ROOT))
    from book_utils import results

    intro, what = readme_parts()
    chapters = notebooks()
    lines = ["# Is this a cat or a dog?", "", "*A hands-on book on convolutional neural networks*", "",
             intro, "",
             "## How to read it", "",
             "- **Here, on the web**: every chapter with the figures, tables and outputs of its recorded full "
             "run; use the navigation on the left, *Next* at the bottom of each page, or search.",
             "- **On Colab**: the *Open in Colab* badge at the top of each chapter opens it with the helper "
             "package installed at the book's release; it runs on its own and trains whatever it needs.",
             f"- **In JupyterLab**: clone [the repository]({repository()}) and run `make lab`.", "",
             "## Chapters", "",
             "| # | chapter | what you build |", "|---:|---|---|"]
    for nb in chapters:
        lines.append(f"| {int(nb.name[:2])} | [{title(nb)}](notebooks/{nb.name}) | {what.get(nb.stem, '')} |")
    lines += ["", "## Results", "",
              "Every chapter's recorded full run (`results/*.json`), the same table as the repository's README:",
              "", results.table(results.load_all(ROOT / "results")), ""]
    for caption, low, high in PARTS:
        part = [nb for nb in chapters if low <= int(nb.name[:2]) <= high]
        if part:
            lines += ["```{toctree}", ":hidden:", f":caption: {caption}", "",
                      *[f"notebooks/{nb.stem}" for nb in part], "```", ""]
    return "\n".join(lines)


def mathjax_file() -> Path:
    """MathJax 3's single-file SVG build, from the pinned django-static-mathjax wheel (no Django needed)."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("MathJax is missing: pip install -r requirements.txt (django-static-mathjax)")
    path = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5" / "tex-svg.js"
    if not path.is_file():
        raise SystemExit(f"MathJax's tex-svg.js is not where django-static-mathjax puts it: {path}")
    return path


def stage() -> None:
    """build/site/_src: conf.py, static files, the landing page and the notebooks (badge image made local)."""
    shutil.rmtree(SRC, ignore_errors=True)
    (SRC / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "site" / "conf.py", SRC / "conf.py")
    shutil.copytree(ROOT / "site" / "_static", SRC / "_static")
    (SRC / "_static" / "mathjax").mkdir()
    shutil.copy(mathjax_file(), SRC / "_static" / "mathjax" / "tex-svg.js")
    (SRC / "assets").mkdir()
    shutil.copy(ROOT / "site" / "colab-badge.svg", SRC / "assets" / "colab-badge.svg")
    (SRC / "index.md").write_text(landing_page())
    for nb in notebooks():
        text = nb.read_text().replace(COLAB_BADGE, "../assets/colab-badge.svg")
        (SRC / "notebooks" / nb.name).write_text(text)


def build(jobs: str = "auto") -> float:
    """Stage and build; return the seconds it took. Warnings are errors: the build must be clean."""
    start = time.perf_counter()
    stage()
    shutil.rmtree(HTML, ignore_errors=True)
    env = {**os.environ, "BOOK_REPOSITORY": repository()}
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-j", jobs,
           "-d", str(DOCTREES), str(SRC), str(HTML)]
    subprocess.run(cmd, check=True, env=env, cwd=SITE)
    return time.perf_counter() - start


def size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    seconds = build()
    print(f"site: {HTML.relative_to(ROOT)}/index.html ({len(notebooks())} chapters, "
          f"{size_bytes(HTML) / 1e6:.1f} MB) built in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
