"""One JSON record per chapter run (results/NN_name.json), and the table made from them."""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path

from book_utils import env

REQUIRED = ("chapter", "mode", "data", "test_accuracy", "params", "model_bytes", "train_seconds")
MODES = ("smoke", "full")


def model_bytes(model) -> int:
    """Size in bytes of the model as it would ship: a .keras file without the optimizer's state."""
    import keras

    clone = type(model).from_config(model.get_config())  # same architecture, no optimizer
    clone.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        clone.save(path)
        return path.stat().st_size


def record(chapter: str, *, mode: str, data: str, test_accuracy: float, params: int,
           model_bytes: int, train_seconds: float, directory=None, **figures) -> Path:
    """Write results/<chapter>.json with the run's figures, the hardware and the date; return its path."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if not 0.0 <= float(test_accuracy) <= 1.0:
        raise ValueError(f"test_accuracy is a fraction between 0 and 1, not {test_accuracy!r}")
    import keras
    import tensorflow as tf

    entry = {
        "chapter": chapter, "mode": mode, "data": data,
        "test_accuracy": round(float(test_accuracy), 4), "params": int(params),
        "model_bytes": int(model_bytes), "train_seconds": round(float(train_seconds), 1),
        **_plain(figures),
        "hardware": env.hardware(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    directory = Path(directory) if directory else env.results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{chapter}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entry, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: readers never see half a file
    return path


def _plain(value):
    """Turn NumPy scalars and arrays into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def recorded_dir() -> Path:
    """The records of the book's own full runs: results/ of the checkout, or the copy inside the package
    (book_utils/recorded, built from results/; see pyproject.toml) where the package was installed alone."""
    root = env.repo_root()
    return root / "results" if root is not None else env.PACKAGE_DIR / "recorded"


def load_all(directory=None) -> list[dict]:
    """Every chapter record in a results folder, sorted by chapter.

    Without a folder: the records of env.results_dir(), and for each chapter that has none there, the
    book's recorded full run (recorded_dir()), so that a chapter opened alone still compares with the
    chapters before it. Those records say mode "full" and carry their own data, hardware and date.
    """
    if directory is None:
        own = {r["chapter"]: r for r in load_all(env.results_dir())}
        recorded = recorded_dir()
        book = {} if recorded.resolve() == env.results_dir().resolve() else {
            r["chapter"]: r for r in load_all(recorded)}
        return [{**book, **own}[chapter] for chapter in sorted({**book, **own})]
    directory = Path(directory)
    records = []
    for path in sorted(directory.glob("[0-9][0-9]_*.json")):
        entry = json.loads(path.read_text())
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; run its chapter again to rewrite it.")
        records.append(entry)
    return records


def table(records: list[dict]) -> str:
    """A Markdown table of the records: chapter, model, mode, data, accuracy, size, cost, latency, time, hardware, date.

    MACs and CPU latency come from the chapter-7 comparison, which measures every model in one run
    (so that the latencies compare), when it measured the recorded architecture (the same number of
    parameters), as a line under the table says; else from the chapter's own record, else they are left blank.
    """
    by_chapter = {r["chapter"]: r for r in records}
    measured = {}  # chapter -> MACs and latency measured by chapter 7 (its rows; others' are their own tables)
    comparer = None  # the record that measured them
    for r in records:
        for row in r.get("comparison") if isinstance(r.get("comparison"), list) else []:
            own = by_chapter.get(row.get("chapter")) if isinstance(row, dict) else None
            if own and "latency_ms" in row and row.get("params") == own["params"]:
                measured[own["chapter"]] = {k: row[k] for k in ("model", "macs", "latency_ms") if k in row}
                comparer = r
    lines = ["| chapter | model | mode | data | test accuracy | parameters | model size | MACs per image "
             "| CPU latency (batch 1) | epochs | training time | hardware | date |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in records:
        seen = measured.get(r["chapter"], {})  # chapter 7's measurement wins: all latencies from one run
        m = {"model": r.get("model") or seen.get("model", ""), "macs": seen.get("macs") or r.get("macs"),
             "latency_ms": seen.get("latency_ms") or r.get("latency_ms")}
        macs = f"{m['macs'] / 1e6:,.1f} M" if m.get("macs") else ""
        latency = f"{m['latency_ms']:.2f} ms" if m.get("latency_ms") else ""
        trained = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else ""  # 0: an earlier chapter's model
        lines.append(f"| {r['chapter']} | {m.get('model', '')} | {r['mode']} | {r['data']} "
                     f"| {100 * r['test_accuracy']:.2f}% | {r['params']:,} | {r['model_bytes'] / 1e6:.2f} MB "
                     f"| {macs} | {latency} | {r.get('epochs', '')} | {trained} "
                     f"| {r.get('hardware', '?')} | {r.get('date', '?')} |")
    if comparer is not None:  # the hardware column is where each chapter trained; say where these were timed
        timed = [c for c in by_chapter if c in measured]
        lines += ["", f"CPU latencies of {', '.join(timed)} were timed together by {comparer['chapter']}'s run on "
                      f"{comparer.get('hardware', '?')} ({comparer.get('date', '?')}); the other rows' latencies "
                      "come from their own runs, on the hardware in their row."]
    return "\n".join(lines)


def cat_dog_confusions(matrix, class_names) -> dict | None:
    """The book's question in two numbers: cats called dogs and dogs called cats (None without both classes)."""
    if not {"cat", "dog"} <= set(class_names):
        return None
    cat, dog = class_names.index("cat"), class_names.index("dog")
    return {"cat_as_dog": int(matrix[cat, dog]), "dog_as_cat": int(matrix[dog, cat]),
            "cats": int(matrix[cat].sum()), "dogs": int(matrix[dog].sum())}


# results/bench.json, written by tools/bench.py (`make bench`)

def load_bench(path=None) -> dict | None:
    """The bench record, or None when `make bench` has not been run."""
    path = Path(path) if path else env.results_dir() / "bench.json"
    return json.loads(path.read_text()) if path.exists() else None


def bench_table(bench: dict | None) -> str:
    """The measurements as Markdown: smoke times, latency and input pipeline (the full runs' times and
    accuracies are in the results table, made from their records)."""
    if not bench:
        return "_No benchmark yet: run `make bench`._"
    lat, pipe = bench["latency"], bench["input_pipeline"]
    lines = [f"Measured on {bench['hardware']} ({bench['date']}; TensorFlow {bench['versions']['tensorflow']}, "
             f"Keras {bench['versions']['keras']}). Latencies and throughputs are medians of {lat['repeats']} runs.",
             "",
             *([f"CPU instruction sets: {', '.join(lat['cpu']['isa'] or ['unknown'])} (8-bit dot product: "
                f"{'yes' if lat['cpu']['int8_dot_product'] else 'no'}); whether int8 beats float32 depends on them.",
                ""] if lat.get("cpu") else []),
             *([f"Input pipeline: {pipe['method']}.", ""] if pipe.get("method") else []),
             "| chapter | smoke run | smoke accuracy |",
             "|---|---:|---:|"]
    for s in sorted(bench.get("smoke", []), key=lambda r: r["chapter"]):
        lines.append(f"| {s['chapter']} | {_num(s.get('seconds'), '{:.0f} s') if not s.get('error') else 'failed'} "
                     f"| {_num(s.get('test_accuracy'), '{:.1%}')} |")
    lines += ["",
              "| measurement | value |", "|---|---:|",
              f"| CPU latency, TFLite float32, batch 1, 1 thread ({lat['model'].split(',')[0]}) "
              f"| {lat['float32_ms']:.2f} ms |",
              f"| CPU latency, TFLite int8 | {lat['int8_ms']:.2f} ms |",
              f"| int8 speed-up (float32 / int8) | {lat['int8_speedup']:.2f}x |",
              f"| input pipeline, naive loader | {pipe['naive_images_per_second']:,.0f} images/s |",
              f"| input pipeline, cache + shuffle + batch + parallel map + prefetch "
              f"| {pipe['pipeline_images_per_second']:,.0f} images/s |",
              f"| pipeline speed-up | {pipe['speedup']:.2f}x |"]
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return fmt.format(value) if value is not None else ""
