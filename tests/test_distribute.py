"""Data-parallel training for real: MirroredStrategy over two logical CPUs, and two worker processes on 127.0.0.1.

Both run the book's unchanged training function (architectures + data.pipeline + compile_classifier +
train.fit) inside strategy.scope() on a few steps of real CIFAR-10, then compare the replicas' weights.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from book_utils import distribute

ROOT = Path(__file__).resolve().parent.parent

# The training both tests run: ResNet-8 at half width, 256 real photos, 2 epochs of 4 steps, 32 images per replica.
TRAINING = """
    import json, os, sys
    from pathlib import Path
    import numpy as np
    import book_utils
    from book_utils import architectures, data, distribute, models, train

    out = Path(sys.argv[1])
    {before}
    book_utils.setup(7)
    strategy = distribute.strategy({kind!r})
    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, 256, seed=7)
    with strategy.scope():
        model = architectures.resnet_cifar(8, x.shape[1:], width=0.5)
        initial = model.get_weights()
        train.compile_classifier(model, epochs=2, steps_per_epoch=4, learning_rate=0.05)
    ds = data.pipeline(x, y, batch_size=distribute.global_batch(32, strategy), training=True,
                       augment=models.augmentation(7), classes=10, seed=7)
    run = train.fit(model, ds, epochs=2, verbose=0)
    {after}
"""

# One process, two replicas: every variable is a MirroredVariable with one copy per logical CPU.
MIRRORED_AFTER = """
    copies = {w.path: [v.numpy() for v in strategy.experimental_local_results(w.value)] for w in model.weights}
    trainable = {w.path for w in model.trainable_weights}
    np.savez(out / "copies.npz", **{f"{p}|{i}": c for p, cs in copies.items() for i, c in enumerate(cs)})
    np.savez(out / "initial.npz", **{w.path: v for w, v in zip(model.weights, initial)})
    (out / "info.json").write_text(json.dumps({
        "describe": distribute.describe(strategy), "replicas": strategy.num_replicas_in_sync,
        "trainable": sorted(trainable), "loss": run.history["loss"],
        "devices": sorted({v.device for w in model.weights for v in strategy.experimental_local_results(w.value)})}))
"""

# Two processes: each saves its own weights; worker 0 is the chief.
WORKER_AFTER = """
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.savez(out / f"worker{index}.npz", **{w.path: w.numpy() for w in model.weights})
    np.savez(out / f"initial{index}.npz", **{w.path: v for w, v in zip(model.weights, initial)})
    (out / f"worker{index}.json").write_text(json.dumps({
        "describe": distribute.describe(strategy), "replicas": strategy.num_replicas_in_sync,
        "trainable": [w.path for w in model.trainable_weights], "loss": run.history["loss"]}))
"""


def script(tmp_path: Path, kind: str, before: str, after: str) -> Path:
    path = tmp_path / f"{kind}.py"
    body = TRAINING.format(kind=kind, before=before, after=textwrap.dedent(after).replace("\n", "\n    "))
    path.write_text(textwrap.dedent(body))
    return path


def test_mirrored_strategy_on_two_logical_cpus_keeps_the_replicas_identical(tmp_path):
    path = script(tmp_path, "mirrored", "distribute.split_cpu(2)", MIRRORED_AFTER)
    done = subprocess.run([sys.executable, str(path), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["replicas"] == 2 and info["describe"].startswith("MirroredStrategy")
    assert [d.rsplit(":", 2)[-2:] for d in info["devices"]] == [["CPU", "0"], ["CPU", "1"]]
    assert np.isfinite(info["loss"]).all()
    with np.load(tmp_path / "copies.npz") as f:
        copies = {k: f[k] for k in f.files}
    paths = sorted({k.split("|")[0] for k in copies})
    with np.load(tmp_path / "initial.npz") as f:
        initial = {k: f[k] for k in f.files}
    assert sorted(initial) == paths
    for p in paths:
        first, second = copies[f"{p}|0"], copies[f"{p}|1"]
        if p in info["trainable"]:
            # Gradients are all-reduced before every update: the copies are equal to the last bit.
            assert np.array_equal(first, second), p
        else:
            # Batch-norm running averages are NOT synchronised (BatchNormalization(synchronized=False) is
            # Keras's default): each replica averages its own half of the batch. Close, not equal.
            assert p.endswith(("moving_mean", "moving_variance")), p
            assert np.allclose(first, second, atol=0.1), p
    changed = sum(not np.array_equal(copies[f"{p}|0"], initial[p]) for p in paths)
    assert changed > len(paths) // 2, "training changed almost nothing"


@pytest.fixture
def isolated():
    if distribute.loopback_only_prefix() is None:
        pytest.skip("needs a private network namespace (Linux `unshare`): TensorFlow's gRPC server listens on "
                    "every interface, and this test opens nothing beyond loopback")


def test_two_worker_processes_on_loopback_end_with_identical_weights(tmp_path, isolated):
    path = script(tmp_path, "multiworker", "", WORKER_AFTER)
    run = distribute.run_local_workers(path, [tmp_path], n=2, timeout=100, cwd=ROOT)
    assert run.returncodes == [0, 0], "\n\n".join(log[-3000:] for log in run.logs)
    infos = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in (0, 1)]
    for i, info in enumerate(infos):
        assert info["replicas"] == 2, info  # one replica per worker, two in sync
        assert f"/task:{i}/" in info["describe"]
    assert infos[0]["loss"] == infos[1]["loss"]  # the loss is all-reduced too
    weights = []
    for i in (0, 1):
        with np.load(tmp_path / f"worker{i}.npz") as f:
            weights.append({k: f[k] for k in f.files})
    with np.load(tmp_path / "initial0.npz") as f:
        initial = {k: f[k] for k in f.files}
    assert sorted(weights[0]) == sorted(weights[1]) == sorted(initial)
    for p in initial:
        if p in infos[0]["trainable"]:
            assert np.array_equal(weights[0][p], weights[1][p]), p  # all-reduced gradients: equal to the last bit
        else:  # batch-norm running averages: each worker keeps its own (not synchronised)
            assert p.endswith(("moving_mean", "moving_variance")), p
            assert np.allclose(weights[0][p], weights[1][p], atol=0.1), p
    assert sum(not np.array_equal(weights[0][p], initial[p]) for p in initial) > len(initial) // 2


# Batch norm under MirroredStrategy: the replicas' moving statistics drift apart; recalibration and
# synchronized batch norm each make them one.
BATCH_NORM = """
    import json, sys
    from pathlib import Path
    import numpy as np
    import keras
    import book_utils
    from book_utils import architectures, data, distribute, train

    out = Path(sys.argv[1])
    distribute.split_cpu(2)
    book_utils.setup(3)
    strategy = distribute.strategy("mirrored")
    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, 256, seed=3)
    ds = data.pipeline(x, y, batch_size=64, training=True, classes=10, seed=3)
    with strategy.scope():
        model = architectures.resnet_cifar(8, x.shape[1:], width=0.5)
        train.compile_classifier(model, epochs=1, steps_per_epoch=4, learning_rate=0.05)
    model.fit(ds, epochs=1, verbose=0)
    found = {"trained": distribute.replica_divergence(model, strategy)}
    found["layers"] = train.recalibrate_batch_norm(model, x, batch_size=64)
    found["recalibrated"] = distribute.replica_divergence(model, strategy)
    first = train.batch_norms(model)[0]
    inputs = keras.Model(model.inputs, first.input)
    batches = [np.asarray(inputs(x[i:i + 64].astype("float32"), training=True)) for i in range(0, 256, 64)]
    found["mean_error"] = float(np.abs(np.mean([b.mean((0, 1, 2)) for b in batches], 0) - first.moving_mean).max())
    found["var_error"] = float(np.abs(np.mean([b.var((0, 1, 2)) for b in batches], 0) - first.moving_variance).max())
    with strategy.scope():
        synced = distribute.synchronized_batch_norm(model)
        train.compile_classifier(synced, epochs=1, steps_per_epoch=4, learning_rate=0.05)
    found["all_synchronized"] = all(bn.synchronized for bn in train.batch_norms(synced))
    found["copy_predicts_alike"] = float(np.abs(synced.predict(x[:32], verbose=0) - model.predict(x[:32], verbose=0)).max())
    synced.fit(ds, epochs=1, verbose=0)
    found["synchronized"] = distribute.replica_divergence(synced, strategy)
    (out / "bn.json").write_text(json.dumps(found))
"""


def test_batch_norm_statistics_drift_apart_and_both_remedies_make_them_one(tmp_path):
    path = tmp_path / "bn.py"
    path.write_text(textwrap.dedent(BATCH_NORM))
    done = subprocess.run([sys.executable, str(path), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "bn.json").read_text())
    print(found)
    assert found["trained"] > 1e-4  # each replica averaged its own half of every batch
    assert found["layers"] == 7 and found["recalibrated"] == 0.0
    assert found["mean_error"] < 1e-4 and found["var_error"] < 1e-3  # the average of the batch statistics
    assert found["all_synchronized"] and found["copy_predicts_alike"] < 1e-5
    assert found["synchronized"] == 0.0


MULTIWORKER_REDUCE = """
    import json, sys
    import tensorflow as tf
    from book_utils import distribute

    strategy = distribute._multi_worker_class()()  # what strategy("multiworker") makes; here one local worker
    run = lambda: strategy.run(lambda: (tf.constant(2.0), tf.constant([1.0, 3.0])))
    scalar, vector = run()
    found = {"type": type(strategy).__name__,
             "is_upstream": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
             "upstream_untouched": tf.distribute.MultiWorkerMirroredStrategy.reduce is tf.distribute.Strategy.reduce,
             "nested": [float(v) for v in strategy.reduce("MEAN", (scalar, vector), axis=0)],
             "scalar": float(strategy.reduce("SUM", scalar, axis=0)),
             "vector": float(strategy.reduce("MEAN", vector, axis=0))}
    try:
        tf.distribute.MultiWorkerMirroredStrategy.reduce(strategy, "MEAN", scalar, axis=0)
        found["upstream_scalar"] = "accepted"
    except Exception as e:
        found["upstream_scalar"] = type(e).__name__ + ": " + str(e)[:200]
    print(json.dumps(found))
"""


def test_multiworker_strategy_reduces_what_keras_passes_without_patching_tensorflow(tmp_path):
    path = tmp_path / "reduce.py"
    path.write_text(textwrap.dedent(MULTIWORKER_REDUCE))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}  # no cluster, no server
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["is_upstream"] and found["type"] == "MultiWorkerMirroredStrategy"
    assert found["upstream_untouched"]
    assert found["nested"] == [2.0, 2.0] and found["scalar"] == 2.0 and found["vector"] == 2.0
    assert "Invalid reduction dimension" in found["upstream_scalar"]  # what Keras's fit trips on upstream
