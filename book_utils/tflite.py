"""TensorFlow Lite: convert a Keras model (float32, dynamic range, float16, full int8) and run it with LiteRT.

The interpreter is ai_edge_litert's (LiteRT), the successor of tf.lite.Interpreter.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from book_utils import data, env

MODES = ("float32", "dynamic", "float16", "int8")


class TFLiteError(ValueError):
    """A model file or an input that the TFLite helpers cannot use; the message says what to do."""


def convert(model, mode: str = "float32", representative=None, batch_size: int | None = None) -> bytes:
    """Convert a Keras model to a .tflite flatbuffer (the bytes of the file).

    mode: "float32" (no quantization), "dynamic" (int8 weights, float activations), "float16"
    (float16 weights) or "int8" (weights and activations int8, int8 input and output; needs
    `representative`: a few hundred training images, as the model takes them, to calibrate the
    activation ranges). batch_size: fix the batch dimension (1 for the Edge TPU), else it stays dynamic.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise TFLiteError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "int8" and representative is None:
        raise TFLiteError("full int8 needs representative images (e.g. 200-500 training images) to "
                          "calibrate the activations: convert(model, 'int8', representative=x_train[:300])")
    with tempfile.TemporaryDirectory() as tmp, env.quiet():
        spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
        model.export(tmp, format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            images = np.asarray(representative, dtype=np.float32)
            converter.representative_dataset = lambda: ([image[None]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


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
        if inp["dtype"] in (np.int8, np.uint8):  # int8 input: quantize the pixels the way the model expects
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"])[0]
        probabilities.append((y.astype(np.float32) - out_zero) * out_scale if out_scale else y)
    return np.array(probabilities, dtype=np.float32)


def latency_ms(model, threads: int = 1, repeats: int = 50, warmup: int = 5) -> float:
    """Median milliseconds per image (batch 1) of a .tflite model (path, bytes, or a ready interpreter)."""
    it = model if hasattr(model, "invoke") else interpreter(model, threads)
    inp = it.get_input_details()[0]
    x = np.zeros(inp["shape"], dtype=inp["dtype"])
    it.set_tensor(inp["index"], x)
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
