"""Safety: nothing from the network or the disk is trusted unverified, and checkpoints are never half-written.

- downloads are checked against published hashes (every get_file call passes one);
- saved Keras models load in safe mode (no call anywhere turns it off; a Lambda layer is refused);
- no pickle is read by the package (np.load(..., allow_pickle=True), pickle.load and friends);
- a save interrupted half-way never leaves a broken checkpoint behind.
"""
import ast
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = sorted((ROOT / "book_utils").glob("*.py"))
TOOLS = sorted((ROOT / "tools").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_code(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


SOURCES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in PACKAGE + TOOLS}
SOURCES.update({p.relative_to(ROOT).as_posix(): notebook_code(p) for p in NOTEBOOKS})


def calls(source: str, name: str):
    """Every call whose function is `name` or ends in `.name`, as ast.Call nodes."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                yield node


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


# ---- Downloads --------------------------------------------------------------------------------------

def test_every_download_is_checked_against_a_published_hash():
    found = 0
    for where, source in SOURCES.items():
        for node in calls(source, "get_file"):
            found += 1
            assert keyword(node, "file_hash") is not None, f"{where}:{node.lineno}: get_file without file_hash"
        for bare in ("urlopen", "urlretrieve"):
            assert not list(calls(source, bare)), f"{where} downloads with {bare}, unverified"
    assert found >= 3  # MNIST, Fashion-MNIST, Imagenette


def test_a_tampered_download_is_refused(tmp_path, data_dir):
    from book_utils import data

    copy = tmp_path / "mnist.npz"
    copy.write_bytes((data_dir / copy.name).read_bytes() + b"\x00")
    with pytest.raises(data.ChecksumError):
        data.verify(copy)


# ---- Keras models load in safe mode --------------------------------------------------------------------

def test_every_load_model_call_keeps_safe_mode_on():
    found = 0
    for where, source in SOURCES.items():
        for node in calls(source, "load_model"):
            found += 1
            safe = keyword(node, "safe_mode")
            assert safe is None or (isinstance(safe, ast.Constant) and safe.value is True), \
                f"{where}:{node.lineno}: load_model with safe_mode={ast.unparse(safe)}"
        assert "enable_unsafe_deserialization" not in source, where
    assert found >= 5


def test_a_keras_file_with_a_lambda_layer_is_refused_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="(?s)Lambda.*safe_mode"):
        keras.saving.load_model(path)  # safe_mode defaults to True
    with pytest.raises(ValueError, match="(?s)Lambda.*safe_mode"):
        keras.saving.load_model(path, safe_mode=True)


# ---- No pickle -------------------------------------------------------------------------------------------

PICKLE = re.compile(r"allow_pickle\s*=\s*True|\bpickle\.loads?\(|\bcPickle\b|\bdill\.|\bjoblib\.load|"
                    r"\btorch\.load\(|\bpd\.read_pickle|\bshelve\.open")


def test_the_package_reads_no_pickle():
    offenders = [f"{where}: {m.group(0)}" for where, source in SOURCES.items() for m in PICKLE.finditer(source)]
    assert not offenders, offenders
    for where, source in SOURCES.items():
        for node in calls(source, "load"):  # np.load must not be told to unpickle, whatever its default
            allow = keyword(node, "allow_pickle")
            assert allow is None or (isinstance(allow, ast.Constant) and allow.value is False), f"{where}:{node.lineno}"


# ---- Checkpoints --------------------------------------------------------------------------------------------

def tiny_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Crash(RuntimeError):
    pass


@pytest.fixture
def crash_mid_save(monkeypatch):
    """Make the next .keras save write part of its zip and then die, as a killed process would."""
    from keras.src.saving import saving_lib

    def half_written(model, fileobj, weights_format):
        fileobj.write(b"PK\x03\x04" + bytes(100))
        raise Crash("killed in the middle of a save")

    return lambda: monkeypatch.setattr(saving_lib, "_save_model_to_fileobj", half_written)


def fit_with(callback, epochs=1):
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 3
    model = tiny_model()
    model.fit(x, y, epochs=epochs, callbacks=[callback], verbose=0)
    return model


def test_keras_model_checkpoint_writes_in_place_so_a_killed_save_loses_the_checkpoint(tmp_path, crash_mid_save):
    import keras

    path = tmp_path / "best.keras"
    fit_with(keras.callbacks.ModelCheckpoint(str(path)))
    keras.saving.load_model(path)  # a good checkpoint
    crash_mid_save()
    with pytest.raises(Crash):
        fit_with(keras.callbacks.ModelCheckpoint(str(path)))
    with pytest.raises(Exception):
        keras.saving.load_model(path)  # half-written, and the good one is gone


def test_atomic_checkpoint_is_never_half_written(tmp_path, crash_mid_save):
    import keras
    from book_utils.train import AtomicModelCheckpoint

    path = tmp_path / "best.keras"
    first = fit_with(AtomicModelCheckpoint(path))
    crash_mid_save()
    with pytest.raises(Crash):
        fit_with(AtomicModelCheckpoint(path))
    kept = keras.saving.load_model(path)  # still the first run's checkpoint, whole
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), first.get_weights()))


def test_atomic_checkpoint_keeps_the_best_and_leaves_nothing_behind(tmp_path):
    import keras
    from book_utils.train import AtomicModelCheckpoint

    path = tmp_path / "best.keras"
    model = fit_with(AtomicModelCheckpoint(path, monitor="loss", save_best_only=True), epochs=3)
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]
    assert len(keras.saving.load_model(path).get_weights()) == len(model.get_weights())


def test_backup_with_a_spare_copy_survives_a_half_written_backup(tmp_path):
    """BackupAndRestore also writes in place; double_checkpoint=True keeps the previous epoch to fall back on."""
    import keras

    backup = tmp_path / "backup"
    fit_with(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=False), epochs=2)
    latest = backup / "latest.weights.h5"
    half = latest.read_bytes()[:100]
    latest.write_bytes(half)  # a save killed half-way
    fit_with(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True), epochs=3)  # resumes
    single = tmp_path / "single"  # the same half-written backup without the spare copy (Keras's default)
    single.mkdir()
    (single / latest.name).write_bytes(half)
    with pytest.raises(OSError):
        fit_with(keras.callbacks.BackupAndRestore(str(single)), epochs=2)


def test_train_fit_keeps_the_last_good_checkpoint_when_a_save_is_killed(tmp_path, crash_mid_save):
    import keras
    from book_utils import train

    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 3
    path = tmp_path / "best.keras"
    first = tiny_model()
    train.fit(first, x, y, epochs=1, checkpoint=path, backup_dir=tmp_path / "backup", verbose=0)
    crash_mid_save()
    with pytest.raises(Crash):
        train.fit(tiny_model(), x, y, epochs=1, checkpoint=path, verbose=0)
    kept = keras.saving.load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), first.get_weights()))
