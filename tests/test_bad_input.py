"""Every bad input the book's helpers were tried with: each gets a clear error naming the problem and the fix.

This module is the single list (some cases also appear in other test files). Each case calls the real
function and checks the error's type and the words that tell the reader what is wrong and what to do.
"""
import re
from pathlib import Path

import numpy as np
import pytest

from book_utils import data, edgetpu, models, tflite, train
from book_utils.env import ParameterError

ROOT = Path(__file__).resolve().parent.parent


# ---- Images given to the predict helpers --------------------------------------------------------

@pytest.fixture(scope="module")
def tflite_model() -> bytes:
    """A tiny real model (8x8 colour images, 3 classes), converted to TensorFlow Lite."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    return tflite.convert(model)


GOOD = np.zeros((2, 8, 8, 3), np.uint8)

BAD_IMAGES = [  # (what is wrong, images, words the error must contain)
    ("grey images for a colour model", np.zeros((2, 8, 8), np.uint8), "shape"),
    ("grey images with a channel axis", np.zeros((2, 8, 8, 1), np.uint8), "shape"),
    ("wrong size", np.zeros((2, 16, 16, 3), np.uint8), "resize"),
    ("channels first", np.zeros((2, 3, 8, 8), np.uint8), "shape"),
    ("strings", np.full((1, 8, 8, 3), "x"), "numbers"),
    ("booleans", np.ones((1, 8, 8, 3), bool), "numbers"),
    ("negative pixels", np.full((1, 8, 8, 3), -1.0, np.float32), "0..255"),
    ("pixels above 255", np.full((1, 8, 8, 3), 300.0, np.float32), "0..255"),
]


def test_good_images_pass(tflite_model):
    assert tflite.predict(tflite_model, GOOD).shape == (2, 3)
    assert tflite.predict(tflite_model, GOOD[0]).shape == (1, 3)  # one image without the batch axis


@pytest.mark.parametrize("what, images, words", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_for_tflite_predict(tflite_model, what, images, words):
    with pytest.raises(data.ImageError, match=words):
        tflite.predict(tflite_model, images)


@pytest.fixture(scope="module")
def keras_model():
    import keras

    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation="softmax")])


def test_good_images_pass_the_keras_helper(keras_model):
    assert models.classify(keras_model, GOOD).shape == (2, 3)


@pytest.mark.parametrize("what, images, words", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_for_the_keras_helper(keras_model, what, images, words):
    with pytest.raises(data.ImageError, match=words):
        models.classify(keras_model, images)


# ---- Data sets and data files ---------------------------------------------------------------------

def test_unknown_data_set_name_lists_the_choices():
    with pytest.raises(data.DataError, match=r"Unknown data set 'cifar100'\. Choose one of: mnist, fashion_mnist, "
                                             r"cifar10, imagenette"):
        data.load("cifar100")


def test_a_corrupt_data_file_is_refused(tmp_path, data_dir):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    raw = bytearray((data_dir / "mnist.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    (folder / "mnist.npz").write_bytes(bytes(raw))
    with pytest.raises(data.ChecksumError, match="(?s)does not match any published checksum.*corrupt, truncated.*"
                                                 "Delete it and download it again"):
        data.load("mnist", data_dir=folder.parent, download=False)
    assert (folder / "mnist.npz").read_bytes() == bytes(raw), "a refused file is left untouched"


def test_a_truncated_data_file_is_refused(tmp_path, data_dir):
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    with open(data_dir / "cifar10.npz", "rb") as f:
        (folder / "cifar10.npz").write_bytes(f.read(1 << 20))  # the first MB only
    with pytest.raises(data.ChecksumError, match="corrupt, truncated"):
        data.load("cifar10", data_dir=folder.parent, download=False)


def test_a_file_the_book_does_not_know_cannot_be_verified(tmp_path):
    unknown = tmp_path / "my_data.npz"
    unknown.write_bytes(b"\x00" * 100)
    with pytest.raises(data.ChecksumError, match="not a file this book knows.*Known files"):
        data.verify(unknown)


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty Keras cache
    with pytest.raises(data.DataError, match="(?s)Looked in.*What to do: connect to the internet.*BOOK_DATA_DIR"):
        data.load("mnist", data_dir=tmp_path / "empty", download=False)


def test_mismatched_images_and_labels():
    with pytest.raises(ValueError, match="x has 4 images but y has 3 labels"):
        data.pipeline(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.int64))


# ---- Notebook parameters, directly and through papermill --------------------------------------------

@pytest.mark.parametrize("name, value, words", [
    ("DATASET", "cifar100", "one of 'cifar10', 'imagenette'"),
    ("OPTIMIZER", "adam", "one of 'sgd', 'adamw'"),
    ("EPOCHS", "5", "a whole number >= 1"),
    ("WIDTH", 0, "a scale factor above 0"),
    ("TRAIN_SIZE", 5, "None \\(all\\) or a whole number >= 10"),
])
def test_bad_parameter(name, value, words):
    with pytest.raises(ParameterError, match=f"Parameter {name} must be {words}.*-p {name}"):
        book_utils_check(name, value)


def book_utils_check(name, value):
    from book_utils import check_params
    check_params(**{name: value})


@pytest.mark.parametrize("parameters, words", [
    ({"EPOCHS": "five"}, "Parameter EPOCHS must be a whole number >= 1, but got 'five' \\(str\\)"),  # wrong type
    ({"PER_REPLICA_BATCH": 0}, "Parameter PER_REPLICA_BATCH must be a whole number >= 1, but got 0"),  # range
])
def test_bad_parameter_through_papermill(tmp_path, parameters, words):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ROOT / "notebooks" / "11_scaling.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"SMOKE": True, **parameters}, cwd=str(ROOT / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError"
    assert re.search(words, err.value.evalue), err.value.evalue
    assert "-p " in err.value.evalue  # and how to pass it right


# ---- Model files that are not what they claim -------------------------------------------------------

NOT_MODELS = [("text", b"not a model at all\n"), ("empty", b""), ("a zip (a .keras file)", b"PK\x03\x04" + bytes(60))]


@pytest.mark.parametrize("what, content", NOT_MODELS, ids=[c[0] for c in NOT_MODELS])
def test_a_tflite_file_that_is_not_one(tmp_path, what, content):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    with pytest.raises(tflite.TFLiteError, match="not a TensorFlow Lite model.*convert"):
        tflite.interpreter(path)
    with pytest.raises(tflite.TFLiteError, match="not a TensorFlow Lite model"):
        tflite.predict(content, GOOD)


@pytest.mark.parametrize("what, content", NOT_MODELS, ids=[c[0] for c in NOT_MODELS])
def test_an_edge_tpu_report_of_a_file_that_is_not_a_model(what, content):
    with pytest.raises(edgetpu.EdgeTPUError, match="empty|not a TensorFlow Lite model|is a Keras model"):
        edgetpu.report(content, name="model.tflite")


def test_a_tflite_path_that_does_not_exist(tmp_path):
    with pytest.raises(tflite.TFLiteError, match="is not a file"):
        tflite.interpreter(tmp_path / "missing.tflite")


def test_a_truncated_tflite_file(tflite_model):
    with pytest.raises(tflite.TFLiteError, match="damaged.*convert the Keras model again"):
        tflite.interpreter(tflite_model[: len(tflite_model) // 2])


def test_unknown_tflite_mode_and_int8_without_calibration_images():
    with pytest.raises(tflite.TFLiteError, match="mode must be one of float32, dynamic, float16, int8"):
        tflite.convert(None, "int4")
    with pytest.raises(tflite.TFLiteError, match="representative"):
        tflite.convert(None, "int8")


def test_a_keras_file_that_is_not_one(tmp_path):
    import keras

    path = tmp_path / "model.keras"
    path.write_bytes(b"not a model at all\n")
    with pytest.raises(ValueError, match="model.keras"):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("what, content", NOT_MODELS, ids=[c[0] for c in NOT_MODELS])
def test_a_core_ml_file_that_is_not_one(tmp_path, what, content):
    coreml = pytest.importorskip("book_utils.coreml")
    pytest.importorskip("coremltools")
    path = tmp_path / "model.mlmodel"
    path.write_bytes(content)
    with pytest.raises(coreml.CoreMLError, match="is not a Core ML model.*Pass a .mlpackage"):
        coreml.load(path)


def test_a_core_ml_package_folder_without_its_manifest(tmp_path):
    coreml = pytest.importorskip("book_utils.coreml")
    pytest.importorskip("coremltools")
    (tmp_path / "model.mlpackage").mkdir()
    with pytest.raises(coreml.CoreMLError, match="not a Core ML package"):
        coreml.load(tmp_path / "model.mlpackage")


# ---- Training options ---------------------------------------------------------------------------------

def test_unknown_optimizer():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adamw', not 'adam'"):
        train.compile_classifier(model, epochs=1, steps_per_epoch=1, optimizer="adam")


def test_validation_split_out_of_range():
    with pytest.raises(ValueError, match="n_val must be between 1 and 9"):
        data.train_val_split(np.zeros((10, 2)), np.zeros(10), 10)
