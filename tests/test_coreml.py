"""Core ML helpers on Linux: the spec checks, the weights against Keras, dequantized weights back into
Keras, clear errors, and the custom-layer conversion with and without its registration."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("coremltools")

from book_utils import coreml, models  # noqa: E402

LABELS = [str(d) for d in range(10)]
ABOUT = {"author": "test", "license": "MIT", "version": "2.0"}


@pytest.fixture(scope="module")
def cnn_package(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = models.build_small_cnn()
    path = tmp_path_factory.mktemp("coreml") / "cnn.mlpackage"
    coreml.convert(model, LABELS, description="digits", target="iOS18", **ABOUT).save(str(path))
    return model, path


@pytest.fixture(scope="module")
def bn_model():
    """Conv -> BN -> ReLU and a depthwise conv -> BN -> pooling, with BN statistics far from the defaults."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])
    return model


def test_spec_checks_pass_and_report_what_they_checked(cnn_package):
    _, path = cnn_package
    found = coreml.verify_spec(path, image_size=(28, 28), grayscale=True, class_names=LABELS,
                               metadata={**ABOUT, "short_description": "digits"})
    assert found["format"] == "mlProgram" and "28x28 GRAYSCALE" in found["input"]
    assert found["labels"] == LABELS and found["metadata"]["author"] == "test"
    assert set(found["outputs"]) == {"classLabel", "classLabel_probs"} and all(found["descriptions"].values())


def test_spec_checks_catch_mismatches(cnn_package):
    _, path = cnn_package
    with pytest.raises(coreml.CoreMLError, match="RGB"):
        coreml.verify_spec(path, image_size=(28, 28), grayscale=False, class_names=LABELS)
    with pytest.raises(coreml.CoreMLError, match="32x32"):
        coreml.verify_spec(path, image_size=(32, 32), grayscale=True, class_names=LABELS)
    with pytest.raises(coreml.CoreMLError, match="class labels"):
        coreml.verify_spec(path, image_size=(28, 28), grayscale=True, class_names=LABELS[::-1])
    with pytest.raises(coreml.CoreMLError, match="metadata author"):
        coreml.verify_spec(path, image_size=(28, 28), grayscale=True, class_names=LABELS, metadata={"author": "x"})


def test_neural_network_format_keeps_image_input_and_labels(tmp_path):
    model = models.build_small_cnn()
    path = tmp_path / "cnn.mlmodel"
    coreml.convert(model, LABELS, neural_network=True, **ABOUT).save(str(path))
    found = coreml.verify_spec(path, image_size=(28, 28), grayscale=True, class_names=LABELS, metadata=ABOUT)
    assert found["format"] == "neuralNetworkClassifier"


def test_weights_equal_keras_bit_for_bit(cnn_package):
    model, path = cnn_package
    check = coreml.compare_weights(model, path)
    assert check["bit_exact"] and check["layers"] == 5 and check["batch_norms_folded"] == 0


def test_folded_batch_norm_weights_match_and_round_trip(bn_model, tmp_path):
    path = tmp_path / "bn.mlpackage"
    coreml.convert(bn_model, LABELS).save(str(path))
    check = coreml.compare_weights(bn_model, path)
    # The converter folds the first BN into its conv; the second stays separate ops (a transpose sits
    # between the depthwise conv and it), and the pairing notices which is which.
    assert check["batch_norms_folded"] == 1 and check["max_abs_difference"] < 1e-5
    x = np.random.default_rng(2).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    rebuilt = coreml.load_into_keras(bn_model, path)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), bn_model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("variant", ["linear8", "linear4", "palette4"])
def test_dequantized_weights_round_trip_into_keras(cnn_package, variant, tmp_path):
    model, path = cnn_package
    compressed = coreml.quantize(coreml.load(path), variant)
    qpath = tmp_path / f"{variant}.mlpackage"
    compressed.save(str(qpath))
    assert coreml.file_bytes(qpath) < coreml.file_bytes(path) / 3
    stored = coreml.weights_from_mlpackage(qpath)
    assert any(w["stored_as"].startswith("constexpr_") for w in stored)
    rebuilt = coreml.load_into_keras(model, qpath)
    dense = rebuilt.get_layer("dense").kernel.numpy()
    expected = next(w["weight"] for w in stored if w["weight"].shape == dense.T.shape)
    np.testing.assert_array_equal(dense, expected.T)  # the clone holds exactly the dequantized weights
    original = model.get_layer("dense").kernel.numpy()
    assert 0 < np.abs(dense - original).max() < 0.2 * np.abs(original).max()
    if variant == "palette4":
        assert len(np.unique(dense)) <= 16


def test_kmeans_lut_is_a_good_table():
    w = np.random.default_rng(3).normal(size=5000).astype(np.float32)
    lut, indices = coreml.kmeans_lut(w, 3)
    assert len(lut) == 8 and indices.min() >= 0 and indices.max() < 8
    error = np.sqrt(np.mean((lut[indices] - w) ** 2))
    step = (w.max() - w.min()) / 7
    assert error < step / np.sqrt(12)  # better than an even grid over the range


def test_not_a_core_ml_file_gets_a_clear_error(tmp_path):
    junk = tmp_path / "model.mlmodel"
    junk.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(coreml.CoreMLError, match="not a Core ML model"):
        coreml.load(junk)
    with pytest.raises(coreml.CoreMLError, match="does not exist"):
        coreml.verify_spec(tmp_path / "missing.mlpackage", image_size=(28, 28), grayscale=True, class_names=LABELS)
    (tmp_path / "folder.mlpackage").mkdir()
    with pytest.raises(coreml.CoreMLError, match="not a Core ML package"):
        coreml.load(tmp_path / "folder.mlpackage")
    with pytest.raises(coreml.CoreMLError, match="quantization must be one of"):
        coreml.quantize(None, "int3")


def test_sequential_models_convert_once_given_output_names(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert not getattr(model, "output_names", None)
    path = tmp_path / "seq.mlpackage"
    coreml.convert(model, LABELS).save(str(path))  # sets output_names and names the input "image"
    assert coreml.verify_spec(path, image_size=(28, 28), grayscale=True, class_names=LABELS)["input"].startswith("image:")


def _edge_model():
    return keras.Sequential([keras.Input((28, 28, 1)), coreml.edge_orientation_layer(),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])


def test_custom_layer_fails_without_registration_and_converts_with_it(tmp_path):
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY

    assert "Atan2" not in _TF_OPS_REGISTRY
    with pytest.raises(NotImplementedError, match="Atan2"):
        coreml.convert(_edge_model(), LABELS)
    with coreml.registered_tf_op("Atan2", coreml.atan2_to_mil):
        mlmodel = coreml.convert(_edge_model(), LABELS)
    assert "Atan2" not in _TF_OPS_REGISTRY  # the registration ends with the block
    path = tmp_path / "edges.mlpackage"
    mlmodel.save(str(path))
    ops = {op.op_type for op in coreml._program(coreml.load(path)).functions["main"].operations}
    assert {"atan", "select", "real_div"} <= ops


def test_atan2_composition_matches_numpy():
    """The ops atan2_to_mil emits, mirrored in NumPy (Core ML itself cannot run on Linux)."""
    values = np.array([-3, -1, -0.25, 0, 0.25, 1, 2], np.float32)
    y, x = (a.ravel() for a in np.meshgrid(values, values))
    safe_x = np.where(x == 0, np.float32(1e-12), x)
    shift = np.where(x < 0, np.where(y >= 0, np.pi, -np.pi), 0)
    np.testing.assert_allclose(np.arctan(y / safe_x) + shift, np.arctan2(y, x), atol=1e-6)


# ---- Compressed weights back into Keras, with batch norm folded where (and only where) Core ML folded it ----

def _mobile_block(folded: bool):
    """A small MobileNetV2-like net with BN after every conv. folded=True builds the reference: no BN
    layers where Core ML folds them (conv with bias instead); the BN after the last depthwise conv,
    which feeds a pooling through a transpose, is never folded and stays in both."""
    def bn(x):
        return x if folded else keras.layers.BatchNormalization()(x)

    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = shortcut = keras.layers.ReLU(6.0)(bn(keras.layers.Conv2D(32, 3, padding="same", use_bias=folded)(x)))
    x = keras.layers.ReLU(6.0)(bn(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=folded)(x)))
    x = keras.layers.Add()([bn(keras.layers.Conv2D(32, 1, use_bias=folded)(x)), shortcut])
    x = keras.layers.BatchNormalization()(keras.layers.DepthwiseConv2D(3, use_bias=False)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.fixture(scope="module")
def mobile_package(tmp_path_factory):
    keras.utils.set_random_seed(4)
    model = _mobile_block(folded=False)
    rng = np.random.default_rng(4)
    for layer in model.layers:  # BN factors near 1: folded and unfolded kernels differ by little
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.8, 1.25, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.8, 1.25, n)])
    path = tmp_path_factory.mktemp("coreml") / "mobile.mlpackage"
    coreml.convert(model, LABELS).save(str(path))
    return model, path


def _dequantize(op) -> np.ndarray:
    """The dense weight a constexpr op stands for, computed with NumPy from what the package stores
    (independent of coremltools's own materialization): iOS16 bit-packed lookup tables (LSB first)
    and affine int8 (q - zero_point) * scale along axis 0."""
    if op.op_type == "constexpr_lut_to_dense":
        lut, packed, shape = op.lut.val, op.indices.val, op.shape.val
        bits = int(np.log2(len(lut)))
        unpacked = np.unpackbits(packed, bitorder="little")[: int(np.prod(shape)) * bits].reshape(-1, bits)
        return lut[unpacked @ (1 << np.arange(bits))].reshape(shape)
    if op.op_type == "constexpr_affine_dequantize":
        q, zero, scale = op.quantized_data.val, op.zero_point.val, op.scale.val
        assert int(op.axis.val) == 0
        expand = (-1,) + (1,) * (q.ndim - 1)
        return (q.astype(np.float32) - zero.astype(np.float32).reshape(expand)) * scale.reshape(expand)
    raise AssertionError(f"unexpected {op.op_type}")


def _reference_from_package(path) -> keras.Model:
    """The net the package computes, built independently: kernels and biases straight from its weight
    ops (dequantized with NumPy), BN layers only where the program still has them."""
    reference = _mobile_block(folded=True)
    ops = [op for op in coreml._program(coreml.load(path)).functions["main"].operations
           if op.op_type in ("conv", "linear", "matmul")]
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    layers = [lay for lay in reference.layers if isinstance(lay, kinds)]
    assert len(ops) == len(layers) == 5
    for op, layer in zip(ops, layers):
        var = op.weight if op.op_type != "matmul" else op.y
        w = var.val if var.val is not None else _dequantize(var.op)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = w[:, 0].transpose(1, 2, 0)[..., None]
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = w.transpose(2, 3, 1, 0)
        else:
            kernel = w.T if op.op_type == "linear" else w
        layer.kernel.assign(kernel)
        if layer.use_bias:
            bias = op.inputs.get("bias")
            layer.bias.assign(np.zeros(kernel.shape[-1] if not isinstance(layer, keras.layers.DepthwiseConv2D)
                                       else kernel.shape[2]) if bias is None else bias.val)
    return reference


@pytest.mark.parametrize("variant", ["palette8", "palette4", "palette2"])
def test_palettized_package_round_trips_with_batch_norm(mobile_package, variant, tmp_path):
    model, path = mobile_package
    qpath = tmp_path / f"{variant}.mlpackage"
    coreml.quantize(coreml.load(path), variant, weight_threshold=200).save(str(qpath))
    stored = coreml.weights_from_mlpackage(qpath)
    assert [w["stored_as"] for w in stored] == ["constexpr_lut_to_dense"] * 5
    assert [w["affine_after"] for w in stored] == [False, False, False, True, False]
    assert coreml.compare_weights(model, qpath)["batch_norms_folded"] == 3
    reference = _reference_from_package(qpath)
    kept = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][-1]
    [bn] = [layer for layer in reference.layers if isinstance(layer, keras.layers.BatchNormalization)]
    bn.set_weights(kept.get_weights())  # the BN that Core ML kept as ops is the model's own
    x = np.random.default_rng(5).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    rebuilt = coreml.load_into_keras(model, qpath)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), reference.predict(x, verbose=0), atol=2e-6)
    if variant == "palette2":  # the trap: a compressed kernel nearer the unfolded one although BN was folded
        folded, plain = coreml.keras_weights(model), coreml.keras_weights(model, fold_batch_norm=False)
        assert any(np.abs(p["weight"] - c["weight"]).max() < np.abs(f["weight"] - c["weight"]).max()
                   for f, p, c in zip(folded[:3], plain[:3], stored[:3]))


# ---- The .mlmodel route of WWDC 2018 (quantize_weights, linear and k-means), checked the same way -------

def _nn_dequantize(params, shape) -> np.ndarray:
    """A NeuralNetwork weight blob as floats, decoded with NumPy from the spec: float values, or bit-packed
    indices (most significant bit first) into a lookup table or a per-channel linear map q * scale + bias."""
    if params.floatValue:
        return np.asarray(params.floatValue, np.float32).reshape(shape)
    q = params.quantization
    bits, n = q.numberOfBits, int(np.prod(shape))
    codes = np.unpackbits(np.frombuffer(params.rawValue, np.uint8))[: n * bits].reshape(n, bits)
    index = (codes @ (1 << np.arange(bits)[::-1])).reshape(shape)
    if q.WhichOneof("QuantizationType") == "lookupTableQuantization":
        return np.asarray(q.lookupTableQuantization.floatValue, np.float32)[index]
    channel = (-1,) + (1,) * (len(shape) - 1)
    scale = np.asarray(q.linearQuantization.scale, np.float32).reshape(channel)
    return index * scale + np.asarray(q.linearQuantization.bias, np.float32).reshape(channel)


def _reference_from_mlmodel(mlmodel) -> keras.Model:
    """As _reference_from_package, for a NeuralNetwork .mlmodel."""
    reference = _mobile_block(folded=True)
    spec = mlmodel.get_spec()
    layers = [lay for lay in spec.neuralNetworkClassifier.layers
              if lay.WhichOneof("layer") in ("convolution", "batchedMatmul")]
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    targets = [lay for lay in reference.layers if isinstance(lay, kinds)]
    assert len(layers) == len(targets) == 5
    for nn, layer in zip(layers, targets):
        if nn.WhichOneof("layer") == "convolution":
            c = nn.convolution
            w = _nn_dequantize(c.weights, (c.outputChannels, c.kernelChannels, *c.kernelSize))
            kernel = w[:, 0].transpose(1, 2, 0)[..., None] if isinstance(layer, keras.layers.DepthwiseConv2D) \
                else w.transpose(2, 3, 1, 0)
        else:
            c = nn.batchedMatmul  # stored (out, in)
            kernel = _nn_dequantize(c.weights, (c.weightMatrixSecondDimension, c.weightMatrixFirstDimension)).T
        layer.kernel.assign(kernel)
        if layer.use_bias:
            layer.bias.assign(_nn_dequantize(c.bias, layer.bias.shape) if c.hasBias else np.zeros(layer.bias.shape))
    return reference


@pytest.mark.parametrize("mode", ["linear", "kmeans"])
def test_neural_network_quantize_weights_round_trips_at_8_4_2_bits(mobile_package, mode):
    model, _ = mobile_package
    nn = coreml.convert(model, LABELS, neural_network=True)
    assert coreml.compare_weights(model, nn)["max_abs_difference"] < 1e-6
    x = np.random.default_rng(6).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    kept = [lay for lay in model.layers if isinstance(lay, keras.layers.BatchNormalization)][-1]
    for bits in (8, 4, 2):
        quantized = coreml.quantize_neural_network(nn, bits, mode)
        stored = coreml.weights_from_mlmodel(quantized)
        kind = "linearQuantization" if mode == "linear" else "lookupTableQuantization"
        assert [w["stored_as"] for w in stored] == [kind] * 5
        assert [w["affine_after"] for w in stored] == [False, False, False, True, False]
        if mode == "kmeans":
            assert all(len(np.unique(w["weight"])) <= 2 ** bits for w in stored)
        reference = _reference_from_mlmodel(quantized)
        [bn] = [lay for lay in reference.layers if isinstance(lay, keras.layers.BatchNormalization)]
        bn.set_weights(kept.get_weights())
        rebuilt = coreml.load_into_keras(model, quantized)
        np.testing.assert_allclose(rebuilt.predict(x, verbose=0), reference.predict(x, verbose=0), atol=2e-6)
    with pytest.raises(coreml.CoreMLError, match="NeuralNetwork"):
        coreml.quantize_neural_network(coreml.load(mobile_package[1]), 8)


def test_running_a_model_is_refused_clearly_off_macos(mobile_package):
    if coreml.can_predict():
        pytest.skip("on macOS these run")
    with pytest.raises(coreml.CoreMLError, match="macOS"):
        coreml.compare_models(None, None, [])
    with pytest.raises(coreml.CoreMLError, match="macOS"):
        coreml.quantize_activations(coreml.load(mobile_package[1]), [])


# ---- Precision, compute units, flexible sizes, the version warning -------------------------------------

def test_float16_programs_can_use_the_neural_engine_float32_ones_cannot(mobile_package, tmp_path):
    model, path = mobile_package
    assert coreml.compute_units(path) == {**coreml.compute_units(path), "precision": "float32",
                                          "units": ["CPU", "GPU"]}
    half = coreml.convert(model, LABELS, precision="float16")
    found = coreml.compute_units(half)
    assert found["precision"] == "float16" and "Neural Engine" in found["units"]
    assert "Neural Engine" in coreml.compute_units(coreml.convert(model, LABELS, neural_network=True))["units"]
    check = coreml.compare_weights(model, half)  # weights rounded to float16: close, not equal
    assert not check["bit_exact"] and check["max_abs_difference"] < 5e-3
    x = np.random.default_rng(7).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    rebuilt = coreml.load_into_keras(model, half)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=5e-3)
    with pytest.raises(coreml.CoreMLError, match="precision"):
        coreml.convert(model, LABELS, precision="int8")


def test_a_float16_copy_computes_in_float16_close_to_float32(mobile_package):
    model, _ = mobile_package
    half = coreml.float16_copy(model)
    assert {layer.dtype_policy.name for layer in half.layers if not isinstance(layer, keras.layers.InputLayer)} == {"float16"}
    assert all(w.dtype == "float16" for w in half.weights)
    x = np.random.default_rng(3).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    full, rounded = model.predict(x, verbose=0), half.predict(x, verbose=0)
    assert rounded.dtype == np.float16 and not np.array_equal(full, rounded)
    np.testing.assert_allclose(rounded.astype("float32"), full, atol=1e-2)
    assert model.layers[1].dtype_policy.name == "float32"  # the original is left as it was


def test_flexible_image_sizes_are_in_the_spec(mobile_package, tmp_path):
    model, _ = mobile_package
    path = tmp_path / "flexible.mlpackage"
    coreml.convert(model, LABELS, sizes=[(32, 32), (64, 48)]).save(str(path))
    image = coreml.load(path).get_spec().description.input[0].type.imageType
    assert (image.height, image.width) == (16, 16)  # the default size
    assert sorted((s.height, s.width) for s in image.enumeratedSizes.sizes) == [(16, 16), (32, 32), (64, 48)]
    found = coreml.verify_spec(path, image_size=(16, 16), grayscale=False, class_names=LABELS, sizes=[(64, 48), (32, 32)])
    assert found["labels"] == LABELS and sorted(found["sizes"]) == [(16, 16), (32, 32), (64, 48)]
    with pytest.raises(coreml.CoreMLError, match="accepts"):
        coreml.verify_spec(path, image_size=(16, 16), grayscale=False, class_names=LABELS, sizes=[(32, 32)])
    fixed = coreml.verify_spec(mobile_package[1], image_size=(16, 16), grayscale=False, class_names=LABELS)
    assert fixed["sizes"] == [(16, 16)]
    with pytest.raises(coreml.CoreMLError, match="accepts"):
        coreml.verify_spec(mobile_package[1], image_size=(16, 16), grayscale=False, class_names=LABELS, sizes=[(32, 32)])


def test_the_untested_tensorflow_warning_is_reported():
    import tensorflow as tf
    from coremltools import _deps
    from packaging.version import Version

    assert coreml.tested_tensorflow() == _deps._TF_2_MAX_VERSION
    newer = Version(tf.__version__) > Version(_deps._TF_2_MAX_VERSION)
    found = coreml.untested_versions()
    assert bool(found) == newer
    if newer:
        assert tf.__version__ in found[0] and _deps._TF_2_MAX_VERSION in found[0]


# ---- Modern compression: 6/3/1-bit tables, grouped tables with per-channel scales, pruning + tables -----

@pytest.fixture(scope="module")
def mobile_ios18(mobile_package, tmp_path_factory):
    model, _ = mobile_package
    path = tmp_path_factory.mktemp("coreml18") / "mobile18.mlpackage"
    coreml.convert(model, LABELS, target="iOS18").save(str(path))
    return model, path


def _tables(path) -> list[tuple]:
    """The shape of each lookup table in the package, and the op that makes it (a constant or a scaling)."""
    ops = coreml._program(coreml.load(path)).functions["main"].operations
    return [(op.lut.shape, op.lut.op.op_type) for op in ops if op.op_type == "constexpr_lut_to_dense"
            and op.indices.rank == 4]  # the conv kernels


@pytest.mark.parametrize("variant", ["palette6", "palette3", "palette1", "palette4_grouped",
                                     "palette4_grouped_scaled", "prune50_palette4"])
def test_modern_compressions_store_what_they_promise_and_round_trip(mobile_ios18, variant, tmp_path):
    model, path = mobile_ios18
    qpath = tmp_path / f"{variant}.mlpackage"
    coreml.quantize(coreml.load(path), variant, weight_threshold=200).save(str(qpath))
    stored = coreml.weights_from_mlpackage(qpath)
    convs = stored[:4]  # the dense layer's 10 outputs do not fill a group of 16
    kind, bits = coreml.COMPRESSIONS[variant]
    if kind == "palette":
        assert all(len(np.unique(w["weight"])) <= 2 ** bits for w in stored)
    elif kind == "grouped":  # one table per group of 16 output channels
        assert [shape for shape, _ in _tables(qpath)] == [(2, 1, 1, 1, 16, 1)] * 4
        assert all(len(np.unique(w["weight"][g:g + 16])) <= 16 for w in convs for g in (0, 16))
    elif kind == "grouped_scaled":  # tables scaled by a constexpr op: a table per group and per position
        tables = _tables(qpath)
        assert all(maker == "constexpr_blockwise_shift_scale" for _, maker in tables)
        assert tables[0][0] == (2, 3, 3, 3, 16, 1)
    else:
        for w in stored:
            assert (w["weight"] == 0).mean() >= 0.45 and len(np.unique(w["weight"])) <= 2 ** bits + 1
    tables = coreml.lookup_tables(qpath)
    per_weight = tables["table_entries"] / max(tables["weights"], 1)  # pruned + palettized: sparse tables, not counted
    if variant == "palette4_grouped_scaled":  # a table per group and kernel position: one entry per weight
        assert tables["tensors"] == 4 and per_weight == 1
    elif variant == "palette4_grouped":  # 16 entries per group of 16 channels
        assert tables["tensors"] == 4 and tables["table_entries"] == 16 * sum(len(w["weight"]) // 16 for w in convs)
    elif kind == "palette":
        assert tables["tensors"] == len(stored) and tables["table_entries"] == 2 ** bits * len(stored)
    if kind.startswith("grouped"):  # the dense layer's 10 channels fill no group: it stays float, unchanged
        dense, float_dense = stored[-1], coreml.weights_from_mlpackage(path)[-1]
        assert dense["stored_as"] == float_dense["stored_as"] and len(dense["weight"]) == 10
        np.testing.assert_array_equal(dense["weight"], float_dense["weight"])
    assert coreml.compare_weights(model, qpath)["batch_norms_folded"] == 3
    rebuilt = coreml.load_into_keras(model, qpath)
    first_conv = next(lay for lay in rebuilt.layers if type(lay) is keras.layers.Conv2D)
    np.testing.assert_array_equal(first_conv.kernel.numpy().transpose(3, 2, 0, 1), convs[0]["weight"])
    assert np.isfinite(rebuilt.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0)).all()


def test_ios18_compressions_refuse_an_older_program(mobile_package):
    with pytest.raises(coreml.CoreMLError, match="iOS 18"):
        coreml.quantize(coreml.load(mobile_package[1]), "palette3", weight_threshold=200)
