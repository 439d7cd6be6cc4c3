"""Data-parallel training for real: MirroredStrategy over two logical CPUs, and two worker processes on 127.0.0.1.

Both run the book's unchanged training function (architectures + data.pipeline + compile_classifier +
train.fit) inside strategy.scope() on a few steps of real CIFAR-10, then compare the replicas' weights.
"""
import json
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
