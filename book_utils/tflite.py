"""TensorFlow Lite: convert a Keras model (float32, dynamic range, float16, full int8, 16x8) and run it with LiteRT;
what full-int8 loses, layer by layer, and where a file's bytes go; activation ranges chosen by squared error,
bias correction and quantization-aware fine-tuning for full int8.

The interpreter is ai_edge_litert's (LiteRT), the successor of tf.lite.Interpreter.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from book_utils import data, env, measure

MODES = ("float32", "dynamic", "float16", "int8")  # the four that chapter 8 compares
ALL_MODES = MODES + ("int16x8",)


class TFLiteError(ValueError):
    """A model file or an input that the TFLite helpers cannot use; the message says what to do."""


def _converter(model, folder, batch_size):
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
    model.export(folder, format="tf_saved_model", input_signature=[spec], verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(folder)


def _calibration(representative):
    images = np.asarray(representative, dtype=np.float32)
    if images.ndim < 2 or len(images) == 0:
        raise TFLiteError("representative must be a non-empty array of images as the model takes them, "
                          f"e.g. x_train[:300] (got shape {images.shape})")
    return lambda: ([image[None]] for image in images)


def convert(model, mode: str = "float32", representative=None, batch_size: int | None = None, *,
            per_channel: bool = True, float_nodes=()) -> bytes:
    """Convert a Keras model to a .tflite flatbuffer (the bytes of the file).

    mode: "float32" (no quantization), "dynamic" (int8 weights, float activations), "float16"
    (float16 weights), "int8" (weights and activations int8, int8 input and output) or "int16x8"
    (int8 weights, int16 activations, int16 input and output: finer activations, not for the Edge TPU).
    The last two need `representative`: training images, as the model takes them, to calibrate the
    activation ranges (chapter 8 sweeps how many). batch_size: fix the batch dimension (1 for the Edge
    TPU), else it stays dynamic. per_channel=False quantizes each conv kernel with one scale instead of
    one per output channel (TensorFlow 2.21's converter keeps dense kernels per channel regardless). float_nodes: names of tensors (from layer_errors) whose ops stay float32,
    the rest int8 ("selective quantization"; the model is then no longer full int8).
    """
    import tensorflow as tf

    if mode not in ALL_MODES:
        raise TFLiteError(f"mode must be one of {', '.join(ALL_MODES)}, not {mode!r}")
    if mode in ("int8", "int16x8") and representative is None:
        raise TFLiteError(f"{mode} needs representative images (e.g. 200-500 training images) to "
                          f"calibrate the activations: convert(model, {mode!r}, representative=x_train[:300])")
    if float_nodes and mode != "int8":
        raise TFLiteError("float_nodes (selective quantization) applies to mode 'int8' only")
    with tempfile.TemporaryDirectory() as tmp, env.quiet():
        converter = _converter(model, tmp, batch_size)
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode in ("int8", "int16x8"):
            converter.representative_dataset = _calibration(representative)
            converter._experimental_disable_per_channel = not per_channel  # the converter's own switch
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            if float_nodes:
                return _debugger(converter, representative, denylisted_nodes=list(float_nodes)
                                 ).get_nondebug_quantized_model()
        if mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
        return converter.convert()


def convert_mse_ranges(model, representative, *, bins: int = 2048) -> bytes:
    """Full int8 like convert(model, "int8", representative=...), with each activation's range chosen from
    the values it takes on the representative images: the span they fill, narrowed where clipping a few
    rare large values costs less squared error than coarse steps for all the others (_mse_range), instead
    of the min and max the converter records. The converter calibrates, the ranges are replaced, and the
    converter's own quantizer finishes the model. The model's input keeps its range: every pixel is real."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as converter_internals
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer, histograms = _calibrated_histograms(model, representative, bins)
    tensors = flatbuffer.subgraphs[0].tensors
    for i, (low, high, counts) in histograms.items():
        low, high = _mse_range(low, high, counts)
        tensors[i].quantization.min = np.array([low], np.float32)
        tensors[i].quantization.max = np.array([high], np.float32)
    with env.quiet():  # what TFLiteConverter.convert() calls after calibrating, with the same settings
        return converter_internals.mlir_quantize(bytes(flatbuffer_utils.convert_object_to_bytearray(flatbuffer)),
                                                 input_data_type=tf.int8, output_data_type=tf.int8)


def activation_ranges(model, representative, *, bins: int = 2048) -> list[dict]:
    """Each activation of the full-int8 model, in graph order: {"tensor", "calibrated": the (min, max) the
    converter records, "observed": the span its values fill on the representative images, "mse": the range
    convert_mse_ranges gives it}. TensorFlow 2.21's calibrator records a tensor's values again after the op
    that reads it has run; when that op wrote its output into the same memory (a residual Add does), the
    tensor gets the op's output range (tensorflow/tensorflow#127842): "calibrated" is then wider than
    "observed". The values here are read with every tensor kept apart, so they are the tensor's own."""
    flatbuffer, histograms = _calibrated_histograms(model, representative, bins)
    tensors = flatbuffer.subgraphs[0].tensors
    return [{"tensor": tensors[i].name.decode(), "calibrated": (low, high),
             "observed": _filled_span(low, high, counts), "mse": _mse_range(low, high, counts)}
            for i, (low, high, counts) in histograms.items()]


def _calibrated_histograms(model, images, bins: int):
    """Calibrate as the converter does, then count each activation's values (not the input's) on the images,
    read with every tensor kept apart, in `bins` equal bins from the min to the max the converter recorded.
    Returns (the calibrated float model as a flatbuffer object, {tensor index: (min, max, counts)})."""
    import warnings

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    with tempfile.TemporaryDirectory() as tmp, env.quiet():
        converter = _converter(model, tmp, None)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _calibration(images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_calibrate_only = True  # each activation tensor carries its recorded min and max
        calibrated = converter.convert()
    with warnings.catch_warnings(), env.quiet():  # LiteRT warns that keeping every tensor is for debugging: it is
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
        it.allocate_tensors()
    inp = it.get_input_details()[0]
    flatbuffer = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    found = {i: [float(t.quantization.min[0]), float(t.quantization.max[0]), np.zeros(bins)]
             for i, t in enumerate(flatbuffer.subgraphs[0].tensors) if i != inp["index"] and t.quantization is not None
             and t.quantization.min is not None and len(t.quantization.min) == 1
             and t.quantization.max[0] > t.quantization.min[0]}
    for image in np.asarray(images, dtype=np.float32):
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        for i, (low, high, counts) in found.items():
            counts += np.histogram(it.get_tensor(i), bins, (low, high))[0]
    return flatbuffer, {i: tuple(v) for i, v in found.items()}


def _filled_span(low: float, high: float, counts) -> tuple[float, float]:
    """From the first to the last non-empty bin of a histogram from low to high, widened to take in zero."""
    filled = np.nonzero(counts)[0]
    if not len(filled):
        return low, high
    width = (high - low) / len(counts)
    return min(low + filled[0] * width, 0.0), max(low + (filled[-1] + 1) * width, 0.0)


def _mse_range(low: float, high: float, counts, ratios=np.linspace(0.2, 1.0, 81)) -> tuple[float, float]:
    """An int8 range for the values counted in a histogram (counts in equal bins from low to high): of the
    span the values fill, with each end scaled by one of `ratios`, the one whose 256 levels give the
    smallest squared error (rounding inside the range, clipping outside). Zero stays inside, as int8 needs."""
    counts = np.asarray(counts, dtype=np.float64)
    centres = low + (np.arange(len(counts)) + 0.5) * (high - low) / len(counts)
    low, high = _filled_span(low, high, counts)
    lows = low * ratios if low < 0 else np.array([low])
    highs = high * ratios if high > 0 else np.array([high])
    best = (np.inf, low, high)
    for lo in lows:
        step = (highs[:, None] - lo) / 255
        levels = np.clip(np.round((centres - lo) / step), 0, 255) * step + lo
        errors = ((centres - levels) ** 2 * counts).sum(axis=1)
        k = int(np.argmin(errors))
        if errors[k] < best[0]:
            best = (errors[k], float(lo), float(highs[k]))
    return best[1], best[2]


def _debugger(converter, representative, **options):
    """LiteRT's quantization debugger over a converter set up for full int8 (inputs and outputs too)."""
    import tensorflow as tf

    debug_options = tf.lite.experimental.QuantizationDebugOptions(fully_quantize=True, **options)
    with _old_interpreter_allowed():
        return tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_calibration(representative), debug_options=debug_options)


@contextlib.contextmanager
def _old_interpreter_allowed():
    """The quantization debugger runs models with tf.lite.Interpreter, which warns that LiteRT replaces it;
    that warning is about TensorFlow's code, not the reader's, so it is not shown."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        yield


def layer_errors(model, representative, *, per_channel: bool = True) -> list[dict]:
    """How much each tensor of the full-int8 model loses, worst first, from LiteRT's quantization debugger
    (tf.lite.experimental.QuantizationDebugger): each op runs quantized and float side by side on the
    representative images, each fed the same quantized input. rmse_per_step is the RMS error of its
    output in units of the tensor's quantization step (scale): rounding alone gives 1/sqrt(12) = 0.29,
    ops that only move values (pooling, reshape) about 0; much more than 0.29 means the op loses
    precision, and its tensor name is what convert(..., float_nodes=[...]) keeps in float32."""
    import csv

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp, env.quiet():
        converter = _converter(model, tmp, None)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _calibration(representative)
        converter._experimental_disable_per_channel = not per_channel
        debugger = _debugger(converter, representative)
        with _old_interpreter_allowed():
            debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"], "scale": scale,
                     "rmse_per_step": float(np.sqrt(mse) / scale) if scale else float("inf"),
                     "mean_error": float(row["mean_error"]), "max_abs_error": float(row["max_abs_error"])})
    return sorted(rows, key=lambda r: -r["rmse_per_step"])


def size_breakdown(model: bytes) -> dict:
    """Where the bytes of a .tflite file go: constant tensors by type (int8 weights, int32 biases,
    float32...), quantization parameters (a float32 scale and an int64 zero point per tensor, or per
    output channel with per-channel quantization), and the rest (the graph: ops, tensor names and
    shapes, flatbuffer tables). Why int8 is not 4x smaller than float32: biases stay int32, and these
    parameters and the graph do not shrink."""
    from tensorflow.lite.python import schema_py_generated as schema

    data = bytes(model)
    if data[4:8] != b"TFL3":
        raise TFLiteError("this is not a TensorFlow Lite model (no TFL3 identifier in its header)")
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    root = schema.Model.GetRootAs(data, 0)
    constants, quantization, seen = {}, 0, set()
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            q = t.Quantization()
            if q is not None:
                quantization += 4 * q.ScaleLength() + 8 * q.ZeroPointLength() + 4 * (q.MinLength() + q.MaxLength())
            if t.Buffer() in seen or not 0 < t.Buffer() < root.BuffersLength():
                continue
            seen.add(t.Buffer())
            n = root.Buffers(t.Buffer()).DataLength()
            if n:
                kind = types.get(t.Type(), "other")
                constants[kind] = constants.get(kind, 0) + n
    total = len(data)
    return {"total": total, "constants": constants, "quantization_parameters": quantization,
            "graph_and_other": total - sum(constants.values()) - quantization}


def op_counts(model) -> dict:
    """What a .tflite model computes with: {"ops": {op name: count}, "float_ops": how many ops (other than
    DEQUANTIZE) output float32}. A full-int8 model has no float ops; with float_nodes (selective
    quantization) the ops kept in float32 count, with a DEQUANTIZE in front and a QUANTIZE after them."""
    it = model if hasattr(model, "invoke") else interpreter(model)
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in it.get_tensor_details()}
    ops, floats = {}, 0
    for op in it._get_ops_details():  # LiteRT's list of the graph's ops (name, input and output tensors)
        if op["op_name"] == "DELEGATE":  # the XNNPACK delegate's kernels, standing for ops already listed
            continue
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        outputs = [dtypes.get(i) for i in op["outputs"] if i >= 0]
        floats += op["op_name"] != "DEQUANTIZE" and any(d == np.float32 for d in outputs)
    return {"ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])), "float_ops": int(floats)}


def interpreter(model: str | os.PathLike | bytes, threads: int = 1):
    """A LiteRT interpreter over a .tflite file (path) or its bytes, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        content = bytes(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise TFLiteError(f"{path} is not a file. Pass the path of a .tflite model or its bytes.")
        content = path.read_bytes()
    if content[4:8] != b"TFL3":
        raise TFLiteError("this is not a TensorFlow Lite model (no TFL3 identifier in its header): "
                          "convert the Keras model with tflite.convert() first")
    try:
        with env.quiet():  # LiteRT announces its XNNPACK delegate on stderr
            it = Interpreter(model_content=content, num_threads=threads)
            it.allocate_tensors()
    except ValueError as e:  # LiteRT's own words say what is broken, not what to do
        raise TFLiteError(f"this .tflite file is damaged ({e}); it may be truncated: "
                          "convert the Keras model again with tflite.convert() and save the bytes whole") from None
    return it


def predict(model, images, threads: int = 1) -> np.ndarray:
    """Class probabilities for 0-255 images of the model's input size, one image at a time (float32 output)."""
    it = interpreter(model, threads) if not hasattr(model, "invoke") else model
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    images = data.check_images(images, inp["shape"])
    scale, zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    probabilities = []
    for image in images:
        x = image[None].astype(np.float32)
        if inp["dtype"] in (np.int8, np.uint8, np.int16):  # integer input: quantize the pixels as the model expects
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"])[0]
        probabilities.append((y.astype(np.float32) - out_zero) * out_scale if out_scale else y)
    return np.array(probabilities, dtype=np.float32)


def forward_pass(model, threads: int = 1):
    """A call that runs a .tflite model (path, bytes, or a ready interpreter) once on one image of zeros (batch 1)."""
    it = model if hasattr(model, "invoke") else interpreter(model, threads)
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    return it.invoke


def latency_ms(model, threads: int = 1, repeats: int = 50, warmup: int = 5) -> float:
    """Median milliseconds per image (batch 1) of a .tflite model (path, bytes, or a ready interpreter)."""
    return measure.median_ms(forward_pass(model, threads), repeats, warmup)


# Quantization-aware fine-tuning: a Keras model that rounds as the full-int8 model will, trained so that the
# rounding changes fewer answers. Hand-written because tensorflow-model-optimization needs tf_keras.

_KERNEL_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
_FUSABLE_ACTIVATIONS = ("relu", "relu6")  # TFLite folds these into the op before them


def _activation(layer) -> str | None:
    """The name of an activation layer's function ('relu6'), else None."""
    name = type(layer).__name__
    if name == "Activation":
        return getattr(layer.activation, "__name__", None)
    if name == "ReLU" and not layer.negative_slope and not layer.threshold:
        return "relu6" if layer.max_value == 6 else "relu" if layer.max_value is None else None
    return None


def _unstored_outputs(model) -> set[str]:
    """Names of the layers whose output the int8 model never stores, because the converter merges the op
    with the next: a convolution or dense layer with the batch norm after it, and any of these or an Add
    with the ReLU/ReLU6 after it."""
    merged = set()
    for layer in model.layers:
        after = [node.operation for node in layer._outbound_nodes]  # the layers that take its output
        if len(after) != 1:
            continue
        kind, linear = type(layer).__name__, getattr(getattr(layer, "activation", None), "__name__", "linear") == "linear"
        if kind in _KERNEL_LAYERS and linear and type(after[0]).__name__ == "BatchNormalization":
            merged.add(layer.name)
        elif (kind in (*_KERNEL_LAYERS, "BatchNormalization", "Add") and linear
              and _activation(after[0]) in _FUSABLE_ACTIVATIONS):
            merged.add(layer.name)
    return merged


def _int8_kernel(kernel, axes):
    """The kernel rounded to int8 with one symmetric scale per output channel (-127..127), as the converter
    stores it; the gradient passes through the rounding unchanged (the straight-through estimator)."""
    from keras import ops

    scale = ops.maximum(ops.max(ops.abs(kernel), axis=axes, keepdims=True), 1e-12) / 127
    rounded = ops.clip(ops.round(kernel / scale), -127, 127) * scale
    return kernel + ops.stop_gradient(rounded - kernel)


def _int8_simulated_layer():
    import keras
    import tensorflow as tf
    from keras import ops

    class Int8Simulated(keras.layers.Layer):
        """Runs `inner` (sharing its weights) as the full-int8 model will: kernels rounded per output channel,
        and each output the int8 model stores rounded to 256 levels between the ranges that calibration
        recorded (tf.quantization.fake_quant_*, whose gradient is 1 inside the range and 0 outside)."""

        def __init__(self, inner, store_output: bool):
            super().__init__(name=f"{inner.name}_int8")
            self.inner, self.store_output = inner, store_output
            self.observing, self.ranges = True, {}

        def _round(self, x, key):
            if self.observing:  # calibration: record the range, as the converter's calibration does
                low, high = self.ranges.get(key, (0.0, 0.0))  # a range always holds zero
                self.ranges[key] = (min(low, float(ops.min(x))), max(high, float(ops.max(x))))
                return x
            low, high = self.ranges[key]
            return tf.quantization.fake_quant_with_min_max_args(x, min=low, max=high, num_bits=8)

        def call(self, inputs, training=None, mask=None):  # masks: none in these models
            layer, kind = self.inner, type(self.inner).__name__
            if kind not in _KERNEL_LAYERS:
                x = layer(inputs, training=False if kind == "BatchNormalization" else training)  # BN frozen
                return self._round(x, "output") if self.store_output else x
            if kind == "Dense":
                x = ops.matmul(inputs, _int8_kernel(layer.kernel, 0))
            elif kind == "Conv2D":
                if layer.groups != 1:
                    raise TFLiteError(f"{layer.name}: grouped convolutions are not simulated")
                x = ops.conv(inputs, _int8_kernel(layer.kernel, (0, 1, 2)), strides=layer.strides,
                             padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate)
            else:
                x = ops.depthwise_conv(inputs, _int8_kernel(layer.kernel, (0, 1)), strides=layer.strides,
                                       padding=layer.padding, data_format=layer.data_format,
                                       dilation_rate=layer.dilation_rate)
            if layer.use_bias:
                x = x + layer.bias
            activation = getattr(layer.activation, "__name__", "linear")
            if activation not in ("linear", *_FUSABLE_ACTIVATIONS):
                x = self._round(x, "before activation")  # softmax, swish: an op of their own, after a stored tensor
            x = layer.activation(x)
            if activation == "softmax" and self.store_output:  # int8 softmax has a fixed scale, 1/256
                return tf.quantization.fake_quant_with_min_max_args(x, min=0.0, max=1.0, num_bits=8)
            return self._round(x, "output") if self.store_output else x

        def compute_output_spec(self, inputs, training=None, mask=None):
            return self.inner.compute_output_spec(inputs)

    return Int8Simulated


def quantization_aware(model, calibration, batch_size: int = 100):
    """Quantization-aware training for a full-int8 conversion: returns (simulated, tuned).

    tuned: a float copy of `model` (the model itself is left alone). simulated: a model sharing tuned's
    weights that computes as convert(tuned, "int8") will, within rounding: kernels rounded per output
    channel, batch norm folded (frozen at its moving statistics), and every tensor the int8 model stores
    rounded to 256 levels over the range it takes on `calibration` (images as the model takes them).
    Train `simulated` briefly at a small learning rate, then convert `tuned` with the same calibration
    images: the weights have learnt to live with the rounding."""
    import keras

    images = np.asarray(calibration, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise TFLiteError(f"calibration must be a non-empty batch of images, e.g. x_train[:500] (got shape {images.shape})")
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential) or not hasattr(model, "_run_through_graph"):
        raise TFLiteError("quantization_aware takes a functional Keras model: rebuild a Sequential one as "
                          "keras.Model(inputs, outputs)")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise TFLiteError(f"quantization_aware needs a flat model; these layers are models themselves: {nested}")
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    unstored, wrapper = _unstored_outputs(tuned), _int8_simulated_layer()
    simulated = keras.models.clone_model(
        tuned, clone_function=lambda layer: wrapper(layer, store_output=layer.name not in unstored))
    for start in range(0, len(images), batch_size):
        simulated(images[start:start + batch_size], training=False)
    for layer in simulated.layers:
        if isinstance(layer, wrapper):
            layer.observing = False
    return simulated, tuned


def _channel_means(model, images, batch_size) -> list[np.ndarray]:
    """The mean of each of a model's outputs per channel (the last axis), over all images and positions."""
    totals = None
    for start in range(0, len(images), batch_size):
        outputs = model(images[start:start + batch_size], training=False)
        sums = [np.asarray(out, dtype=np.float64).reshape(-1, out.shape[-1]).sum(axis=0)
                for out in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
        totals = sums if totals is None else [total + s for total, s in zip(totals, sums)]
    return [total / (len(images) * np.prod(shape[1:-1], dtype=int))
            for total, shape in zip(totals, [out.shape for out in model.outputs])]


def _layer_by_layer(model, images, visit, batch_size):
    """Runs a functional model on all `images`, one layer at a time in Keras's own order (that of
    Functional._run_through_graph), each layer in batches, keeping only the outputs still to be used.
    visit(layer, run) gives each layer's output, where run() computes it with the layer's current weights,
    so that a visit may change the weights first."""
    import collections

    import keras

    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]
             if node.operation is not None and not node.is_input]
    uses = collections.Counter(id(tensor) for node in nodes for tensor in node.input_tensors)
    values = {id(model.inputs[0]): np.asarray(images)}
    for node in nodes:
        args, kwargs = node.arguments.fill_in(values)

        def run(layer=node.operation, args=args, kwargs=kwargs):
            return np.concatenate([np.asarray(layer(*keras.tree.map_structure(
                lambda a: a[start:start + batch_size] if isinstance(a, np.ndarray) else a, args), **kwargs))
                for start in range(0, len(images), batch_size)])

        output = visit(node.operation, run)
        for tensor in node.input_tensors:
            uses[id(tensor)] -= 1
            if not uses[id(tensor)]:
                del values[id(tensor)]
        values[id(node.outputs[0])] = output


def bias_corrected(model, calibration, batch_size: int = 100):
    """A float copy of `model` whose batch-norm offsets cancel the mean error that full int8 adds to each
    channel: bias correction (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization and
    Bias Correction"), in its empirical form, measured on images rather than derived from the statistics.

    Rounding a 3x3 depthwise kernel to int8 moves each channel's output by a small constant that does not
    average out over nine weights, and rounding a nearly constant stored channel moves it alike on every
    image. Layer by layer, in order: the mean output per channel of each batch norm in the simulated int8
    model (quantization_aware's), before its own output is rounded, minus the float model's, on
    `calibration`, is subtracted from that batch norm's beta; each layer so also absorbs the shifts that
    the layers before it pass on. One pass of the float model and one of the simulated model, run layer
    by layer, measure all of it. Convert the result with the same calibration images; `model` itself is
    left alone."""
    import keras

    simulated, corrected = quantization_aware(model, calibration, batch_size)
    images = np.asarray(calibration, dtype=np.float32)
    norms = [layer for layer in corrected.layers if type(layer).__name__ == "BatchNormalization" and layer.center]
    if not norms:
        raise TFLiteError("bias_corrected moves batch-norm offsets (beta); this model has no BatchNormalization "
                          "layer with one")
    float_means = dict(zip((f"{layer.name}_int8" for layer in norms), _channel_means(
        keras.Model(model.input, [model.get_layer(layer.name).output for layer in norms]), images, batch_size)))

    def correct(layer, run):
        if layer.name in float_means:
            stored, layer.store_output = layer.store_output, False  # measured before its own output is
            out = run()                                                 # rounded: that is not a shift to undo
            layer.store_output = stored
            shift = out.reshape(-1, out.shape[-1]).astype(np.float64).mean(axis=0) - float_means[layer.name]
            layer.inner.beta.assign(layer.inner.beta - shift.astype(np.float32))
        return run()

    _layer_by_layer(simulated, images, correct, batch_size)
    return corrected
