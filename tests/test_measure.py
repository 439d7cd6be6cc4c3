"""Input-pipeline throughput at steady state, against independent measurements; the CPU's instruction sets."""
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from book_utils import data, distribute, measure, models  # noqa: E402

BATCH, BATCHES, STEP, FIRST = 16, 8, 0.005, 0.08  # images per batch, batches per epoch, seconds


def _sleep(seconds):
    return lambda i: tf.py_function(lambda j: (time.sleep(seconds), j)[1], [i], tf.int64)


def _cached_pipeline():
    """An epoch of BATCHES batches: slow to make the first time (FIRST s a batch), then cached, and
    STEP s a batch of work after the cache, every epoch (like augmentation)."""
    ds = tf.data.Dataset.range(BATCHES).map(_sleep(FIRST)).cache().map(_sleep(STEP))
    return ds.map(lambda i: tf.zeros((BATCH, 4)) + tf.cast(i, tf.float32)).apply(
        tf.data.experimental.assert_cardinality(BATCHES))


def _manual_rate(ds, epochs: int = 3) -> float:
    """Independent measurement: one iterator over the repeated dataset, one untimed epoch, then the
    images of `epochs` whole epochs over their total time."""
    per_epoch = int(ds.cardinality())
    it = iter(ds.repeat())
    for _ in range(per_epoch):
        next(it)
    start = time.perf_counter()
    n = sum(int(tf.nest.flatten(next(it))[0].shape[0]) for _ in range(epochs * per_epoch))
    return n / (time.perf_counter() - start)


def test_steady_state_rate_excludes_the_cache_filling_epoch():
    ds = _cached_pipeline()
    rate = measure.images_per_second(ds, repeats=3)
    assert rate <= BATCH / STEP * 1.02  # no faster than the work it must do
    manual = _manual_rate(_cached_pipeline())
    assert manual / 4 < rate < manual * 4  # loose: two timings on a machine that may be busy
    # A fresh iterator over the first batches, the old method, times the cache being filled:
    start = time.perf_counter()
    first = sum(int(x.shape[0]) for x in _cached_pipeline().take(BATCHES)) / (time.perf_counter() - start)
    assert rate > 2.5 * first  # 17x on an idle machine: (FIRST + STEP) / STEP


def test_windows_and_warmup_can_be_given_and_bad_values_are_refused():
    ds = _cached_pipeline()
    assert measure.images_per_second(ds, batches=3, warmup_batches=BATCHES, repeats=1) <= BATCH / STEP * 1.02
    endless = tf.data.Dataset.from_tensors(tf.zeros((BATCH, 4))).repeat()
    with pytest.raises(ValueError, match="unknown or infinite"):
        measure.images_per_second(endless)
    assert measure.images_per_second(endless, batches=2, warmup_batches=0, repeats=1) > 0
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure.images_per_second(ds, repeats=0)


def test_real_pipeline_rate_matches_a_manual_measurement(cifar10):
    x, y = cifar10.x_train[:1024], cifar10.y_train[:1024]
    def tuned():
        return data.pipeline(x, y, batch_size=128, training=True, augment=models.augmentation(0), classes=10)

    rate = measure.images_per_second(tuned(), repeats=3)
    manual = _manual_rate(tuned())
    assert manual / 4 < rate < manual * 4  # loose: two timings on a machine that may be busy
    naive = measure.naive_dataset(x, y, 128)
    images, labels = next(iter(naive))
    assert images.shape == (128, 32, 32, 3) and labels.shape == (128, 10)
    # one home for the pipeline timing: chapter 11 and make bench both call measure's
    assert not hasattr(distribute, "images_per_second") and not hasattr(distribute, "naive_dataset")


def test_instruction_sets_name_the_int8_instructions():
    found = measure.instruction_sets()
    assert found["cpu"] and found["machine"]
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert set(found["isa"]) == {f for f in measure.ISA_FLAGS if f in flags}
    assert found["int8_dot_product"] == bool(flags & set(measure.INT8_DOT_FLAGS))


def test_bench_table_states_the_cpu_instructions_and_the_method():
    from book_utils import results

    bench = {"hardware": "x", "date": "d", "versions": {"tensorflow": "t", "keras": "k"},
             "latency": {"repeats": 5, "model": "m", "float32_ms": 2.0, "int8_ms": 1.0, "int8_speedup": 2.0,
                         "cpu": {"isa": ["avx2"], "int8_dot_product": False}},
             "input_pipeline": {"method": "steady state", "naive_images_per_second": 1000.0,
                                "pipeline_images_per_second": 2500.0, "speedup": 2.5},
             "smoke": [{"chapter": "02_b", "seconds": 16.1, "test_accuracy": 0.5821},
                       {"chapter": "01_a", "seconds": 10.4, "test_accuracy": 0.7674}]}
    table = results.bench_table(bench)
    assert table.index("| 01_a | 10 s | 76.7% |") < table.index("| 02_b | 16 s | 58.2% |")  # in chapter order
    assert "CPU instruction sets: avx2 (8-bit dot product: no)" in table and "Input pipeline: steady state." in table
    assert "| 2.50x |" in table


def test_make_bench_measures_the_pipelines_the_chapter_way(monkeypatch):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(root / "tools"))
    import bench

    calls = []
    real = measure.images_per_second
    monkeypatch.setattr(measure, "images_per_second", lambda ds, **kw: calls.append(kw) or real(ds, **kw))
    found = bench.input_pipeline(repeats=1, images=512, batch_size=128)
    assert calls == [{"repeats": 1}, {"repeats": 1}]  # the steady-state defaults: a warm-up epoch, epoch windows
    assert found["images"] == 512 and "steady state" in found["method"]
    assert found["speedup"] == pytest.approx(found["pipeline_images_per_second"] / found["naive_images_per_second"])
    assert "bench" in sys.modules


def test_chapter_11_times_its_pipelines_the_bench_way():
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "11_scaling.ipynb"
    code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    assert "measure.images_per_second(ds)" in code  # the steady-state defaults, as tools/bench.py calls it
    assert "measure.naive_dataset(" in code and "data.pipeline(" in code
    assert "distribute.images_per_second" not in code and "distribute.naive_dataset" not in code
