"""Core ML: convert a Keras model to an app-ready file, check the file on Linux, and compress its weights.

Core ML can only *run* a model on Apple hardware; coremltools converts, inspects and compresses it
anywhere. So on Linux we check the file's specification (image input, labels, metadata) and read its
weights back: for weight-only compression, Keras running the dequantized weights computes what the
device computes.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np

# Weight compressions of coremltools.optimize.coreml: name -> (kind, bits). QUANTIZATIONS are the five
# chapter 8 compares; COMPRESSIONS adds: "palette" tables of 6, 3 and 1 bits; "grouped": one table per
# group of GROUP_SIZE output channels; "grouped_scaled": the same with enable_per_channel_scale
# (coremltools 9 then keeps a table per group and per position of the other axes, and scales per
# position: see the tests); "pruned": half the weights set to zero (by magnitude), the rest palettized,
# stored together. Those in NEEDS_IOS18 need a model converted for iOS 18 (convert(..., target="iOS18")).
QUANTIZATIONS = {"linear8": ("linear", 8), "linear4": ("linear", 4),
                 "palette8": ("palette", 8), "palette4": ("palette", 4), "palette2": ("palette", 2)}
COMPRESSIONS = {**QUANTIZATIONS, "palette6": ("palette", 6), "palette3": ("palette", 3),
                "palette1": ("palette", 1), "palette4_grouped": ("grouped", 4),
                "palette4_grouped_scaled": ("grouped_scaled", 4), "prune50_palette4": ("pruned", 4)}
GROUP_SIZE = 16
NEEDS_IOS18 = {"linear4", "palette3", "palette4_grouped", "palette4_grouped_scaled", "prune50_palette4"}
WEIGHT_OPS = ("conv", "linear", "matmul")  # the MIL ops that carry a Keras layer's kernel
PRECISIONS = {"float16": lambda ct: ct.precision.FLOAT16, "float32": lambda ct: ct.precision.FLOAT32}
TYPED_EXECUTION = "https://apple.github.io/coremltools/docs-guides/source/typed-execution-example.html"


class CoreMLError(ValueError):
    """A file or model the Core ML helpers cannot use; the message says what to do."""


class _WithoutRuntimeLines(logging.Handler):
    """Passes coremltools's import-time log lines to stderr, except those saying that its native runtime
    (libcoremlpython) is missing, which is expected everywhere but macOS (see can_predict)."""

    def emit(self, record):
        message = record.getMessage()
        if not ("Failed to load" in message and "libcoremlpython" in message):
            sys.stderr.write(f"coremltools: {message}\n")


def import_coremltools():
    """coremltools, imported with its version warnings shown (see untested_versions)."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    log = logging.getLogger("coremltools")
    handler, propagate = _WithoutRuntimeLines(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        import coremltools
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    return coremltools


def untested_versions() -> list[str]:
    """What coremltools warns about at import: packages newer than the newest versions it was tested with.

    With TensorFlow 2.21 and coremltools 9 that is TensorFlow (tested up to 2.12): a conversion may fail
    or, worse, translate some op wrongly without a word. The book does not hide the warning; it checks
    what each conversion produced instead: the spec (verify_spec), every weight against Keras
    (compare_weights) and, with the weights back in Keras (load_into_keras), the predictions."""
    import tensorflow as tf

    ct = import_coremltools()
    from packaging.version import Version

    tested = tested_tensorflow()
    installed = Version(tf.__version__.split("-")[0].split("rc")[0])
    if tested and installed > Version(tested):
        return [f"TensorFlow {tf.__version__} is newer than {tested}, the newest version coremltools "
                f"{ct.__version__} was tested with"]
    return []


def tested_tensorflow() -> str | None:
    """The newest TensorFlow version this coremltools was tested with (None where it does not say)."""
    import_coremltools()
    from coremltools import _deps

    return getattr(_deps, "_TF_2_MAX_VERSION", None)


@contextlib.contextmanager
def quiet():
    """Keep coremltools's progress bars and warnings out of the notebook."""
    log, level = logging.getLogger("coremltools"), logging.getLogger("coremltools").level
    root, root_level = logging.getLogger(), logging.getLogger().level  # some passes log to the root logger
    log.setLevel(logging.ERROR)
    root.setLevel(logging.ERROR)
    import warnings
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            log.setLevel(level)
            root.setLevel(root_level)


def can_predict() -> bool:
    """True only on macOS with Core ML's runtime: elsewhere coremltools converts but cannot predict."""
    return sys.platform == "darwin"


def ensure_output_names(model) -> list[str]:
    """Give a Keras 3 model the `output_names` coremltools's Keras path reads (Sequential and
    subclassed models lack it); functional models already have it. Returns the names."""
    if not getattr(model, "output_names", None):
        model.output_names = [model.layers[-1].name] if getattr(model, "layers", None) else ["output"]
    return list(model.output_names)


def convert(model, class_names, *, neural_network: bool = False, target: str = "iOS15",
            precision: str = "float32", sizes=None,
            author: str = "", license: str = "", description: str = "", version: str = "1.0",
            input_description: str = "", output_description: str = ""):
    """Convert a Keras image classifier to a Core ML classifier that takes an image and returns a label.

    The input is an ImageType (grayscale for 1 channel, RGB for 3) with the model's size and no
    scaling: the book's models take 0-255 pixels and rescale them themselves. class_names become the
    labels (ClassifierConfig). neural_network=True makes the older .mlmodel NeuralNetwork format,
    else an ML program (.mlpackage) for `target` (e.g. "iOS15", "iOS18") computing in `precision`:
    "float16" can run on the Neural Engine, GPU and CPU, "float32" on the GPU and CPU only (see
    compute_units). sizes: other (height, width) the image may have besides the model's own
    (EnumeratedShapes; the model must accept them, e.g. end in global pooling). Batches need nothing
    in the spec: an app passes several images at once (MLBatchProvider, predictions(fromBatch:)).
    """
    ct = import_coremltools()
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3) or None in shape:
        raise CoreMLError(f"an image input needs a fixed (height, width, 1 or 3) shape, not {shape}")
    ensure_output_names(model)
    layout = ct.colorlayout.GRAYSCALE if shape[-1] == 1 else ct.colorlayout.RGB
    graph_name = model.inputs[0].name  # the book's models call their input "image"; Sequential ones don't
    if precision not in PRECISIONS:
        raise CoreMLError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    image_shape = (1, *shape)
    if sizes:
        others = [(1, int(h), int(w), shape[-1]) for h, w in sizes]
        image_shape = ct.EnumeratedShapes(shapes=[image_shape] + [o for o in others if o != image_shape],
                                          default=image_shape)
    image = ct.ImageType(name=graph_name, shape=image_shape, color_layout=layout, scale=1.0)
    labels = ct.ClassifierConfig([str(c) for c in class_names])
    options = ({"convert_to": "neuralnetwork"} if neural_network else
               {"convert_to": "mlprogram", "compute_precision": PRECISIONS[precision](ct),
                "minimum_deployment_target": getattr(ct.target, target)})
    with quiet():
        mlmodel = ct.convert(model, inputs=[image], classifier_config=labels, **options)
        if graph_name != "image":
            spec = mlmodel.get_spec()
            ct.utils.rename_feature(spec, graph_name, "image")
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    mlmodel.author, mlmodel.license, mlmodel.version = author, license, version
    mlmodel.short_description = description
    spec = mlmodel.get_spec()
    mlmodel.input_description["image"] = input_description or (
        f"{shape[1]}x{shape[0]} {'grayscale' if shape[-1] == 1 else 'RGB'} image, 0-255 pixels")
    for out in spec.description.output:
        kind = "the most likely class" if out.type.WhichOneof("Type") == "stringType" else "probability of each class"
        mlmodel.output_description[out.name] = output_description if output_description and kind.startswith("the") else kind
    mlmodel.user_defined_metadata["keras_model"] = model.name
    return mlmodel


def load(path):
    """Open a saved .mlpackage or .mlmodel (without compiling it, so this works on Linux)."""
    ct = import_coremltools()
    path = Path(path)
    if not path.exists():
        raise CoreMLError(f"{path} does not exist. Save a converted model with mlmodel.save(path) first.")
    if path.is_dir() and not (path / "Manifest.json").is_file():
        raise CoreMLError(f"{path} is a folder but not a Core ML package (no Manifest.json in it)")
    try:
        with quiet():
            mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as e:  # protobuf parse errors and friends
        raise CoreMLError(f"{path} is not a Core ML model ({type(e).__name__}: {str(e)[:120]}). "
                          "Pass a .mlpackage folder or an .mlmodel file that coremltools saved.") from e
    if not mlmodel.get_spec().description.input:  # an empty file parses as an empty spec
        raise CoreMLError(f"{path} is not a Core ML model (it describes no input: empty or truncated). "
                          "Pass a .mlpackage folder or an .mlmodel file that coremltools saved.")
    return mlmodel


def file_bytes(path) -> int:
    """Size on disk of a Core ML model: the .mlmodel file, or every file of the .mlpackage folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compute_units(path_or_model) -> dict:
    """Which of Apple's compute units a Core ML file can run on, and why. An ML program computing in
    float16 can run on the Neural Engine, the GPU and the CPU; one computing in float32 on the GPU and
    CPU only (the Neural Engine computes in float16), whatever the app asks for (coremltools's
    "Typed Execution", TYPED_EXECUTION). A NeuralNetwork .mlmodel can use all three (float16 on the GPU
    and Neural Engine). Returns {"format", "precision", "units", "source"}."""
    mlmodel = load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    kind = mlmodel.get_spec().WhichOneof("Type")
    if kind != "mlProgram":
        return {"format": kind, "precision": "float16 on GPU and Neural Engine, float32 on CPU",
                "units": ["CPU", "GPU", "Neural Engine"], "source": TYPED_EXECUTION}
    from coremltools.converters.mil.mil import types

    dtypes = {types.builtin_to_string(op.outputs[0].dtype) for op in _program(mlmodel).functions["main"].operations
              if op.op_type in WEIGHT_OPS}
    precision = "float16" if dtypes == {"fp16"} else "float32" if dtypes <= {"fp32"} else "mixed"
    units = ["CPU", "GPU", "Neural Engine"] if precision == "float16" else ["CPU", "GPU"]
    return {"format": kind, "precision": precision, "units": units, "source": TYPED_EXECUTION}


def verify_spec(path, *, image_size, grayscale: bool, class_names, metadata: dict | None = None,
                sizes=None) -> dict:
    """Check a saved Core ML classifier: image input of the right size and colour space, the class
    labels, and metadata (author, license, short_description, version...); with `sizes`, that the
    input accepts exactly image_size and those other (height, width) sizes (EnumeratedShapes). Raises
    CoreMLError at the first mismatch; returns what it checked, check -> what the file holds ("sizes":
    the (height, width) the input accepts; a range is {"height": (low, high), "width": ...}, high -1 for
    no limit)."""
    mlmodel = load(path)
    spec = mlmodel.get_spec()
    found = {"format": spec.WhichOneof("Type"), "spec_version": spec.specificationVersion}
    inputs = spec.description.input
    if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "imageType":
        raise CoreMLError(f"expected one image input, found {[i.type.WhichOneof('Type') for i in inputs]}")
    image = inputs[0].type.imageType
    colour = {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}.get(image.colorSpace, str(image.colorSpace))
    height, width = image_size
    if (image.height, image.width) != (height, width):
        raise CoreMLError(f"image input is {image.width}x{image.height}, expected {width}x{height}")
    if colour != ("GRAYSCALE" if grayscale else "RGB"):
        raise CoreMLError(f"image input is {colour}, expected {'GRAYSCALE' if grayscale else 'RGB'}")
    found["input"] = f"{inputs[0].name}: image {image.width}x{image.height} {colour}"
    flexibility = image.WhichOneof("SizeFlexibility")
    if flexibility == "enumeratedSizes":
        found["sizes"] = [(s.height, s.width) for s in image.enumeratedSizes.sizes]
    elif flexibility == "imageSizeRange":
        r = image.imageSizeRange
        found["sizes"] = {"height": (r.heightRange.lowerBound, r.heightRange.upperBound),
                          "width": (r.widthRange.lowerBound, r.widthRange.upperBound)}
    else:
        found["sizes"] = [(image.height, image.width)]
    if sizes is not None:
        want = sorted({(height, width), *((int(h), int(w)) for h, w in sizes)})
        if not isinstance(found["sizes"], list) or sorted(found["sizes"]) != want:
            raise CoreMLError(f"image input accepts {found['sizes']}, expected the sizes {want}")
    kind = spec.WhichOneof("Type")
    holder = spec.mlProgram if kind == "mlProgram" else getattr(spec, kind)
    if kind == "mlProgram":  # an ML program keeps its labels in the classify op's class list
        labels = _program_labels(mlmodel)
    else:
        labels = list(holder.stringClassLabels.vector)
    if labels != [str(c) for c in class_names]:
        raise CoreMLError(f"class labels are {labels}, expected {list(class_names)}")
    found["labels"] = labels
    found["outputs"] = [o.name for o in spec.description.output]
    meta = spec.description.metadata
    stored = {"author": meta.author, "license": meta.license, "short_description": meta.shortDescription,
              "version": meta.versionString, **dict(meta.userDefined)}
    for key, want in (metadata or {}).items():
        if stored.get(key) != want:
            raise CoreMLError(f"metadata {key} is {stored.get(key)!r}, expected {want!r}")
    found["metadata"] = {k: stored[k] for k in (metadata or {})}
    descriptions = {f.name: f.shortDescription for f in (*spec.description.input, *spec.description.output)}
    if not all(descriptions.values()):
        raise CoreMLError(f"features without a description: {[k for k, v in descriptions.items() if not v]}")
    found["descriptions"] = descriptions
    return found


def _program_labels(mlmodel) -> list[str]:
    """The class labels of an ML program: the list given to its classify op."""
    main = mlmodel.get_spec().mlProgram.functions["main"]
    for op in main.block_specializations[main.opset].operations:
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []


def _program(mlmodel):
    """The model's MIL program (its ops and weights), read from the file."""
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise CoreMLError("weights are read from ML programs (.mlpackage); this is a "
                          f"{spec.WhichOneof('Type')} (.mlmodel) file")
    with quiet():
        return milproto_load(spec, spec.specificationVersion, mlmodel.weights_dir)


def _value(var) -> np.ndarray:
    """A weight as float32: a constant, or a compressed weight (quantized, palettized) expanded back."""
    if var.val is not None:
        return np.asarray(var.val, dtype=np.float32)
    op = var.op
    if op.op_type.startswith("constexpr_"):
        return np.asarray(op.materialized_val_inference(), dtype=np.float32)
    raise CoreMLError(f"{var.name} is computed by a {op.op_type} op, not stored")


LAYOUT_OPS = ("transpose", "reshape", "squeeze", "expand_dims")  # move values, compute nothing
AFFINE_OPS = ("batch_norm", "mul", "add", "sub", "real_div")  # what an unfolded batch norm becomes


def _is_constant(var) -> bool:
    return var.val is not None or (var.op is not None and var.op.op_type.startswith("constexpr_"))


def _affine_after(op, channels: int) -> bool:
    """True when the op's output (past layout-only ops) goes into a batch norm left as its own ops:
    a batch_norm op, or a mul / add / sub / real_div with a constant of one value per channel.
    Where the converter folded the batch norm into the op, what follows is the next layer's op
    (an activation, a residual add, a pooling), and scalar constants (hard-swish's +3) do not count."""
    var = op.outputs[0]
    while len(var.child_ops) == 1 and var.child_ops[0].op_type in LAYOUT_OPS:
        var = var.child_ops[0].outputs[0]
    for child in var.child_ops:
        if child.op_type == "batch_norm":
            return True
        if child.op_type in AFFINE_OPS:
            others = [v for k, v in child.inputs.items() if k in ("x", "y") and v is not var]
            if any(_is_constant(v) and int(np.prod(v.shape)) == channels for v in others):
                return True
    return False


def _decompressed_ops(mlmodel) -> dict:
    """The ops of the model with every compressed weight expanded to a constant, by name."""
    import coremltools.optimize.coreml as cto

    with quiet():
        plain = cto.decompress_weights(mlmodel)
    return {op.name: op for op in _program(plain).functions["main"].operations}


def weights_from_mlpackage(path_or_model) -> list[dict]:
    """The weights of every conv / dense op of an ML program, in order, dequantized to float32:
    [{"op": "conv", "name": ..., "weight": array, "bias": array or None, "stored_as": "const" or the
    constexpr op that expands it, "affine_after": whether a batch norm follows as separate ops}].
    Core ML's layout: conv (out, in, kh, kw), dense (out, in)."""
    mlmodel = load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    found, decompressed = [], None
    for op in _program(mlmodel).functions["main"].operations:
        if op.op_type not in WEIGHT_OPS:
            continue
        name = "y" if op.op_type == "matmul" else "weight"
        var = op.inputs.get(name)
        if var is None or not _is_constant(var):
            continue  # a matmul of two activations, not a layer
        if var.val is None and any(v.val is None for v in var.op.inputs.values() if hasattr(v, "val")):
            # chained constexpr ops (a table with per-channel scales): let coremltools expand them all
            decompressed = decompressed or _decompressed_ops(mlmodel)
            weight = np.asarray(decompressed[op.name].inputs[name].val, dtype=np.float32)
        else:
            weight = _value(var)
        if op.op_type == "matmul":  # TF's MatMul(x, kernel): kernel (in, out), maybe transposed
            weight = weight if op.inputs["transpose_y"].val else weight.T
        bias = op.inputs.get("bias")
        found.append({"op": op.op_type, "name": op.name, "weight": weight,
                      "bias": None if bias is None else _value(bias), "stored_as": var.op.op_type,
                      "affine_after": _affine_after(op, len(weight))})
    return found


NN_LAYOUT = ("permute", "reshape", "reshapeStatic", "squeeze", "expandDims", "transpose", "flatten")
NN_AFFINE = ("batchnorm", "scale", "bias")
NN_ELEMENTWISE = ("multiply", "add", "multiplyBroadcastable", "addBroadcastable", "subtractBroadcastable")


def _nn_layers(spec):
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        raise CoreMLError(f"expected a NeuralNetwork .mlmodel, found {kind}")
    return getattr(spec, kind).layers


def weights_from_mlmodel(path_or_model) -> list[dict]:
    """The weights of every convolution / innerProduct layer of a NeuralNetwork .mlmodel, in order,
    dequantized to float32 (by coremltools's own decoder), in the same form as weights_from_mlpackage."""
    import_coremltools()
    from coremltools.models.neural_network import quantization_utils

    mlmodel = load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    spec = type(mlmodel.get_spec())()
    spec.CopyFrom(mlmodel.get_spec())
    layers = _nn_layers(spec)
    stored = {layer.name: _nn_stored_as(layer) for layer in layers}
    with quiet(), contextlib.redirect_stdout(io.StringIO()):  # it prints a line per layer
        quantization_utils._dequantize_nn_spec(getattr(spec, spec.WhichOneof("Type")))
    producers = {out: layer for layer in layers for out in layer.output}
    consumers = {}
    for layer in layers:
        for name in layer.input:
            consumers.setdefault(name, []).append(layer)
    found = []
    for layer in layers:
        kind = layer.WhichOneof("layer")
        if kind == "convolution":
            c = layer.convolution
            shape = (c.outputChannels, c.kernelChannels, *c.kernelSize)
        elif kind == "innerProduct":
            c = layer.innerProduct
            shape = (c.outputChannels, c.inputChannels)
        elif kind == "batchedMatmul" and layer.batchedMatmul.weightMatrixFirstDimension:
            c = layer.batchedMatmul  # a (in, out) matrix, stored transposed: (out, in)
            shape = (c.weightMatrixSecondDimension, c.weightMatrixFirstDimension)
        else:
            continue
        weight = np.asarray(c.weights.floatValue, np.float32).reshape(shape) if c.weights.floatValue else \
            np.frombuffer(c.weights.float16Value, np.float16).astype(np.float32).reshape(shape)
        bias = None
        if c.hasBias:
            bias = np.asarray(c.bias.floatValue, np.float32) if c.bias.floatValue else \
                np.frombuffer(c.bias.float16Value, np.float16).astype(np.float32)
        found.append({"op": kind, "name": layer.name, "weight": weight, "bias": bias,
                      "stored_as": stored[layer.name],
                      "affine_after": _nn_affine_after(layer, producers, consumers)})
    return found


def _nn_stored_as(layer) -> str:
    kind = layer.WhichOneof("layer")
    if kind not in ("convolution", "innerProduct", "batchedMatmul"):
        return ""
    q = getattr(layer, kind).weights.quantization
    return q.WhichOneof("QuantizationType") or "float"


def _nn_affine_after(layer, producers, consumers) -> bool:
    """As _affine_after, for a NeuralNetwork: is the layer followed (past layout layers) by a batch norm
    left as its own layer (batchnorm, scale, bias, or an elementwise op with a loaded constant)?"""
    out = layer.output[0]
    while len(consumers.get(out, [])) == 1 and consumers[out][0].WhichOneof("layer") in NN_LAYOUT:
        out = consumers[out][0].output[0]
    for child in consumers.get(out, []):
        kind = child.WhichOneof("layer")
        if kind in NN_AFFINE:
            return True
        if kind in NN_ELEMENTWISE and any(
                name in producers and producers[name].WhichOneof("layer") in ("loadConstant", "loadConstantND")
                for name in child.input if name != out):
            return True
    return False


def stored_weights(path_or_model) -> list[dict]:
    """weights_from_mlpackage for an ML program, weights_from_mlmodel for a NeuralNetwork."""
    mlmodel = load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    if mlmodel.get_spec().WhichOneof("Type") == "mlProgram":
        return weights_from_mlpackage(mlmodel)
    return weights_from_mlmodel(mlmodel)


def _kernel_layers(model) -> list:
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, kinds)]


def _next_batch_norm(model, layer):
    """The BatchNormalization layer that directly follows `layer`, if any (Core ML folds it in)."""
    import keras

    for node in layer._outbound_nodes:
        op = node.operation
        if isinstance(op, keras.layers.BatchNormalization) and len(layer._outbound_nodes) == 1:
            return op
    return None


def keras_weights(model, fold_batch_norm: bool = True) -> list[dict]:
    """The Keras model's kernels in Core ML's layout and order, with each following BatchNormalization
    folded in (w * gamma / sqrt(var + eps), b * that + beta - mean * that), as Core ML's converter does."""
    import keras

    found = []
    for layer in _kernel_layers(model):
        kernel = np.asarray(layer.kernel, dtype=np.float64)
        bias = np.asarray(layer.bias, dtype=np.float64) if layer.use_bias else None
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, c, m) -> (c*m, 1, kh, kw)
            kh, kw, c, m = kernel.shape
            weight = kernel.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]
        elif isinstance(layer, keras.layers.Conv2D):  # (kh, kw, in, out) -> (out, in, kh, kw)
            weight = kernel.transpose(3, 2, 0, 1)
        else:  # Dense (in, out) -> (out, in)
            weight = kernel.T
        bn = _next_batch_norm(model, layer)
        if bn is not None and fold_batch_norm:
            gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
            beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
            factor = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
            weight = weight * factor.reshape(-1, *[1] * (weight.ndim - 1))
            bias = (0.0 if bias is None else bias) * factor + beta - np.asarray(bn.moving_mean) * factor
        found.append({"layer": layer.name, "weight": weight.astype(np.float32),
                      "bias": None if bias is None else np.asarray(bias, np.float32),
                      "batch_norm": bn if fold_batch_norm else None})
    return found


def _pairs(model, path_or_model) -> list[tuple[dict, dict]]:
    """Pair each Keras conv/dense layer with its Core ML op (same order), as Core ML stores it: with the
    next BatchNormalization folded in where the converter folded it. That is read from the program's
    structure (is the op followed by the batch norm's own ops?), never from the weights' values:
    compressed weights can be nearer the unfolded kernel even where the fold happened."""
    folded, plain = keras_weights(model), keras_weights(model, fold_batch_norm=False)
    theirs = stored_weights(path_or_model)
    if len(folded) != len(theirs):
        raise CoreMLError(f"Keras has {len(folded)} conv/dense layers, the Core ML file {len(theirs)} weight ops")
    pairs = []
    for f, p, c in zip(folded, plain, theirs):
        if f["weight"].shape != c["weight"].shape:
            raise CoreMLError(f"{f['layer']}: Keras {f['weight'].shape} vs Core ML {c['weight'].shape}")
        pairs.append((f if f["batch_norm"] is not None and not c["affine_after"] else p, c))
    return pairs


def compare_weights(model, path_or_model) -> dict:
    """Pair the Keras layers with the Core ML ops (same order, same shapes) and measure the largest
    difference of their weights. Raises CoreMLError when the two do not pair up."""
    worst, exact, tensors, folded = 0.0, True, 0, 0
    for k, c in _pairs(model, path_or_model):
        folded += k["batch_norm"] is not None
        pairs = [(k["weight"], c["weight"])]
        if k["bias"] is not None or c["bias"] is not None:
            zeros = np.zeros(len(k["weight"]), np.float32)
            pairs.append((zeros if k["bias"] is None else k["bias"], zeros if c["bias"] is None else c["bias"]))
        for a, b in pairs:
            worst = max(worst, float(np.abs(a - b).max()))
            exact &= bool(np.array_equal(a, b))
            tensors += 1
    return {"layers": len(_kernel_layers(model)), "tensors": tensors, "max_abs_difference": worst,
            "bit_exact": exact, "batch_norms_folded": folded}


def load_into_keras(model, path_or_model):
    """A copy of the Keras model running the Core ML file's weights (dequantized when compressed).

    Where Core ML folded a BatchNormalization into the layer before it, the copy gets the folded
    kernel and the BN becomes a plain bias (gamma 1, mean 0, variance 1 - eps, beta the folded bias).
    """
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    layers = {layer.name: layer for layer in _kernel_layers(clone)}
    for k, c in _pairs(clone, path_or_model):
        layer, weight = layers[k["layer"]], c["weight"]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, ch, m = layer.kernel.shape
            kernel = weight[:, 0].transpose(1, 2, 0).reshape(kh, kw, ch, m)
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = weight.transpose(2, 3, 1, 0)
        else:
            kernel = weight.T
        layer.kernel.assign(kernel)
        bias = c["bias"] if c["bias"] is not None else np.zeros(len(weight), np.float32)
        bn = k["batch_norm"]
        if bn is not None:  # folded: the layer's bias moves into the BN, which becomes a plain shift
            if layer.use_bias:
                layer.bias.assign(np.zeros_like(bias))
            if bn.scale:
                bn.gamma.assign(np.ones_like(bias))
            bn.moving_mean.assign(np.zeros_like(bias))
            bn.moving_variance.assign(np.full_like(bias, 1 - bn.epsilon))
            if bn.center:
                bn.beta.assign(bias)
            elif np.any(bias):
                raise CoreMLError(f"{bn.name} has no beta to hold the folded bias")
        elif layer.use_bias:
            layer.bias.assign(bias)
    return clone


def float16_copy(model):
    """A copy of a Keras model that keeps its weights and computes in float16 (dtype policy "float16",
    every layer): on Linux, an estimate of what a float16 ML program computes on the GPU or the Neural
    Engine. Only an estimate: Core ML may sum in another order, or accumulate in more bits."""
    import keras

    copy = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float16"}))
    copy.set_weights(model.get_weights())
    return copy


def kmeans_lut(weight, bits: int, iterations: int = 30):
    """k-means in one dimension: the 2**bits values (a lookup table) that best stand for the weights,
    and the index of each weight's nearest value. Returns (lut, indices) as coremltools's custom
    palettization wants them. Starts from quantiles and an even grid; each step moves every value to
    the mean of the weights nearest to it (Lloyd's algorithm, on sorted weights: fast in NumPy)."""
    flat = np.asarray(weight, dtype=np.float64).ravel()
    ordered = np.sort(flat)
    sums = np.concatenate([[0.0], np.cumsum(ordered)])
    k = 2 ** bits
    lut = np.sort(np.concatenate([np.quantile(ordered, (np.arange(k - k // 2) + 0.5) / (k - k // 2)),
                                  np.linspace(ordered[0], ordered[-1], k // 2)]))  # dense middle and tails
    for _ in range(iterations):
        edges = np.searchsorted(ordered, (lut[1:] + lut[:-1]) / 2)  # where each cluster starts
        starts, ends = np.concatenate([[0], edges]), np.concatenate([edges, [len(ordered)]])
        counts = ends - starts
        means = np.where(counts > 0, (sums[ends] - sums[starts]) / np.maximum(counts, 1), lut)
        if np.allclose(means, lut):
            break
        lut = np.sort(means)
    indices = np.searchsorted((lut[1:] + lut[:-1]) / 2, flat)
    return lut.astype(np.float32), indices.astype(np.int64)


def quantize(mlmodel, name: str, weight_threshold: int = 2048):
    """Compress an ML program's weights with coremltools.optimize.coreml (see COMPRESSIONS): "linear8"
    (int8, per channel), "linear4" (int4 per channel), "palette8/6/4/3/2/1" (a k-means lookup table of
    2**bits values per tensor, from kmeans_lut), "palette4_grouped" (a 16-value table per group of
    GROUP_SIZE output channels; weights whose channels do not fill the groups stay float),
    "palette4_grouped_scaled" (the same with per-channel scales),
    "prune50_palette4" (50% of the weights zeroed by magnitude, the others palettized at 4 bits). Tensors with fewer than
    weight_threshold values stay float."""
    import_coremltools()
    import coremltools.optimize.coreml as cto

    if name not in COMPRESSIONS:
        raise CoreMLError(f"quantization must be one of {', '.join(COMPRESSIONS)}, not {name!r}")
    kind, bits = COMPRESSIONS[name]
    if name in NEEDS_IOS18 and mlmodel.get_spec().specificationVersion < 9:
        raise CoreMLError(f"{name} needs an ML program for iOS 18 or later: convert(model, labels, target='iOS18')")
    lut = functools.partial(kmeans_lut, bits=bits)
    try:
        with quiet():
            if kind == "linear":
                op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=f"int{bits}",
                                                 granularity="per_channel", weight_threshold=weight_threshold)
                return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
            if kind == "pruned":
                pruner = cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=weight_threshold)
                mlmodel = cto.prune_weights(mlmodel, cto.OptimizationConfig(global_config=pruner))
            grouped = {"granularity": "per_grouped_channel", "group_size": GROUP_SIZE,
                       "enable_per_channel_scale": kind == "grouped_scaled"} if kind.startswith("grouped") else {}
            op = cto.OpPalettizerConfig(mode="custom", lut_function=lut, weight_threshold=weight_threshold, **grouped)
            # Grouped tables: coremltools 9 skips a weight whose output channels do not split into groups of
            # GROUP_SIZE, but with enable_per_channel_scale it has by then divided that weight by its scales in
            # place, and the file keeps the divided weight: wrong results. Such weights are left float here.
            ungrouped = {w["name"]: None for w in (weights_from_mlpackage(mlmodel) if grouped else [])
                         if len(w["weight"]) % GROUP_SIZE}
            return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op, op_name_configs=ungrouped),
                                         **({"joint_compression": True} if kind == "pruned" else {}))
    except ValueError as e:
        raise CoreMLError(f"coremltools could not apply {name}: {str(e)[:200]}") from None


def lookup_tables(path_or_model) -> dict:
    """What the lookup tables of a palettized ML program cost: {"tensors": weight tensors stored as tables
    (constexpr_lut_to_dense), "weights": how many weights they expand to, "table_entries": how many values
    all their tables hold}. One table per tensor holds 2**bits values; grouped tables one per group of
    output channels; coremltools 9's palettization with per-channel scales a table per group and per
    kernel position (input channel, row, column), which is as many table entries as weights."""
    mlmodel = load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    tensors = weights = entries = 0
    for op in _program(mlmodel).functions["main"].operations:
        if op.op_type == "constexpr_lut_to_dense":
            tensors += 1
            weights += int(np.prod(op.outputs[0].shape))
            entries += int(np.prod(op.lut.shape))
    return {"tensors": tensors, "weights": weights, "table_entries": entries}


def quantize_activations(mlmodel, images, weight_threshold: int = 2048):
    """W8A8: int8 weights and int8 activations (coremltools.optimize.coreml.linear_quantize_activations,
    then linear_quantize_weights; iOS 17 and later). The activation ranges are calibrated by running the
    model on `images` (PIL images), which only Core ML's runtime can do: on macOS. Elsewhere this raises
    CoreMLError, and the book cannot measure W8A8 on Linux."""
    import_coremltools()
    import coremltools.optimize.coreml as cto

    if not can_predict():
        raise CoreMLError("activation quantization (W8A8) calibrates by running the model, and Core ML runs "
                          "models only on macOS: run this on a Mac (weight-only compression works anywhere)")
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", weight_threshold=weight_threshold))
    with quiet():
        activations = cto.linear_quantize_activations(mlmodel, config, [{"image": im} for im in images])
        return cto.linear_quantize_weights(activations, config)


# ---- The .mlmodel NeuralNetwork route of WWDC 2018 (session 709) --------------------------------------

def quantize_neural_network(mlmodel, bits: int, mode: str = "linear"):
    """Quantize a NeuralNetwork .mlmodel's weights with coremltools's original API, as WWDC 2018 session
    709 showed it (coremltools.models.neural_network.quantization_utils.quantize_weights): "linear" (per
    channel, 8/4/2... bits) or "kmeans" (a lookup table of 2**bits values per layer; the k-means here is
    kmeans_lut, since coremltools's own needs scikit-learn). Returns the quantized model."""
    import_coremltools()
    from coremltools.models.neural_network import quantization_utils

    if mlmodel.get_spec().WhichOneof("Type") not in ("neuralNetwork", "neuralNetworkClassifier",
                                                      "neuralNetworkRegressor"):
        raise CoreMLError("quantize_neural_network takes a NeuralNetwork .mlmodel "
                          "(convert(..., neural_network=True)); for an ML program use quantize()")
    if mode not in ("linear", "kmeans") or bits not in range(1, 9):
        raise CoreMLError(f"mode must be 'linear' or 'kmeans' and bits 1-8, not {mode!r}, {bits!r}")
    options = ({"quantization_mode": "linear"} if mode == "linear" else
               {"quantization_mode": "custom_lut",
                "lut_function": lambda nbits, w: (lambda t: (t[0], t[1].astype(np.uint8)))(kmeans_lut(w, nbits))})
    with quiet(), contextlib.redirect_stdout(io.StringIO()):  # it prints a line per layer
        return quantization_utils.quantize_weights(mlmodel, bits, **options)


def compare_models(full_precision, quantized, sample_data):
    """coremltools's compare_models (the WWDC 2018 check): runs both models on sample_data and prints how
    often their top-1 classes agree. It runs the models, so macOS only; elsewhere CoreMLError, and the
    book measures agreement by loading the dequantized weights into Keras (load_into_keras)."""
    import_coremltools()
    from coremltools.models.neural_network import quantization_utils

    if not can_predict():
        raise CoreMLError("compare_models runs both models, and Core ML runs models only on macOS; on Linux "
                          "measure agreement with load_into_keras(model, file) instead")
    return quantization_utils.compare_models(full_precision, quantized, sample_data)


# ---- A custom layer: a TensorFlow op that coremltools has no translation for -----------------------

def _keras_layer():
    import keras

    @keras.saving.register_keras_serializable("book_utils")
    class EdgeOrientation(keras.layers.Layer):
        """Sobel gradients of a grey image -> (edge strength, edge direction in radians, -pi..pi).

        The direction is arctan2(gy, gx): TensorFlow's Atan2 op, which coremltools cannot convert.
        """

        def call(self, images):
            from keras import ops

            grey = ops.mean(images, axis=-1, keepdims=True) / 255.0
            sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
            kernels = np.stack([sobel_x, sobel_x.T], axis=-1)[:, :, None, :]  # (3, 3, 1, 2)
            g = ops.conv(grey, kernels, padding="same")
            gx, gy = g[..., :1], g[..., 1:]
            return ops.concatenate([ops.sqrt(gx * gx + gy * gy), ops.arctan2(gy, gx)], axis=-1)

    return EdgeOrientation


def edge_orientation_layer():
    """A new EdgeOrientation layer (the chapter's example of a layer Core ML does not know)."""
    return _keras_layer()()


def atan2_to_mil(context, node):
    """Translate TensorFlow's Atan2(y, x) into ops Core ML has: atan(y / x) moved to the right
    quadrant (plus pi where x < 0 and y >= 0, minus pi where x < 0 and y < 0; x == 0 gives +-pi/2)."""
    from coremltools.converters.mil import Builder as mb

    y, x = context[node.inputs[0]], context[node.inputs[1]]
    tiny = np.float32(1e-12)
    safe_x = mb.select(cond=mb.equal(x=x, y=np.float32(0)), a=tiny, b=x)
    base = mb.atan(x=mb.real_div(x=y, y=safe_x))
    half_turn = mb.select(cond=mb.greater_equal(x=y, y=np.float32(0)), a=np.float32(np.pi), b=np.float32(-np.pi))
    shift = mb.select(cond=mb.less(x=x, y=np.float32(0)), a=half_turn, b=np.float32(0))
    context.add(node.name, mb.add(x=base, y=shift, name=node.name))


@contextlib.contextmanager
def registered_tf_op(name: str, conversion):
    """Register a conversion function for a TensorFlow op for the duration of a `with` block."""
    import_coremltools()
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY, register_tf_op

    before = _TF_OPS_REGISTRY.get(name)
    def translate(context, node):
        return conversion(context, node)

    translate.__name__ = name  # register_tf_op files a function under its own name
    register_tf_op(translate, override=True)
    try:
        yield
    finally:
        if before is None:
            _TF_OPS_REGISTRY.pop(name, None)
        else:
            _TF_OPS_REGISTRY[name] = before
