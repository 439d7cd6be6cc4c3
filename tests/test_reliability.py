"""Reliability: a training run killed mid-way resumes where it stopped; the same seed gives the same run."""
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Trains the chapter-1 MLP on 2,000 real MNIST images with train.fit(backup_dir=...).
# After each epoch it writes the epoch number to <work>/progress and appends the epoch's training accuracy to
# <work>/accuracy; the result goes to <work>/result.json.
TRAINER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import book_utils
    from book_utils import data, models, train
    import keras

    work, epochs = Path(sys.argv[1]), int(sys.argv[2])
    book_utils.setup(7)
    mnist = data.load("mnist")
    x, y = data.subset(mnist.x_train, mnist.y_train, 2000, seed=7)

    class Progress(keras.callbacks.Callback):
        trained_here = 0

        def on_epoch_end(self, epoch, logs=None):
            Progress.trained_here += 1
            with open(work / "accuracy", "a") as f:
                f.write(f"{logs['accuracy']!r}\\n")
            (work / "progress").write_text(str(epoch + 1))
            time.sleep(0.5)  # room for the test to interrupt between epochs

    model = models.build_mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    run = train.fit(model, x, y, epochs=epochs, batch_size=64, backup_dir=work / "backup",
                    callbacks=[Progress()], verbose=0)
    accuracy = model.evaluate(mnist.x_test, mnist.y_test, verbose=0)[1]
    (work / "result.json").write_text(json.dumps({"epochs_trained_here": Progress.trained_here, "epochs_run": run.epochs,
                                                  "seconds": run.epoch_seconds, "history": run.history,
                                                  "accuracy": accuracy}))
""")


def start(work: Path, epochs: int) -> subprocess.Popen:
    script = work / "trainer.py"
    script.write_text(TRAINER)
    return subprocess.Popen([sys.executable, str(script), str(work), str(epochs)], cwd=ROOT)


def test_training_killed_with_a_signal_resumes_from_its_last_epoch(tmp_path):
    epochs = 6
    work = tmp_path / "interrupted"
    work.mkdir()
    process = start(work, epochs)
    deadline = time.time() + 240
    while not (work / "progress").exists() or int((work / "progress").read_text() or 0) < 2:
        assert process.poll() is None, "the trainer ended before it could be interrupted"
        assert time.time() < deadline, "the trainer made no progress"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before_kill = int((work / "progress").read_text())
    assert 2 <= done_before_kill < epochs and not (work / "result.json").exists()

    resumed = start(work, epochs)  # same command, same backup folder
    assert resumed.wait(timeout=300) == 0
    result = json.loads((work / "result.json").read_text())
    # Only the remaining epochs were trained, and the run ended at the same epoch count.
    assert result["epochs_trained_here"] == epochs - done_before_kill
    assert int((work / "progress").read_text()) == epochs
    # The resumed run reports every epoch, those the killed process trained first.
    logged = [float(line) for line in (work / "accuracy").read_text().split()]
    assert len(logged) == epochs and result["epochs_run"] == epochs and len(result["seconds"]) == epochs
    assert result["history"]["accuracy"] == pytest.approx(logged, abs=1e-6)

    straight = tmp_path / "straight"
    straight.mkdir()
    assert start(straight, epochs).wait(timeout=300) == 0
    uninterrupted = json.loads((straight / "result.json").read_text())
    assert uninterrupted["epochs_run"] == uninterrupted["epochs_trained_here"] == epochs
    assert result["accuracy"] == pytest.approx(uninterrupted["accuracy"], abs=0.03)
    assert result["accuracy"] > 0.8


def smoke_run(seed: int, tmp_path: Path, tag: str, monkeypatch) -> dict:
    import papermill

    monkeypatch.setenv("BOOK_RESULTS_DIR", str(tmp_path / tag))  # the kernel inherits it
    papermill.execute_notebook(str(ROOT / "notebooks" / "01_mnist_mlp.ipynb"), str(tmp_path / f"{tag}.ipynb"),
                               parameters={"SMOKE": True, "SEED": seed}, cwd=str(ROOT / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    return json.loads((tmp_path / tag / "01_mnist_mlp.json").read_text())


def test_same_seed_same_result_and_another_seed_differs(tmp_path, monkeypatch):
    first, second, other = (smoke_run(s, tmp_path, t, monkeypatch) for s, t in ((42, "a"), (42, "b"), (7, "c")))
    keys = ("test_accuracy", "final_val_accuracy", "most_confused")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["test_accuracy"] != other["test_accuracy"]
