"""Execute the book's notebooks with papermill and print the results table.

    python tools/run_book.py [--smoke] [--only 01 02] [--save]
    python tools/run_book.py --readme      # only rewrite README's results table

Executed notebooks go to build/. Smoke runs record their results in build/results/ and save
their models in build/models/ (never over the committed full-run records in results/ or the
trained models in models/). --save copies the executed notebooks of a full run back into
notebooks/, which is how the committed outputs are made.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


def chapters(only=None) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if p.name[:2] in only or p.stem in only]
    if not found:
        sys.exit(f"No notebooks match {only}; chapters are: {[p.stem for p in NOTEBOOKS.glob('[0-9][0-9]_*.ipynb')]}")
    return found


def execute(notebook: Path, smoke: bool, output_dir: Path, parameters: dict | None = None) -> Path:
    """Run one notebook from the notebooks folder; return the executed copy's path."""
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / notebook.name
    params = dict(parameters or {})
    if smoke:
        params["SMOKE"] = True
    papermill.execute_notebook(str(notebook), str(output), parameters=params or None,
                               cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
    strip_machine_paths(output)
    return output


def strip_machine_paths(path: Path) -> None:
    """Drop papermill's record of the absolute input/output paths from the notebook metadata."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).get("papermill", {}).pop("input_path", None)
    nb.get("metadata", {}).get("papermill", {}).pop("output_path", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(table: str) -> None:
    """Rewrite README's results table and benchmark tables (between their markers) from results/."""
    from book_utils import results

    text = README.read_text()
    for start, end, content in ((START, END, table),
                                (BENCH_START, BENCH_END, results.bench_table(results.load_bench(ROOT / "results" / "bench.json")))):
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{content}\n{end}{tail}"
    README.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small real subsets, 1 epoch")
    parser.add_argument("--only", nargs="*", help="chapter numbers or names, e.g. 01 03")
    parser.add_argument("--save", action="store_true", help="copy full-run notebooks back into notebooks/")
    parser.add_argument("--readme", action="store_true", help="only regenerate README's results table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from book_utils import results

    if args.readme:
        update_readme(results.table(results.load_all(ROOT / "results")))
        return 0
    if args.save and args.smoke:
        parser.error("--save keeps full-run outputs only; drop --smoke")

    results_dir = BUILD / "results" if args.smoke else ROOT / "results"
    os.environ["BOOK_RESULTS_DIR"] = str(results_dir)
    if args.smoke:  # smoke models never replace a full run's trained ones in models/
        os.environ["BOOK_MODELS_DIR"] = str(BUILD / "models")
    os.environ.pop("BOOK_SMOKE", None)  # the mode comes from --smoke alone
    output_dir = BUILD / ("smoke" if args.smoke else "full")
    for notebook in chapters(args.only):
        start = time.perf_counter()
        print(f"{notebook.stem}: running ({'smoke' if args.smoke else 'full'} mode) ...", flush=True)
        executed = execute(notebook, args.smoke, output_dir)
        print(f"{notebook.stem}: done in {time.perf_counter() - start:.0f} s -> {executed.relative_to(ROOT)}")
        if args.save:
            shutil.copyfile(executed, notebook)

    table = results.table(results.load_all(results_dir))
    print()
    print(table)
    if not args.smoke:
        update_readme(results.table(results.load_all(ROOT / "results")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
