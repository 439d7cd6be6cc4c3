"""Results records: what they hold, how they are checked, and the table made from them."""
import json

import pytest

from book_utils import env, models, results


def test_record_writes_every_required_field_with_hardware_and_date(tmp_path):
    path = results.record("01_mnist_mlp", mode="smoke", data="MNIST test", test_accuracy=0.9123456,
                          params=10, model_bytes=2000, train_seconds=1.234, directory=tmp_path, epochs=3)
    entry = json.loads(path.read_text())
    for key in results.REQUIRED + ("hardware", "date", "versions", "epochs"):
        assert key in entry
    assert entry["test_accuracy"] == 0.9123 and entry["epochs"] == 3
    assert "cores" in entry["hardware"]
    assert not list(tmp_path.glob("*.tmp"))


def test_record_refuses_an_unknown_mode_or_a_percentage(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        results.record("x", mode="quick", data="d", test_accuracy=0.5, params=1, model_bytes=1,
                       train_seconds=1, directory=tmp_path)
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        results.record("x", mode="full", data="d", test_accuracy=93.0, params=1, model_bytes=1,
                       train_seconds=1, directory=tmp_path)


def test_table_lists_the_records_in_chapter_order(tmp_path):
    for chapter, acc in (("02_b", 0.5), ("01_a", 0.25)):
        results.record(chapter, mode="full", data="some data", test_accuracy=acc, params=1234,
                       model_bytes=5_000_000, train_seconds=60, epochs=12, directory=tmp_path)
    results.record("08_c", mode="full", data="some data", test_accuracy=0.5, params=1234,  # trains nothing
                   model_bytes=5_000_000, train_seconds=0, directory=tmp_path)
    records = results.load_all(tmp_path)
    assert [r["chapter"] for r in records] == ["01_a", "02_b", "08_c"]
    text = results.table(records)
    assert "| 01_a |  | full | some data | 25.00% | 1,234 | 5.00 MB |  |  | 12 | 60 s |" in text
    assert "| 08_c |  | full | some data | 50.00% | 1,234 | 5.00 MB |  |  |  |  |" in text  # not "0 s"


def test_table_takes_macs_and_latency_from_the_comparison_run(tmp_path):
    results.record("05_r", mode="full", data="d", test_accuracy=0.9, params=10, model_bytes=100,
                   train_seconds=1, model="ResNet", macs=40_600_000, latency_ms=9.0, directory=tmp_path)
    results.record("07_e", mode="full", data="d", test_accuracy=0.8, params=10, model_bytes=100,
                   train_seconds=1, model="EffNet", macs=30_000_000, directory=tmp_path,
                   comparison=[{"chapter": "05_r", "params": 10, "latency_ms": 2.5},
                               {"chapter": "07_e", "params": 10, "latency_ms": 3.25},
                               {"chapter": "03_c", "params": 99, "model": "old CNN", "macs": 5e6, "latency_ms": 1.0}])
    results.record("03_c", mode="full", data="d", test_accuracy=0.7, params=12, model_bytes=100,
                   train_seconds=1, model="new CNN", directory=tmp_path)
    text = results.table(results.load_all(tmp_path))
    assert "| 05_r | ResNet | full | d | 90.00% | 10 | 0.00 MB | 40.6 M | 2.50 ms |  | 1 s |" in text
    assert "| 07_e | EffNet | full | d | 80.00% | 10 | 0.00 MB | 30.0 M | 3.25 ms |  | 1 s |" in text
    # a comparison row of another architecture (the chapter's network changed since) lends it nothing
    assert "| 03_c | new CNN | full | d | 70.00% | 12 | 0.00 MB |  |  |  | 1 s |" in text
    # the hardware column says where each chapter trained; a line says where the shared latencies were timed
    assert (f"CPU latencies of 05_r, 07_e were timed together by 07_e's run on {env.hardware()} "
            f"({results.load_all(tmp_path)[-1]['date']})") in text


def test_load_all_rejects_a_record_missing_fields(tmp_path):
    (tmp_path / "01_a.json").write_text(json.dumps({"chapter": "01_a"}))
    with pytest.raises(ValueError, match="lacks mode"):
        results.load_all(tmp_path)


def test_model_bytes_counts_the_weights_but_not_the_optimizer():
    import numpy as np

    model = models.build_small_cnn()
    untrained = results.model_bytes(model)
    assert model.count_params() * 4 < untrained < model.count_params() * 4 * 1.2
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 28, 28, 1)), np.zeros(4), verbose=0)
    assert results.model_bytes(model) == pytest.approx(untrained, rel=0.01)


def test_cpu_features_name_the_vector_instructions_that_decide_speed():
    from book_utils import env

    flags = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"
    assert env.cpu_features(flags) == ["AVX2", "AVX-512", "VNNI", "BF16"]
    assert env.cpu_features("fpu sse2 avx avx2 avx_vnni") == ["AVX2", "VNNI"]
    assert env.cpu_features("fpu sse2") == []
    assert env.cpu_features("fp asimd asimddp") == ["NEON dot product"]
