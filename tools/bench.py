"""Measure what the book reports and write results/bench.json (make bench).

    python tools/bench.py [--only 01 05] [--skip-smoke] [--repeats 5] [--out results/bench.json]

- smoke: wall time of each chapter's smoke run (papermill, as CI runs it) and the accuracy it reached;
- latency: CPU milliseconds per image (batch 1) of ResNet-20 as TensorFlow Lite float32 and int8,
  the median of `repeats` interleaved measurements, their ratio, and the CPU's instruction sets
  (whether int8 wins depends on 8-bit dot-product instructions: VNNI, Arm's dot product, AMX);
- input pipeline: steady-state images per second of the naive loader and of data.pipeline (chapter 11's
  method, measure.images_per_second: warm-up epoch untimed, median of one-epoch windows), and their ratio.

Every figure is a median or a ratio of repeated runs; the hardware and versions are recorded with them.
Smoke runs write under build/bench/, never over results/ or models/. No test asserts these times.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"


def smoke_times(only=None, repeats: int = 1) -> list[dict]:
    """Each chapter's smoke run through papermill: median wall seconds and the recorded accuracy."""
    import numpy as np
    from run_book import chapters, execute

    os.environ["BOOK_RESULTS_DIR"] = str(BUILD / "results")
    os.environ["BOOK_MODELS_DIR"] = str(BUILD / "models")
    os.environ.pop("BOOK_SMOKE", None)
    rows = []
    for notebook in chapters(only):
        seconds, error = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                execute(notebook, True, BUILD / "notebooks")
            except Exception as e:  # report the failure, keep measuring the others
                error = f"{type(e).__name__}: {str(e)[:300]}"
                break
            seconds.append(time.perf_counter() - start)
        record = BUILD / "results" / f"{notebook.stem}.json"
        accuracy = json.loads(record.read_text())["test_accuracy"] if record.exists() and not error else None
        rows.append({"chapter": notebook.stem, "seconds": float(np.median(seconds)) if seconds else None,
                     "runs": len(seconds), "test_accuracy": accuracy, **({"error": error} if error else {})})
        print(f"smoke {notebook.stem}: {rows[-1]['seconds'] or float('nan'):.0f} s", flush=True)
    return rows


def _resnet20():
    """Chapter 5's trained ResNet-20 when it exists, else a fresh one (latency does not depend on the weights)."""
    import keras

    from book_utils import architectures, env

    path = env.models_dir() / "05_resnet.keras"
    if path.exists():
        return keras.saving.load_model(path, safe_mode=True), f"{path.name} (trained)"
    return architectures.resnet_cifar(20), "ResNet-20, untrained (no models/05_resnet.keras)"


def latency(repeats: int) -> dict:
    """TFLite float32 vs int8 CPU latency of ResNet-20 (batch 1, one thread), medians of interleaved runs."""
    import numpy as np

    from book_utils import data, measure, tflite

    model, source = _resnet20()
    cifar = data.load("cifar10")
    files = {"float32": tflite.convert(model, "float32"),
             "int8": tflite.convert(model, "int8", representative=cifar.x_train[:200].astype("float32"))}
    calls = {k: tflite.forward_pass(f, threads=1) for k, f in files.items()}
    times = measure.rounds_ms(calls, repeats=50 * repeats, rounds=repeats)  # interleaved: a busy moment hits both
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"latency: float32 {med['float32']:.2f} ms, int8 {med['int8']:.2f} ms", flush=True)
    return {"model": source, "threads": 1, "repeats": repeats, "cpu": measure.instruction_sets(),
            "float32_ms": med["float32"], "int8_ms": med["int8"],
            "int8_speedup": med["float32"] / med["int8"], "float32_bytes": len(files["float32"]),
            "int8_bytes": len(files["int8"]), "all_ms": times}


def input_pipeline(repeats: int, images: int = 45000, batch_size: int = 128) -> dict:
    """Steady-state images per second of the naive loader and of data.pipeline over real CIFAR-10, with
    augmentation: chapter 11's pipelines (its 45,000 training images) and the chapter's method,
    measure.images_per_second (one epoch of warm-up, then `repeats` one-epoch windows; median)."""
    from book_utils import data, measure, models

    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, images, seed=0)
    pipelines = {"naive": measure.naive_dataset(x, y, batch_size, augment=models.augmentation(0)),
                 "data.pipeline": data.pipeline(x, y, batch_size=batch_size, training=True,
                                                augment=models.augmentation(0), classes=10)}
    rates = {k: measure.images_per_second(ds, repeats=repeats) for k, ds in pipelines.items()}
    print(f"pipeline: naive {rates['naive']:,.0f}, data.pipeline {rates['data.pipeline']:,.0f} images/s", flush=True)
    return {"images": len(x), "batch_size": batch_size, "repeats": repeats, "augmentation": True,
            "method": "steady state: one iterator over dataset.repeat(), one epoch of warm-up untimed, "
                      "median of one-epoch windows (measure.images_per_second)",
            "naive_images_per_second": rates["naive"], "pipeline_images_per_second": rates["data.pipeline"],
            "speedup": rates["data.pipeline"] / rates["naive"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="chapters to smoke-time, e.g. 01 03 (default: all)")
    parser.add_argument("--skip-smoke", action="store_true", help="skip the smoke runs (the slow part)")
    parser.add_argument("--smoke-repeats", type=int, default=1, help="smoke runs per chapter (median)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the latency and pipeline measurements")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    import book_utils  # noqa: F401  (quiet TensorFlow)
    import keras
    import tensorflow as tf

    from book_utils import env

    start = time.perf_counter()
    bench = {"hardware": env.hardware(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count(), "python": platform.python_version(),
             "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
             "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
             "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    bench["latency"] = latency(args.repeats)
    bench["input_pipeline"] = input_pipeline(args.repeats)
    bench["smoke"] = [] if args.skip_smoke else smoke_times(args.only, args.smoke_repeats)
    bench["bench_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bench, indent=2) + "\n")
    os.replace(tmp, out)
    from book_utils import results

    print()
    print(results.bench_table(bench))
    print(f"\nwrote {out} in {bench['bench_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
