"""What the Coral Edge TPU compiler would do with a .tflite model, read from the file alone.

The Edge TPU compiler (edgetpu_compiler, last release 16.0) runs only on Linux x86-64 and is
not needed here: report() reads the model's flatbuffer, without running it, and checks each
operator of the main subgraph, in execution order, for what the compiler requires:

- full integer quantization: 8-bit tensors only (int32 only for constants: biases, shapes, axes);
- static shapes: no dimension only known at run time (-1 in a tensor's shape_signature);
- tensor rank: 1-, 2- or 3-dimensional; beyond 3 dimensions only the 3 innermost may exceed 1;
- model parameters (weights, bias tensors) constant at compile time;
- an operator on Coral's list of supported operations, within the table's known limitations
  (no fused activation in pooling and concatenation, MEAN and PAD along x/y only, SOFTMAX on a
  1-D input of at most 16,000 elements, STRIDED_SLICE with unit strides and no ellipsis or
  new-axis mask, SQUEEZE of leading 1s only, RESIZE_* and FULLY_CONNECTED shapes);
- an operator version the compiler is known to accept (newer converters emit newer versions).

EdgeTPUReport.memory() adds up the parameters of the ops mapped to the Edge TPU against its on-chip
memory (about 8 MB, part of it taken by the compiled executable first): what does not fit is
streamed from the host at every inference, which the compiler's log reports as "Off-chip memory
used for streaming uncached model parameters".

The compiler maps operators to the Edge TPU until the first one it cannot map; that one and
everything after it run on the CPU, even operators the Edge TPU could run. An operator version
the compiler does not know at all ("Didn't find op for builtin opcode ... version ...") makes
it refuse the whole model. This is a model of the compiler, not the compiler: compile the file
on a Linux machine for the final word (it may also leave a supported op on the CPU for size or
precision reasons, listed in its log).

    >>> r = report("model_int8.tflite")
    >>> print(r)            # one row per operator, then the verdict
    >>> r.cpu_ops           # [] when everything would run on the Edge TPU

Where the real tools exist, compile() runs edgetpu_compiler and runner() runs a model on the
Edge TPU through its runtime (libedgetpu); without them they say so, and runner() falls back to
LiteRT on the CPU.

Sources:
- Coral, "TensorFlow models on the Edge TPU", https://coral.ai/docs/edgetpu/models-intro/
  (model requirements: https://coral.ai/docs/edgetpu/models-intro/#model-requirements; supported
  operations: https://coral.ai/docs/edgetpu/models-intro/#supported-operations). What was read of it
  here: its model requirements and the known-limitations column, from a verbatim copy of an earlier
  version of the page (github.com/dgist-datalab/Datalab_Intern, Edge_TPU/convert_model_for_Edge_TPU.md),
  and the list of operations for runtime 14, which compiler 16.0 targets, from the copy of that table
  on Axis's ARTPEC-7 page (its accelerator is the Edge TPU),
  https://developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/, with
  google-coral/edgetpu CHANGES.md (runtime 13 added ExpandDims, Pack, Quantize, Sum and TransposeConv).
  The live page's table could not be read from this machine (no network; the stored copies of the page
  end before the table), so RSQRT and SQUARED_DIFFERENCE, which no copy read here lists, stay off the
  list: an op reported as CPU-only that the compiler maps is the safe error. Check the live page.
- Operator versions: see OP_VERSIONS below; each figure says where it comes from.

The compiler-16 op-version pitfall: compiler 16.0 (2021) knows only the operator versions that
existed then; a newer TensorFlow may write a newer version of an op (CONV_2D 6, QUANTIZE 3,
TRANSPOSE_CONV 4, EXP 2 are known cases, see OP_VERSIONS), and then the compiler stops with
"Didn't find op for builtin opcode ... version ..." and compiles nothing. The versions depend on
what the converter is asked for, so convert with the plain full-integer settings that tflite.convert
uses: optimizations = [tf.lite.Optimize.DEFAULT], a representative dataset,
supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] only (not the 16x8 ops set: its int16
activations cannot run on the Edge TPU anyway), integer input and output (inference_input_type and
inference_output_type tf.int8 or tf.uint8: no float QUANTIZE/DEQUANTIZE at the ends), and a fixed
batch of 1. With those, TensorFlow 2.21 wrote only versions listed as accepted below for the models
of tests/test_edgetpu.py (float input and output add a float QUANTIZE and a DEQUANTIZE; the 16x8 set
int16 tensors); the report shows each op's version: check it before compiling.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

COMPILER = "16.0"
SUPPORTED_OPS_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

# Coral's supported operations, as TFLite builtin operator names (Coral writes Conv2d for
# CONV_2D, and so on). The table's limits (for example "no fused activation" for the pooling
# ops, "1-D input, at most 16,000 elements" for Softmax) are not checked here.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC",
    "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",  # LSTM: "unidirectional LSTM only"
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE_CONV",
    # Transpose: compiler 16.0 logs it as "otherwise supported, but not mapped due to some
    # unspecified limitation" (google-coral/edgetpu#433), so it knows the op; compiler 14
    # called it "Operation not supported" (#242).
    "TRANSPOSE",
    "edgetpu-custom-op",  # the op an already compiled model runs on the Edge TPU
})
# Not listed, so reported as running on the CPU: RSQRT and SQUARED_DIFFERENCE (in no copy of
# Coral's table that could be read here; see Sources), and LEAKY_RELU and HARD_SWISH, which Coral
# does not support (google-coral/edgetpu#272, #165).

# name: (highest version known to be accepted, lowest version compiler 16.0 is known to
# refuse or None, where the figures come from).
# Unless a row says otherwise, the first figure is the highest version of the op that
# TensorFlow 1.15 could write: the version whose minimum TFLite runtime is at most 1.15.0 in
# TensorFlow's tensorflow/lite/tools/versioning/runtime_version.cc. Coral recommended TF 1.15
# for full-integer conversion for its compilers (maintainer, google-coral/edgetpu#45), and
# supports full-integer post-training quantized models since compiler 2.0 (CHANGES.md).
# Higher versions are not known to be refused either: they are flagged, conservatively.
_TF115 = "TF 1.15 (runtime_version.cc)"
OP_VERSIONS: dict[str, tuple[int, int | None, str]] = {
    "ADD": (2, None, _TF115),
    "AVERAGE_POOL_2D": (2, None, _TF115),
    "CONCATENATION": (2, None, _TF115),
    "CONV_2D": (3, 6, _TF115 + "; version 6 refused by compiler 16.0 (google-coral/edgetpu#631, "
                "TF 2.9.1); version 5 was refused by compiler 2.1 (#210), unknown for 16.0"),
    "DEPTHWISE_CONV_2D": (3, None, _TF115),
    "EXPAND_DIMS": (1, None, _TF115),
    "FULLY_CONNECTED": (4, None, _TF115),
    "L2_NORMALIZATION": (2, None, _TF115),
    "LOGISTIC": (2, None, _TF115),
    "LSTM": (3, None, _TF115),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (2, None, _TF115),
    "MAXIMUM": (2, None, _TF115),
    "MAX_POOL_2D": (2, None, _TF115),
    "MEAN": (2, None, _TF115),
    "MINIMUM": (2, None, _TF115),
    "MUL": (3, None, _TF115),
    "PACK": (2, None, _TF115),
    "PAD": (2, None, _TF115),
    "PRELU": (1, None, _TF115),
    "QUANTIZE": (2, 3, _TF115 + "; version 3 refused by compiler 16.0 (google-coral/edgetpu#879)"),
    "REDUCE_MAX": (2, None, _TF115),
    "REDUCE_MIN": (2, None, _TF115),
    "RELU": (1, None, _TF115 + "; version 2 was refused by compiler 2.0 (#34), unknown for 16.0"),
    "RELU6": (2, None, _TF115),
    "RELU_N1_TO_1": (1, None, _TF115),
    "RESHAPE": (1, None, _TF115),
    "RESIZE_BILINEAR": (2, None, _TF115 + "; version 3 was refused by compiler 2.0 (#45)"),
    "RESIZE_NEAREST_NEIGHBOR": (2, None, _TF115),
    "SLICE": (3, None, _TF115),
    "SOFTMAX": (2, None, _TF115),
    "SPACE_TO_DEPTH": (2, None, _TF115),
    "SPLIT": (3, None, _TF115),
    "SQUEEZE": (1, None, _TF115),
    "STRIDED_SLICE": (2, None, _TF115),
    "SUB": (2, None, _TF115),
    "SUM": (2, None, _TF115),
    "TANH": (2, None, _TF115),
    "TRANSPOSE": (3, None, _TF115),
    "TRANSPOSE_CONV": (3, 4, "compiler 16.0 mapped it in a TF 2.10 int8 model (google-coral/edgetpu"
                       "#686; TF 2.10 writes at most version 3); version 4 refused by 16.0 (#845)"),
    # Not supported, but an unknown version still makes the compiler refuse the whole model.
    "EXP": (1, 2, _TF115 + "; version 2 refused by compiler 16.0 (google-coral/libedgetpu#71, TF 2.16)"),
}
# Ops on Coral's list with no row here: only version 1 is assumed to be accepted.

# The converter settings that avoid the compiler-16 op-version pitfall (see the module's docstring), as
# (setting, value, why); tflite.convert(model, "int8", representative=..., batch_size=1) uses them all.
CONVERTER_SETTINGS = (
    ("converter.optimizations", "[tf.lite.Optimize.DEFAULT]", "quantize the weights"),
    ("converter.representative_dataset", "a few hundred training images",
     "calibrate every activation: full integer, no hybrid float/int8 ops (their newer versions)"),
    ("converter.target_spec.supported_ops", "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]",
     "int8 kernels only; not the 16x8 set, whose int16 activations the Edge TPU cannot run"),
    ("converter.inference_input_type, inference_output_type", "tf.int8 (or tf.uint8)",
     "no float QUANTIZE and DEQUANTIZE at the ends"),
    ("input signature", "batch size 1", "every shape static"),
)

_FULL_INT8_FIX = (
    "the Edge TPU runs only fully integer-quantized models (int8/uint8 tensors). Convert with a "
    "representative dataset and converter.optimizations = [tf.lite.Optimize.DEFAULT], "
    "converter.representative_dataset = ..., converter.target_spec.supported_ops = "
    "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], converter.inference_input_type = tf.int8 and "
    "converter.inference_output_type = tf.int8")
_STATIC_FIX = ("the Edge TPU needs every shape fixed at compile time. Fix the batch size to 1 "
               "(keras.Input(shape, batch_size=1)) and make all other shapes static, then convert again")
_VERSION_FIX = ("convert with an older TensorFlow, or avoid the feature that needs the newer version "
                "(for example 16-bit activations or grouped convolutions), then check again")
_OK_DTYPES = {"int8", "uint8", "int32"}  # int32: only constants (biases, shapes, axes)
RANK_RULE = ("tensors are 1-, 2- or 3-dimensional; if a tensor has more than 3 dimensions, only the 3 "
             "innermost may have a size greater than 1")
# Which inputs of an op are its parameters (weights, bias), which must be constant at compile time.
PARAMETER_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                    "TRANSPOSE_CONV": (1, 3)}
# About 8 MB of on-chip SRAM caches parameter data; part of it first holds the compiled executable,
# so what is cached is at most this, and the rest is streamed from the host at every inference.
ON_CHIP_BYTES = 8 * 2**20


class EdgeTPUError(ValueError):
    """A file could not be read as a TensorFlow Lite model; the message says why and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: dtype, shape, and shape_signature (-1 marks a dimension known only at run time);
    constant: its values are stored in the file (weights, biases, shape operands), with their bytes
    and, for small integer constants (axes, paddings, strides), the values themselves."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    constant: bool = False
    nbytes: int = 0
    values: tuple[int, ...] | None = None
    index: int = -1  # position in the subgraph's tensor list

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape_signature))}]"


@dataclass(frozen=True)
class Reason:
    """Why an op cannot run on the Edge TPU. kind: "dtype", "dynamic", "op" or "version"."""

    kind: str
    short: str  # for the table
    message: str  # what is wrong and what to do
    refuses_model: bool = False  # the compiler would refuse the whole model, not just this op

    def __str__(self) -> str:
        return self.message


@dataclass
class OpInfo:
    """One operator in execution order, and the reasons it cannot run on the Edge TPU (none if it can)."""

    index: int
    name: str
    version: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    reasons: list[Reason] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # fused_activation, strided-slice masks, squeeze_dims

    @property
    def edgetpu(self) -> bool:
        """Whether the Edge TPU can run this op; after the split it runs on the CPU all the same."""
        return not self.reasons

    @property
    def reason(self) -> str:
        return "; ".join(r.message for r in self.reasons)


@dataclass
class EdgeTPUReport:
    """Every operator of a model's main subgraph, and where the Edge TPU compiler would split it."""

    path: str
    ops: list[OpInfo]

    @property
    def refused_by(self) -> OpInfo | None:
        """The first op whose version would make the compiler refuse the whole model, if any."""
        return next((op for op in self.ops if any(r.refuses_model for r in op.reasons)), None)

    @property
    def first_unsupported(self) -> OpInfo | None:
        return next((op for op in self.ops if not op.edgetpu), None)

    @property
    def tpu_ops(self) -> list[OpInfo]:
        """The ops mapped to the Edge TPU: all of them before the first unsupported op."""
        if self.refused_by:
            return []
        first = self.first_unsupported
        return self.ops if first is None else self.ops[:first.index]

    @property
    def cpu_ops(self) -> list[OpInfo]:
        return self.ops[len(self.tpu_ops):]

    def verdict(self) -> str:
        """One line: where the ops would run and, if not all on the Edge TPU, why."""
        n, cpu = len(self.ops), self.cpu_ops
        if not n:
            return "the model has no operators"
        if not cpu:
            return f"all {n} ops would run on the Edge TPU"
        refused = self.refused_by
        if refused:
            why = next(r for r in refused.reasons if r.refuses_model)
            return (f"the Edge TPU compiler {COMPILER} would refuse this model, so all {n} ops would run "
                    f"on the CPU: op {refused.index} {refused.name} {why}")
        first = self.first_unsupported
        if self.tpu_ops:
            where = (f"{_span(first.index, n - 1)} ({len(cpu)} of {n}) would run on the CPU, "
                     f"{_span(0, first.index - 1)} on the Edge TPU")
        else:
            where = f"all {n} ops would run on the CPU"
        return f"{where}: op {first.index} {first.name} {first.reason}"

    def table(self) -> str:
        """One row per op: index, name, version, tensors, where it would run, and why not on the Edge TPU."""
        rows = [("#", "op", "v", "inputs", "outputs", "runs on", "Edge TPU can run it")]
        tpu = {op.index for op in self.tpu_ops}
        for op in self.ops:
            status = "yes" if op.edgetpu else "no: " + ", ".join(r.short for r in op.reasons)
            rows.append((str(op.index), op.name, str(op.version), " ".join(map(str, op.inputs)),
                         " ".join(map(str, op.outputs)), "Edge TPU" if op.index in tpu else "CPU", status))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6] for r in rows]
        return "\n".join([f"{self.path}: {len(self.ops)} ops (Edge TPU compiler {COMPILER} rules)"] + lines)

    def memory(self) -> dict:
        """The parameters (constant tensors) of the ops mapped to the Edge TPU against its on-chip memory:
        about 8 MB caches them, less what the compiled executable takes first, so `cached_at_most` is an
        upper bound and `streamed_at_least` (read from the host at every inference: slower) a lower one."""
        params = {t.index: t.nbytes for op in self.tpu_ops for t in op.inputs if t.constant}
        n = sum(params.values())
        return {"parameter_bytes": n, "on_chip_bytes": ON_CHIP_BYTES, "cached_at_most": min(n, ON_CHIP_BYTES),
                "streamed_at_least": max(0, n - ON_CHIP_BYTES)}

    def __str__(self) -> str:
        m = self.memory()
        return (self.table() + f"\nparameters on the Edge TPU: {m['parameter_bytes']:,} bytes (on-chip memory "
                f"about {ON_CHIP_BYTES / 2**20:.0f} MiB; at least {m['streamed_at_least']:,} bytes would be streamed "
                "from the host)\n" + self.verdict())

    def summary(self) -> dict:
        """The verdict as plain values (for a results record): op counts, the first unsupported op and why."""
        first = self.refused_by or self.first_unsupported
        return {"ops": len(self.ops), "edgetpu_ops": len(self.tpu_ops), "cpu_ops": len(self.cpu_ops),
                "refused": self.refused_by is not None,
                "first_unsupported": None if first is None else {
                    "index": first.index, "name": first.name, "version": first.version,
                    "reasons": [r.kind for r in first.reasons]},
                "op_versions": {op.name: op.version for op in self.ops}, "verdict": self.verdict(),
                "parameter_bytes": self.memory()["parameter_bytes"]}


def report(model: str | os.PathLike | bytes, name: str | None = None) -> EdgeTPUReport:
    """Read a .tflite file (or its bytes) and check every operator against the Edge TPU's rules.

    name: what the report calls the model (default: the path, or "<tflite bytes>").
    """
    if isinstance(model, (bytes, bytearray)):
        name, data = name or "<tflite bytes>", bytes(model)
    else:
        path = Path(model)
        name = name or str(path)
        if path.is_dir():
            raise EdgeTPUError(f"{path} is a folder, not a .tflite file. If it is a SavedModel, convert it "
                               "with tf.lite.TFLiteConverter.from_saved_model(path) and check the result.")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist. Pass the path of a .tflite file written "
                                    "from converter.convert().")
        data = path.read_bytes()
    _check_header(name, data)
    try:
        ops = _read_ops(data)
    except EdgeTPUError:
        raise
    except Exception as e:  # flatbuffers reports a damaged file as struct, index or numpy errors
        raise EdgeTPUError(f"{name} starts like a TensorFlow Lite model but cannot be read "
                           f"({type(e).__name__}: {e}): it is truncated or corrupt. Write it again "
                           "from converter.convert(), in binary mode ('wb').") from None
    for op in ops:
        op.reasons = _reasons(op)
    return EdgeTPUReport(name, ops)


def _check_header(name: str, data: bytes) -> None:
    if not data:
        raise EdgeTPUError(f"{name} is empty. Write the converted model again: "
                           "Path(path).write_bytes(converter.convert()).")
    if data[:4] == b"PK\x03\x04" or data[:8] == b"\x89HDF\r\n\x1a\n":
        raise EdgeTPUError(f"{name} is a Keras model ({'.keras zip' if data[:2] == b'PK' else 'HDF5 .h5'}), "
                           "not a TensorFlow Lite one. Convert it first: tf.lite.TFLiteConverter."
                           "from_keras_model(keras.models.load_model(path)), full-integer quantized, "
                           "and check the .tflite file it writes.")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgeTPUError(f"{name} is not a TensorFlow Lite model: a .tflite file has the identifier "
                           f"'TFL3' in bytes 4-8, this one has {data[4:8]!r} ({len(data)} bytes). "
                           "Pass the file written from converter.convert().")


def _read_ops(data: bytes) -> list[OpInfo]:
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.BuffersLength()):  # weights cut off by a truncated copy raise here
        buffer = model.Buffers(i)
        if buffer.Offset() and buffer.Offset() + buffer.Size() > len(data):
            raise EdgeTPUError("a weight buffer ends after the end of the file")
        buffer.DataAsNumpy()
    if model.SubgraphsLength() < 1:
        raise EdgeTPUError("the model has no subgraph")
    graph = model.Subgraphs(0)

    def tensor(i: int) -> TensorInfo:
        t = graph.Tensors(i)
        shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else ()))
        signature = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        dtype = dtypes.get(t.Type(), f"type{t.Type()}")
        buffer = model.Buffers(t.Buffer()) if 0 < t.Buffer() < model.BuffersLength() else None
        nbytes = 0 if buffer is None else (buffer.Size() if buffer.Offset() > 1 else buffer.DataLength())
        values = None
        if nbytes and buffer.DataLength() and dtype in ("int32", "int64") and nbytes <= 512:
            values = tuple(int(v) for v in buffer.DataAsNumpy().view(dtype))
        return TensorInfo((t.Name() or b"").decode(errors="replace"), dtype, shape, signature,
                          bool(nbytes), int(nbytes), values, i)

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = builtin.get(number, f"BUILTIN_{number}")
        if name == "CUSTOM":
            name = (code.CustomCode() or b"CUSTOM").decode(errors="replace")
        ins = [tensor(int(t)) for t in (op.InputsAsNumpy() if op.InputsLength() else ()) if t >= 0]
        outs = [tensor(int(t)) for t in (op.OutputsAsNumpy() if op.OutputsLength() else ()) if t >= 0]
        ops.append(OpInfo(i, name, code.Version(), ins, outs, options=_options(schema, op, name)))
    return ops


def _options(schema, op, name: str) -> dict:
    """The builtin options the Edge TPU's per-op limits depend on."""
    table = op.BuiltinOptions()
    kinds = {"AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
             "CONCATENATION": "ConcatenationOptions", "STRIDED_SLICE": "StridedSliceOptions",
             "SQUEEZE": "SqueezeOptions"}
    if table is None or name not in kinds:
        return {}
    options = getattr(schema, kinds[name])()
    options.Init(table.Bytes, table.Pos)
    if name == "STRIDED_SLICE":
        return {"ellipsis_mask": options.EllipsisMask(), "new_axis_mask": options.NewAxisMask()}
    if name == "SQUEEZE":
        return {"squeeze_dims": [int(d) for d in options.SqueezeDimsAsNumpy()] if options.SqueezeDimsLength() else []}
    activations = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    return {"fused_activation": activations.get(options.FusedActivationFunction(), "NONE")}


def _span(a: int, b: int) -> str:
    return f"op {a}" if a == b else f"ops {a}-{b}"


def _where(op: OpInfo, bad) -> str:
    found = [f"{kind} {i} {t}" for kind, ts in (("input", op.inputs), ("output", op.outputs))
             for i, t in enumerate(ts) if bad(t)]
    return ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")


def _bad_dtype(t: TensorInfo) -> bool:
    return t.dtype not in _OK_DTYPES or (t.dtype == "int32" and not t.constant)


def _reasons(op: OpInfo) -> list[Reason]:
    reasons = []
    tensors = op.inputs + op.outputs
    wrong = sorted({t.dtype for t in tensors if _bad_dtype(t)})
    if wrong:
        where = _where(op, _bad_dtype)
        fix = (_FULL_INT8_FIX if wrong != ["int32"] else
               "int32 is allowed only for constants (biases, shapes, axes); an op that computes int32 values "
               "(ARG_MAX, a cast, integer arithmetic) runs on the CPU: move it to the end of the model")
        reasons.append(Reason("dtype", f"{'/'.join(wrong)} tensors",
                              f"uses {' and '.join(wrong)} tensors ({where}): {fix}"))
    deep = [t for t in tensors if not t.constant and len(t.shape) > 3 and _product(t.shape[:-3]) > 1]
    if deep:
        reasons.append(Reason("rank", "more than 3 dimensions",
                              f"has a tensor with more than 3 dimensions larger than 1 "
                              f"({_where(op, lambda t: t in deep)}): {RANK_RULE}. Keep the batch at 1 and "
                              "fold extra dimensions into the last three"))
    if op.name in PARAMETER_INPUTS:
        variable = [i for i in PARAMETER_INPUTS[op.name] if i < len(op.inputs) and not op.inputs[i].constant]
        if variable:
            reasons.append(Reason("parameters", "weights not constant",
                                  f"takes its weights or bias from another op (input {variable[0]} "
                                  f"{op.inputs[variable[0]]}), not from a constant: model parameters such as "
                                  "bias tensors must be constant at compile time"))
    limit = _op_limit(op)
    if limit:
        reasons.append(Reason("limit", "op limit", f"exceeds the Edge TPU's limit for {op.name}: {limit} "
                                                   f"({SUPPORTED_OPS_URL})"))
    if any(t.dynamic for t in tensors):
        where = _where(op, lambda t: t.dynamic)
        reasons.append(Reason("dynamic", "dynamic shape",
                              f"has a dynamic shape ({where}; -1 marks a dimension known only at run "
                              f"time): {_STATIC_FIX}"))
    supported = op.name in SUPPORTED_OPS
    if not supported:
        reasons.append(Reason("op", "not on Coral's list",
                              f"is not on Coral's list of operations the Edge TPU supports "
                              f"({SUPPORTED_OPS_URL}): replace the layer with supported ones, or move "
                              "it to the end of the model so that only the ops from there on run on the CPU"))
    highest, refused, source = OP_VERSIONS.get(op.name, (1, None, "no source: version 1 assumed"))
    if refused is not None and op.version >= refused:
        reasons.append(Reason(
            "version", f"version {op.version} refused",
            f"is version {op.version}, which the Edge TPU compiler {COMPILER} does not know: it stops with "
            f"\"Didn't find op for builtin opcode '{op.name}' version '{op.version}'\" and compiles nothing "
            f"(highest version known to work: {highest}; source: {source}). To fix it, {_VERSION_FIX}",
            refuses_model=True))
    elif supported and op.version > highest and op.name != "edgetpu-custom-op":
        reasons.append(Reason(
            "version", f"version {op.version} > {highest}",
            f"is version {op.version}, and the highest version the Edge TPU compiler {COMPILER} is known "
            f"to accept is {highest} (source: {source}): it may leave the op on the CPU or refuse the "
            f"model. Compile it to find out, or {_VERSION_FIX}"))
    return reasons


def _product(dims) -> int:
    n = 1
    for d in dims:
        n *= max(int(d), 1)
    return n


def _op_limit(op: OpInfo) -> str | None:
    """The first of Coral's per-op limits ("Known limitations" in the table) this op exceeds, if any."""
    first_in = op.inputs[0].shape if op.inputs else ()
    if op.options.get("fused_activation", "NONE") != "NONE":
        return f"no fused activation function (this one fuses {op.options['fused_activation']})"
    if op.name == "CONCATENATION" and any(t.constant for t in op.inputs) and len(op.inputs) != 2:
        return "with a constant input, only 2 inputs (the constant all zeros: a zero padding)"
    if op.name == "MEAN" and len(first_in) == 4 and len(op.inputs) > 1 and op.inputs[1].values is not None:
        axes = {a % 4 for a in op.inputs[1].values}
        if not axes <= {1, 2}:
            return f"reduction along x and/or y only, not along axes {sorted(axes)}"
    if op.name == "PAD" and len(first_in) == 4 and len(op.inputs) > 1 and op.inputs[1].values is not None:
        pads = op.inputs[1].values
        if any(pads[2 * d] or pads[2 * d + 1] for d in (0, 3)):
            return "padding along x and/or y only, not along the batch or channels"
    if op.name == "SOFTMAX" and first_in and (sum(d > 1 for d in first_in) > 1 or _product(first_in) > 16000):
        return f"a 1-D input of at most 16,000 elements, not {first_in}"
    if op.name == "FULLY_CONNECTED" and op.outputs and sum(d > 1 for d in op.outputs[0].shape) > 1:
        return f"a one-dimensional output, not {op.outputs[0].shape}"
    if op.name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and len(first_in) == 4 and first_in[0] != 1:
        return f"a 3-dimensional input and output (batch 1), not {first_in}"
    if op.name == "STRIDED_SLICE":
        strides = op.inputs[3].values if len(op.inputs) > 3 else None
        if (strides is not None and any(s != 1 for s in strides)) or op.options.get("ellipsis_mask") \
                or op.options.get("new_axis_mask"):
            return "all strides 1, no ellipsis mask and no new-axis mask"
    if op.name == "SQUEEZE" and first_in:
        dims = [d % len(first_in) for d in op.options.get("squeeze_dims") or []] or \
            [i for i, d in enumerate(first_in) if d == 1]
        first_big = next((i for i, d in enumerate(first_in) if d > 1), len(first_in))
        if any(d > first_big for d in dims):
            return f"only leading 1s squeezed (no relayout), not dimensions {dims} of {first_in}"
    return None


# ---- The real tools, where they exist --------------------------------------------------------

COMPILER_DOCS = "https://coral.ai/docs/edgetpu/compiler/"
RUNTIME_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


@dataclass
class CompileResult:
    """What edgetpu_compiler did with a model: whether it ran, its log (or why not), the compiled file."""

    ran: bool
    ok: bool
    log: str
    path: Path | None = None  # the compiled model, <name>_edgetpu.tflite
    edgetpu_ops: int | None = None
    cpu_ops: int | None = None

    def __str__(self) -> str:
        return self.log


def compile(model: str | os.PathLike, timeout: int = 300) -> CompileResult:
    """Run edgetpu_compiler on a .tflite file if it is on PATH; the compiled file lands next to it.

    Without the compiler (it runs on Linux x86-64 only) nothing runs and the result says so.
    """
    path = Path(model)
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return CompileResult(False, False, (
            f"edgetpu_compiler is not on PATH, so {path.name} was not compiled. It runs on Linux x86-64 only; "
            f"on Debian or Ubuntu (Colab too) install the package edgetpu-compiler from Coral's package "
            f"repository ({COMPILER_DOCS}). Until then report() says what it would do."))
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write the converted model there first.")
    try:  # run where the file is, with plain names, so that the log shows no machine paths
        done = subprocess.run([exe, "-s", "-o", ".", path.name], cwd=path.parent, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return CompileResult(True, False, f"edgetpu_compiler did not finish {path.name} in {timeout} s.")
    log = (done.stdout + done.stderr).strip()
    compiled = path.with_name(path.stem + "_edgetpu.tflite")
    ok = done.returncode == 0 and compiled.is_file()
    total = _count(log, r"Total number of operations: (\d+)")
    cpu = _count(log, r"will run on CPU: (\d+)")
    tpu = _count(log, r"will run on Edge TPU: (\d+)")
    if ok and total is not None:  # the compiler prints the two counts only when some ops stay on the CPU
        cpu = cpu if cpu is not None else 0
        tpu = tpu if tpu is not None else total - cpu
    return CompileResult(True, ok, log, compiled if ok else None, tpu, cpu)


def _count(log: str, pattern: str) -> int | None:
    found = re.search(pattern, log)
    return int(found.group(1)) if found else None


def load_delegate(library: str | None = None):
    """The Edge TPU runtime's LiteRT delegate, and a line saying so; (None, why not) when it does not load.

    It loads only where libedgetpu is installed *and* an Edge TPU (USB Accelerator, Dev Board,
    M.2 or PCIe card) is attached.
    """
    from ai_edge_litert.interpreter import load_delegate as load

    name = library or RUNTIME_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    try:
        ctypes.CDLL(name)  # first on its own: a missing library then fails quietly, not in Delegate.__del__
        return load(name), f"Edge TPU runtime {name} loaded"
    except (ValueError, OSError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, (f"the Edge TPU runtime did not load ({why}): it needs Coral's libedgetpu "
                      f"(package libedgetpu1-std) and an Edge TPU device attached")


@dataclass
class Runner:
    """A LiteRT interpreter for one model, on the Edge TPU or on the CPU, and a line saying which and why."""

    interpreter: object
    device: str  # "Edge TPU" or "CPU"
    message: str
    model: str | os.PathLike | bytes  # the model it runs (the compiled one on the Edge TPU)

    def predict(self, images):
        """Class probabilities of 0-255 images, one at a time (book_utils.tflite.predict)."""
        from book_utils import tflite

        return tflite.predict(self.interpreter, images)

    def latency_ms(self, repeats: int = 50, warmup: int = 5) -> float:
        """Median milliseconds per image (batch 1) where this runner runs."""
        from book_utils import tflite

        return tflite.latency_ms(self.interpreter, repeats=repeats, warmup=warmup)  # with its delegate, if any


def runner(model: str | os.PathLike | bytes, compiled: str | os.PathLike | None = None,
           threads: int = 1) -> Runner:
    """Run on the Edge TPU when its runtime loads and a compiled model exists, else `model` on the CPU.

    model: the int8 .tflite file (it runs anywhere); compiled: edgetpu_compiler's output for it
    (it runs only with the Edge TPU: its edgetpu-custom-op is unknown to the CPU).
    """
    from ai_edge_litert.interpreter import Interpreter

    from book_utils import tflite

    delegate, why = load_delegate()
    if delegate is not None and compiled is not None and Path(compiled).is_file():
        it = Interpreter(model_path=str(compiled), experimental_delegates=[delegate], num_threads=threads)
        it.allocate_tensors()
        return Runner(it, "Edge TPU", f"{why}: running {Path(compiled).name} on the Edge TPU", compiled)
    if delegate is not None:
        why += ", but there is no compiled model (run compile() first)"
    return Runner(tflite.interpreter(model, threads), "CPU",
                  f"{why}; running the int8 model on the CPU with LiteRT instead", model)
