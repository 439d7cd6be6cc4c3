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


# ---- Full-int8 calibration: per-channel vs per-tensor, 16x8, the debugger, selective float, bytes -----

@pytest.fixture(scope="module")
def digits(mnist):
    """A 13k-parameter CNN trained for 2 epochs on 6,000 real MNIST digits (about 95% on the test set)."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = data.subset(mnist.x_train, mnist.y_train, 6000, 0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 3, activation="relu")(h))
    h = keras.layers.MaxPooling2D()(keras.layers.Conv2D(32, 3, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h)))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[..., None], y, epochs=2, batch_size=64, verbose=0)
    x_test = mnist.x_test[:500, ..., None]
    assert model.evaluate(x_test, mnist.y_test[:500], verbose=0)[1] > 0.85
    return model, x[:300, ..., None], x_test, model.predict(x_test, verbose=0).argmax(axis=1)


def _kernel_scales(flatbuffer) -> list[int]:
    """How many scales each int8 conv/dense kernel of a .tflite file carries (LiteRT's own view)."""
    it = tflite.interpreter(flatbuffer)
    return [len(d["quantization_parameters"]["scales"]) for d in it.get_tensor_details()
            if d["dtype"] == np.int8 and len(d["shape"]) in (2, 4) and d["shape"][0] in (10, 16, 32)
            and not d["name"].startswith(("serving", "StatefulPartitioned"))]


def test_per_channel_and_per_tensor_weights(digits):
    model, calibration, x, keras_top1 = digits
    channel = tflite.convert(model, "int8", representative=calibration)
    tensor = tflite.convert(model, "int8", representative=calibration, per_channel=False)
    assert sorted(_kernel_scales(channel)) == [10, 16, 32]
    assert sorted(_kernel_scales(tensor)) == [1, 1, 10]  # conv kernels: one scale; TF 2.21 keeps dense per channel
    for flatbuffer in (channel, tensor):
        assert (tflite.predict(flatbuffer, x).argmax(axis=1) == keras_top1).mean() > 0.95


def test_16x8_has_int16_activations_and_agrees_at_least_as_well(digits):
    model, calibration, x, keras_top1 = digits
    flatbuffer = tflite.convert(model, "int16x8", representative=calibration)
    it = tflite.interpreter(flatbuffer)
    assert it.get_input_details()[0]["dtype"] == np.int16 and it.get_output_details()[0]["dtype"] == np.int16
    agree16 = (tflite.predict(flatbuffer, x).argmax(axis=1) == keras_top1).mean()
    agree8 = (tflite.predict(tflite.convert(model, "int8", representative=calibration), x).argmax(axis=1)
              == keras_top1).mean()
    assert agree16 >= agree8 - 0.004 and agree16 > 0.98


def test_calibration_set_size_changes_the_activation_ranges(digits):
    model, calibration, _, _ = digits

    def input_and_output_scales(n):
        it = tflite.interpreter(tflite.convert(model, "int8", representative=calibration[:n]))
        return [d["quantization"][0] for d in it.get_tensor_details() if d["dtype"] == np.int8
                and len(d["shape"]) == 4 and d["shape"][0] == 1]

    few, many = input_and_output_scales(2), input_and_output_scales(300)
    assert len(few) == len(many) and few != many  # two digits see smaller activations than 300 do
    with pytest.raises(tflite.TFLiteError, match="non-empty"):
        tflite.convert(model, "int8", representative=calibration[:0])


def test_quantization_debugger_ranks_tensors_and_selected_ones_stay_float(digits, recwarn):
    model, calibration, x, keras_top1 = digits
    errors = tflite.layer_errors(model, calibration[:100])
    ranks = [e["rmse_per_step"] for e in errors]
    assert len(errors) >= 5 and ranks == sorted(ranks, reverse=True)
    by_op = {}
    for e in errors:
        by_op.setdefault(e["op"], []).append(e["rmse_per_step"])
    # Each op is fed the same quantized input in both runs, so an op that only moves values (pooling,
    # reshape) loses nothing, and one that computes loses about one rounding step (1/sqrt(12) = 0.29).
    assert all(0.1 < r < 2 for op in ("CONV_2D", "FULLY_CONNECTED") for r in by_op[op])
    assert all(r < 0.01 for op in ("MAX_POOL_2D", "RESHAPE") for r in by_op[op])
    worst = errors[0]["tensor"]
    mixed = tflite.convert(model, "int8", representative=calibration, float_nodes=[worst])
    ops = {d["op_name"] for d in tflite.interpreter(mixed)._get_ops_details()}
    assert "DEQUANTIZE" in ops  # int8 -> float32 in front of the op kept in float
    counts = tflite.op_counts(mixed)
    assert counts["float_ops"] >= 1 and counts["ops"]["DEQUANTIZE"] >= 1
    full = tflite.op_counts(tflite.convert(model, "int8", representative=calibration))
    assert full["float_ops"] == 0 and "DEQUANTIZE" not in full["ops"] and full["ops"]["CONV_2D"] == 2
    plain = tflite.op_counts(tflite.convert(model, "float32"))  # shape arithmetic (SHAPE, PACK...) is int32
    assert plain["float_ops"] == sum(plain["ops"][op] for op in ("CONV_2D", "MAX_POOL_2D", "RESHAPE",
                                                                 "FULLY_CONNECTED", "SOFTMAX")) == 7
    assert (tflite.predict(mixed, x).argmax(axis=1) == keras_top1).mean() > 0.95
    with pytest.raises(tflite.TFLiteError, match="int8"):
        tflite.convert(model, "float16", float_nodes=[worst])
    # the debugger's own use of tf.lite.Interpreter does not warn the reader about TensorFlow's code
    assert not [w for w in recwarn if "tf.lite.Interpreter is deprecated" in str(w.message)]


def test_size_breakdown_accounts_for_every_weight(digits):
    model, calibration, _, _ = digits
    kernels = sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel"))
    biases = sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("bias"))
    int8 = tflite.convert(model, "int8", representative=calibration)
    float32 = tflite.convert(model, "float32")
    q, f = tflite.size_breakdown(int8), tflite.size_breakdown(float32)
    assert q["total"] == len(int8) and f["total"] == len(float32)
    assert q["constants"]["int8"] == kernels and q["constants"]["int32"] >= 4 * biases  # biases stay 32-bit
    assert f["constants"]["float32"] == 4 * model.count_params() and f["quantization_parameters"] == 0
    assert q["quantization_parameters"] >= 12 * (16 + 32 + 10)  # a float32 scale + int64 zero point per channel
    assert q["graph_and_other"] > 0 and len(float32) / len(int8) < 4


# ---- Quantization-aware fine-tuning ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_mobile_block(cifar10):
    """A stem, one depthwise-separable block with a linear projection and a residual Add, pooling and a
    softmax layer, trained for 4 epochs on 3,000 real CIFAR-10 photos."""
    import keras

    from book_utils import blocks

    keras.utils.set_random_seed(0)
    x, y = data.subset(cifar10.x_train, cifar10.y_train, 3000, 0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    h = shortcut = blocks.conv_bn_act(h, 16, 3, 2, activation="relu6", name="stem")
    h = blocks.depthwise_bn_act(h, name="dw")
    h = keras.layers.BatchNormalization(name="pw_bn")(keras.layers.Conv2D(16, 1, use_bias=False, name="pw")(h))
    h = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Add(name="add")([shortcut, h]))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="probabilities")(h))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x.astype("float32"), y, epochs=4, batch_size=64, verbose=0)
    return model, x.astype("float32"), cifar10.x_test[:1000].astype("float32")


def test_quantization_aware_model_computes_like_the_int8_model(small_mobile_block):
    model, x, x_test = small_mobile_block
    simulated, tuned = tflite.quantization_aware(model, x[:300])
    stored = {layer.inner.name: layer.store_output for layer in simulated.layers if hasattr(layer, "inner")}
    # folded into the op after them: convs before batch norm, and batch norm before ReLU6
    assert not any(stored[name] for name in ("stem_conv", "stem_bn", "dw_conv", "dw_bn", "pw"))
    assert all(stored[name] for name in ("scale", "stem_relu6", "dw_relu6", "pw_bn", "add", "pool", "probabilities"))
    int8 = tflite.predict(tflite.convert(model, "int8", representative=x[:300]), x_test)
    as_float, as_simulated = model.predict(x_test, verbose=0), simulated.predict(x_test, verbose=0)
    # measured the other way round, by LiteRT running the real int8 model: the simulation is the closer
    assert np.abs(as_simulated - int8).mean() < 0.85 * np.abs(as_float - int8).mean()
    assert (as_simulated.argmax(1) == int8.argmax(1)).mean() >= (as_float.argmax(1) == int8.argmax(1)).mean()


def test_quantization_aware_training_moves_the_copy_only(small_mobile_block):
    import keras

    model, x, _ = small_mobile_block
    before = {w.path: w.numpy().copy() for w in model.weights}
    simulated, tuned = tflite.quantization_aware(model, x[:300])
    simulated.compile(keras.optimizers.SGD(1e-3, momentum=0.9), "categorical_crossentropy")
    simulated.fit(x, model.predict(x, verbose=0), epochs=1, batch_size=64, verbose=0)
    assert all(np.array_equal(w.numpy(), before[w.path]) for w in model.weights)  # the original is untouched
    kernels = {w.path: w.numpy() for w in tuned.weights}
    assert not np.allclose(kernels["pw/kernel"], before["pw/kernel"])  # the copy learnt
    assert np.array_equal(kernels["pw_bn/moving_mean"], before["pw_bn/moving_mean"])  # batch norm stayed frozen
    assert tflite.op_counts(tflite.convert(tuned, "int8", representative=x[:300]))["float_ops"] == 0


def test_quantization_aware_refuses_what_it_cannot_simulate(small_mobile_block):
    import keras

    model, x, _ = small_mobile_block
    with pytest.raises(tflite.TFLiteError, match="non-empty"):
        tflite.quantization_aware(model, x[:0])
    with pytest.raises(tflite.TFLiteError, match="Sequential"):
        tflite.quantization_aware(keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()]), x[:10])


def test_layer_by_layer_run_computes_what_the_model_computes(small_mobile_block):
    model, x, _ = small_mobile_block
    seen = {}

    def keep(layer, run):
        seen[layer.name] = run()
        return seen[layer.name]

    tflite._layer_by_layer(model, x[:250], keep, batch_size=100)  # batches of 100, 100 and 50
    assert list(seen) == [layer.name for layer in model.layers[1:]]  # every layer once, inputs before use
    np.testing.assert_allclose(seen["probabilities"], model.predict(x[:250], verbose=0), atol=1e-6)
    assert seen["add"].shape == (250, 16, 16, 16)


def test_bias_correction_cancels_the_mean_error_that_int8_adds(small_mobile_block):
    import keras

    model, x, x_test = small_mobile_block
    projection = keras.Model(model.input, model.get_layer("pw_bn").output)  # stem, depthwise, linear 1x1
    before = {w.path: w.numpy().copy() for w in projection.weights}
    corrected = tflite.bias_corrected(projection, x[:300])
    assert all(np.array_equal(w.numpy(), before[w.path]) for w in projection.weights)  # a copy is corrected
    moved = [w.path for w in corrected.weights if not np.array_equal(w.numpy(), before[w.path])]
    assert moved and all(path.endswith("/beta") for path in moved)
    float_out = projection.predict(x_test, verbose=0)

    def mean_error(m):  # per channel, of the real int8 model run by LiteRT, on photos that did not calibrate
        int8 = tflite.predict(tflite.convert(m, "int8", representative=x[:300]), x_test)
        return np.sqrt(np.mean((int8 - float_out).reshape(-1, float_out.shape[-1]).mean(axis=0) ** 2))

    assert mean_error(corrected) < 0.5 * mean_error(projection)
    with pytest.raises(tflite.TFLiteError, match="BatchNormalization"):
        tflite.bias_corrected(keras.Model(model.input, model.get_layer("scale").output), x[:10])


# ---- Activation ranges chosen by squared error instead of min/max ------------------------------------------

def test_mse_range_starts_from_the_values_and_clips_only_where_that_pays():
    rng = np.random.default_rng(0)
    flat = np.histogram(rng.uniform(-1, 1, 100_000), 2048, (-20, 20))[0]  # recorded range 20x the values'
    low, high = tflite._mse_range(-20.0, 20.0, flat)
    assert -1.02 <= low <= -0.98 and 0.98 <= high <= 1.02  # nothing rare to clip: the values' own span
    values = rng.laplace(0, 1, 1_000_000)  # a long tail, as a linear bottleneck's outputs have
    counts = np.histogram(values, 2048, (values.min(), values.max()))[0]
    low, high = tflite._mse_range(values.min(), values.max(), counts)

    def squared_error(lo, hi):  # on the values themselves, not the histogram
        step = (hi - lo) / 255
        return np.sum((values - (np.clip(np.round((values - lo) / step), 0, 255) * step + lo)) ** 2)

    assert 0.9 * values.min() < low < 0 < high < 0.9 * values.max()
    assert squared_error(low, high) < 0.9 * squared_error(values.min(), values.max())


def test_the_calibrator_gives_a_residual_adds_input_the_adds_range(small_mobile_block):
    model, x, _ = small_mobile_block
    ranges = tflite.activation_ranges(model, x[:300])
    projection = next(r for r in ranges if "pw_bn" in r["tensor"])
    add = next(r for r in ranges if r["tensor"].endswith("add_1/Add"))
    assert projection["calibrated"] == add["calibrated"]  # tensorflow/tensorflow#127842: the Add's output range
    assert projection["observed"][1] < 0.9 * projection["calibrated"][1]  # the projection's own values are narrower
    for r in ranges:
        (cal_low, cal_high), (low, high), (mse_low, mse_high) = r["calibrated"], r["observed"], r["mse"]
        assert min(cal_low, 0) <= low <= mse_low <= 0 <= mse_high <= high <= max(cal_high, 0)  # int8 keeps zero


def test_mse_ranges_narrow_activations_and_bring_int8_closer_to_float(small_mobile_block):
    import keras

    model, x, x_test = small_mobile_block
    minmax = tflite.convert(model, "int8", representative=x[:300])
    mse = tflite.convert_mse_ranges(model, x[:300])

    def activation_scales(flatbuffer):
        it = tflite.interpreter(flatbuffer)
        return {d["name"]: d["quantization"] for d in it.get_tensor_details()
                if d["dtype"] == np.int8 and len(d["shape"]) == 4 and d["shape"][0] == 1}

    before, after = activation_scales(minmax), activation_scales(mse)
    assert before.keys() == after.keys()
    inputs = {d["name"] for d in tflite.interpreter(minmax).get_input_details()}
    assert all(before[name] == after[name] for name in inputs)  # pixels keep their range
    assert all(after[name][0] <= before[name][0] * 1.0001 for name in before)  # narrowed, never widened
    assert sum(after[name][0] < 0.9 * before[name][0] for name in before) >= 2
    # on photos that did not calibrate, run by LiteRT: the answers, and a linear layer's outputs
    float_top1 = model.predict(x_test, verbose=0).argmax(axis=1)
    assert ((tflite.predict(mse, x_test).argmax(axis=1) == float_top1).mean()
            >= (tflite.predict(minmax, x_test).argmax(axis=1) == float_top1).mean())
    projection = keras.Model(model.input, model.get_layer("pw_bn").output)
    float_out = projection.predict(x_test, verbose=0)

    def rms_error(flatbuffer):
        return np.sqrt(np.mean((tflite.predict(flatbuffer, x_test) - float_out) ** 2))

    assert rms_error(tflite.convert_mse_ranges(projection, x[:300])) < rms_error(
        tflite.convert(projection, "int8", representative=x[:300]))


def test_mse_ranges_left_as_calibrated_give_the_converters_own_int8_model(small_mobile_block, monkeypatch):
    model, x, x_test = small_mobile_block
    monkeypatch.setattr(tflite, "_mse_range", lambda low, high, counts: (low, high))
    kept = tflite.convert_mse_ranges(model, x[:100])
    assert np.array_equal(tflite.predict(kept, x_test[:200]),
                          tflite.predict(tflite.convert(model, "int8", representative=x[:100]), x_test[:200]))
    with pytest.raises(tflite.TFLiteError, match="non-empty"):
        tflite.convert_mse_ranges(model, x[:0])
