"""TFLite conversion and the LiteRT helpers: sizes, agreement with Keras, static shapes, clear errors."""
import numpy as np
import pytest

from book_utils import data, models, tflite, train


@pytest.fixture(scope="module")
def trained_cnn(mnist):
    x, y = data.subset(mnist.x_train, mnist.y_train, 2000, 0)
    model = models.build_small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    train.fit(model, x[..., None], y, epochs=2, batch_size=64, verbose=0)
    return model, x[:300, ..., None], mnist.x_test[:300, ..., None]


def test_every_mode_converts_and_agrees_with_keras(trained_cnn):
    model, calibration, x = trained_cnn
    keras_top1 = model.predict(x, verbose=0).argmax(axis=1)
    sizes = {}
    for mode in tflite.MODES:
        flatbuffer = tflite.convert(model, mode, representative=calibration)
        sizes[mode] = len(flatbuffer)
        agreement = (tflite.predict(flatbuffer, x).argmax(axis=1) == keras_top1).mean()
        assert agreement >= (0.99 if mode in ("float32", "float16") else 0.9), (mode, agreement)
    assert sizes["float32"] / sizes["int8"] > 3 and sizes["float32"] / sizes["float16"] > 1.8


def test_int8_model_has_int8_input_and_a_static_batch_when_asked(trained_cnn):
    model, calibration, _ = trained_cnn
    it = tflite.interpreter(tflite.convert(model, "int8", representative=calibration, batch_size=1))
    detail = it.get_input_details()[0]
    assert detail["dtype"] == np.int8 and list(detail["shape_signature"]) == [1, 28, 28, 1]
    assert tflite.latency_ms(it_bytes := tflite.convert(model, "float32"), repeats=3, warmup=1) > 0
    assert it_bytes[4:8] == b"TFL3"


def test_bad_inputs_get_clear_errors(trained_cnn, tmp_path):
    model, _, x = trained_cnn
    flatbuffer = tflite.convert(model, "float32")
    with pytest.raises(data.ImageError, match="shape \\(28, 28, 1\\)"):
        tflite.predict(flatbuffer, x[:, :20])
    with pytest.raises(data.ImageError, match="0..255"):
        tflite.predict(flatbuffer, x.astype("float32") - 300)
    with pytest.raises(tflite.TFLiteError, match="not a TensorFlow Lite model"):
        tflite.predict(b"PK\x03\x04 a zip, not a model", x)
    with pytest.raises(tflite.TFLiteError, match="is not a file"):
        tflite.interpreter(tmp_path / "missing.tflite")
    with pytest.raises(tflite.TFLiteError, match="representative"):
        tflite.convert(model, "int8")
    with pytest.raises(tflite.TFLiteError, match="mode must be one of"):
        tflite.convert(model, "int4")


def test_earlier_model_loads_a_saved_model_or_trains_a_stand_in(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_MODELS_DIR", str(tmp_path))
    model, source, seconds = train.earlier_model("missing.keras", models.build_small_cnn, mnist.x_train,
                                                  mnist.y_train, epochs=1, train_size=200, optimizer="adamw",
                                                  learning_rate=1e-3)
    assert source.startswith("stand-in for missing.keras") and seconds > 0 and model.input_shape == (None, 28, 28, 1)
    model.save(tmp_path / "saved.keras")
    again, source, seconds = train.earlier_model("saved.keras", models.build_small_cnn, mnist.x_train,
                                                  mnist.y_train, epochs=1)
    assert "trained in its chapter" in source and seconds == 0 and again.count_params() == model.count_params()
