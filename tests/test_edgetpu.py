"""Edge TPU report on real converted models: int8, float, dynamic batch, an unsupported op, op versions, bad files."""
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from book_utils import edgetpu

SIZE = 16


def representative_images():
    """A few real-looking grey images: smooth ramps and stripes, in the range the model sees."""
    ramp = np.linspace(0.0, 1.0, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    stripes = (np.sin(np.linspace(0, 6 * np.pi, SIZE, dtype=np.float32))[None, :] + 1) / 2
    for image in (ramp, ramp.T, 1 - ramp, np.broadcast_to(stripes, (SIZE, SIZE)), ramp * stripes):
        yield [np.ascontiguousarray(image, dtype=np.float32).reshape(1, SIZE, SIZE, 1)]


def tiny_cnn(batch_size=1, leaky=False):
    import keras

    inputs = keras.Input((SIZE, SIZE, 1), batch_size=batch_size)
    x = keras.layers.Conv2D(4, 3, activation=None if leaky else "relu")(inputs)
    if leaky:
        x = keras.layers.LeakyReLU(0.1)(x)  # not on Coral's list; the int8 converter keeps it as a builtin
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def convert(model, int8=True) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:  # full integer quantization, int8 input and output: what the Edge TPU needs
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_images
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": int8 input is meant
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The four converted models, written to .tflite files."""
    folder = tmp_path_factory.mktemp("edgetpu")
    built = {"int8": convert(tiny_cnn()), "float": convert(tiny_cnn(), int8=False),
             "dynamic": convert(tiny_cnn(batch_size=None)), "leaky": convert(tiny_cnn(leaky=True))}
    paths = {}
    for name, data in built.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def with_version(data: bytes, op_name: str, version: int) -> bytes:
    """A copy of a model with one operator code's version rewritten in place.

    TensorFlow 2.21's converter writes versions the Edge TPU compiler accepts for this model, so
    the too-new versions the compiler refuses are produced by editing the field in the bytes.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    buf = bytearray(data)
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == getattr(schema.BuiltinOperator, op_name):
            slot = code._tab.Offset(8)  # the `version` field, as OperatorCode.Version() reads it
            assert slot, f"{op_name} has the default version 1, which is not stored: cannot rewrite it"
            struct.pack_into("<i", buf, code._tab.Pos + slot, version)
            return bytes(buf)
    raise AssertionError(f"the model has no {op_name}")


def test_full_int8_static_model_runs_entirely_on_the_edgetpu(models):
    r = edgetpu.report(models["int8"])
    assert [op.name for op in r.ops] == ["CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert [op.index for op in r.ops] == list(range(5))
    assert all(op.edgetpu and not op.reasons for op in r.ops)
    assert r.first_unsupported is None and r.refused_by is None
    assert r.tpu_ops == r.ops and r.cpu_ops == []
    conv = r.ops[0]
    assert conv.version == 3
    assert [t.dtype for t in conv.inputs] == ["int8", "int8", "int32"]  # input, weights, bias
    assert conv.inputs[0].shape == conv.inputs[0].shape_signature == (1, SIZE, SIZE, 1)
    assert conv.outputs[0].shape == (1, SIZE - 2, SIZE - 2, 4)
    assert r.verdict() == "all 5 ops would run on the Edge TPU"
    text = str(r)
    assert str(models["int8"]) in text and "int8[1,16,16,1]" in text and "CPU" not in text
    assert text.splitlines()[-1] == r.verdict()
    assert edgetpu.report(models["int8"].read_bytes()).verdict() == r.verdict()  # bytes work too


def test_float_model_fails_for_float_tensors(models):
    r = edgetpu.report(models["float"])
    assert all(not op.edgetpu for op in r.ops)
    first = r.first_unsupported
    assert first.index == 0 and first.name == "CONV_2D"
    assert [reason.kind for reason in first.reasons] == ["dtype"]
    assert r.tpu_ops == [] and r.cpu_ops == r.ops
    verdict = r.verdict()
    assert verdict.startswith("all 5 ops would run on the CPU: op 0 CONV_2D uses float32 tensors")
    for fix in ("representative dataset", "TFLITE_BUILTINS_INT8", "inference_input_type = tf.int8"):
        assert fix in verdict
    assert "no: float32 tensors" in r.table()


def test_dynamic_batch_is_flagged(models):
    r = edgetpu.report(models["dynamic"])
    conv = r.ops[0]
    assert conv.inputs[0].shape_signature == (-1, SIZE, SIZE, 1) and conv.inputs[0].dynamic
    assert conv.inputs[0].shape == (1, SIZE, SIZE, 1)  # the stored shape hides it; the signature shows it
    assert [reason.kind for reason in conv.reasons] == ["dynamic"]  # int8 and supported: only the shape
    assert r.first_unsupported is conv and r.tpu_ops == []
    verdict = r.verdict()
    assert "op 0 CONV_2D has a dynamic shape (input 0 int8[-1,16,16,1]" in verdict
    assert "batch size to 1" in verdict and "batch_size=1" in verdict


def test_unsupported_op_moves_it_and_everything_after_it_to_the_cpu(models):
    r = edgetpu.report(models["leaky"])
    names = [op.name for op in r.ops]
    assert names == ["CONV_2D", "LEAKY_RELU", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    leaky = r.ops[1]
    assert [reason.kind for reason in leaky.reasons] == ["op"]
    assert leaky.inputs[0].dtype == "int8"  # the converter kept it as an int8 builtin
    assert r.first_unsupported is leaky
    assert [op.name for op in r.tpu_ops] == ["CONV_2D"]
    assert [op.index for op in r.cpu_ops] == [1, 2, 3, 4, 5]
    assert all(op.edgetpu for op in r.cpu_ops[1:])  # supported, but after the split: CPU all the same
    verdict = r.verdict()
    assert verdict.startswith("ops 1-5 (5 of 6) would run on the CPU, op 0 on the Edge TPU: "
                              "op 1 LEAKY_RELU is not on Coral's list")
    assert edgetpu.SUPPORTED_OPS_URL in verdict and "replace the layer" in verdict


def test_op_version_the_compiler_refuses_makes_it_refuse_the_whole_model(models, tmp_path):
    path = tmp_path / "conv_v6.tflite"
    path.write_bytes(with_version(models["int8"].read_bytes(), "CONV_2D", 6))
    r = edgetpu.report(path)
    conv = r.ops[0]
    assert conv.name == "CONV_2D" and conv.version == 6
    assert [reason.kind for reason in conv.reasons] == ["version"] and conv.reasons[0].refuses_model
    assert all(op.edgetpu for op in r.ops[1:])
    assert r.refused_by is conv and r.tpu_ops == [] and r.cpu_ops == r.ops
    verdict = r.verdict()
    assert verdict.startswith("the Edge TPU compiler 16.0 would refuse this model, so all 5 ops would run "
                              "on the CPU: op 0 CONV_2D is version 6")
    assert "Didn't find op for builtin opcode 'CONV_2D' version '6'" in verdict
    assert "google-coral/edgetpu#631" in verdict and "older TensorFlow" in verdict


def test_op_version_above_the_known_maximum_is_flagged(models):
    r = edgetpu.report(with_version(models["int8"].read_bytes(), "SOFTMAX", 3))
    softmax = r.ops[-1]
    assert softmax.version == 3 and [reason.kind for reason in softmax.reasons] == ["version"]
    assert not softmax.reasons[0].refuses_model and r.refused_by is None
    assert r.cpu_ops == [softmax] and len(r.tpu_ops) == 4
    verdict = r.verdict()
    assert verdict.startswith("op 4 (1 of 5) would run on the CPU, ops 0-3 on the Edge TPU: op 4 SOFTMAX "
                              "is version 3, and the highest version the Edge TPU compiler 16.0 is known "
                              "to accept is 2")
    assert "Compile it to find out" in verdict
    assert "version 3 > 2" in r.table()


def test_every_version_figure_says_where_it_comes_from():
    for name, (highest, refused, source) in edgetpu.OP_VERSIONS.items():
        assert highest >= 1 and (refused is None or refused > highest), name
        assert source, name
        if refused is not None:
            assert "#" in source, f"{name}: a refused version needs the issue that reports it"
    assert set(edgetpu.SUPPORTED_OPS) - {"edgetpu-custom-op"} <= set(edgetpu.OP_VERSIONS)


def test_tflite_convert_applies_the_converter_settings_the_chapter_prints(tmp_path):
    """The settings the chapter prints against the op-version pitfall are the ones tflite.convert's int8 mode
    applies: a model with a dynamic batch, converted with batch_size=1, comes out with int8 input and output,
    static shapes, and no op the report flags (no float tensor, no dynamic shape, no op version too new).
    Its float32 and dynamic-range modes, which leave some of those settings out, are flagged."""
    from book_utils import tflite

    images = np.concatenate([batch[0] for batch in representative_images()])
    model = tiny_cnn(batch_size=None)
    path = tmp_path / "book_int8.tflite"
    path.write_bytes(tflite.convert(model, "int8", representative=images, batch_size=1))
    interpreter = tflite.interpreter(path)
    for detail in interpreter.get_input_details() + interpreter.get_output_details():
        assert detail["dtype"] == np.int8, detail["name"]
        assert detail["shape"][0] == 1 and list(detail["shape_signature"]) == list(detail["shape"]), detail["name"]
    r = edgetpu.report(path)
    assert [(op.name, reason.kind) for op in r.ops for reason in op.reasons] == []
    assert r.tpu_ops == r.ops
    for mode, batch_size, kind in (("float32", 1, "dtype"), ("dynamic", 1, "dtype"), ("int8", None, "dynamic")):
        other = edgetpu.report(tflite.convert(model, mode, representative=images, batch_size=batch_size))
        assert other.first_unsupported is not None, (mode, batch_size)
        assert kind in [reason.kind for reason in other.first_unsupported.reasons], (mode, batch_size)
    shown = " ".join(" ".join(row) for row in edgetpu.CONVERTER_SETTINGS)
    for setting in ("tf.lite.Optimize.DEFAULT", "representative_dataset", "tf.lite.OpsSet.TFLITE_BUILTINS_INT8",
                    "inference_input_type", "inference_output_type", "batch size 1"):
        assert setting in shown, setting
    assert all(why for _, _, why in edgetpu.CONVERTER_SETTINGS)


def _error(path) -> str:
    with pytest.raises(edgetpu.EdgeTPUError) as info:
        edgetpu.report(path)
    assert isinstance(info.value, ValueError)
    error = info.value  # raised without a chained traceback from inside flatbuffers
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    message = str(info.value)
    assert str(path) in message
    return message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    message = _error(path)
    assert "is empty" in message and "converter.convert()" in message


def test_text_file_and_wrong_identifier(tmp_path, models):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model, just some notes\n")
    message = _error(text)
    assert "is not a TensorFlow Lite model" in message and "'TFL3'" in message and "b'a mo'" in message
    data = bytearray(models["int8"].read_bytes())
    data[4:8] = b"TFL2"
    renamed = tmp_path / "wrong_id.tflite"
    renamed.write_bytes(bytes(data))
    assert "b'TFL2'" in _error(renamed)


@pytest.mark.parametrize("keep", [8, 40, 0.5])
def test_truncated_file(tmp_path, models, keep):
    data = models["int8"].read_bytes()
    path = tmp_path / "truncated.tflite"
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    message = _error(path)
    assert "truncated or corrupt" in message and "converter.convert()" in message


def test_keras_file_and_folder(tmp_path):
    path = tmp_path / "tiny.keras"
    tiny_cnn().save(path)
    message = _error(path)
    assert "is a Keras model (.keras zip)" in message and "TFLiteConverter.from_keras_model" in message
    message = _error(tmp_path)
    assert "is a folder" in message and "from_saved_model" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        edgetpu.report(tmp_path / "missing.tflite")


def test_damaged_bytes_never_escape_as_other_errors(models):
    """Any byte the file has may be damaged: the answer is a report or an EdgeTPUError, nothing else."""
    data = models["int8"].read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(40):
        damaged = bytearray(data)
        spots = rng.integers(8, len(data), size=4)
        damaged[spots[0]: spots[0] + 4] = rng.integers(0, 256, size=4, dtype=np.uint8).tobytes()
        for spot in spots[1:]:
            damaged[spot] = int(rng.integers(0, 256))
        try:
            r = edgetpu.report(bytes(damaged))
        except edgetpu.EdgeTPUError:
            continue
        assert isinstance(r.verdict(), str) and isinstance(r.table(), str)


# ---- report(name=...) and summary() -----------------------------------------------------------

def test_report_name_and_summary(models):
    r = edgetpu.report(models["leaky"], name="leaky model")
    assert r.table().startswith("leaky model: 6 ops") and str(models["leaky"]) not in str(r)
    s = r.summary()
    assert s["ops"] == 6 and s["edgetpu_ops"] == 1 and s["cpu_ops"] == 5 and not s["refused"]
    assert s["first_unsupported"] == {"index": 1, "name": "LEAKY_RELU", "version": 1, "reasons": ["op"]}
    assert s["op_versions"]["CONV_2D"] == 3 and s["verdict"] == r.verdict()
    assert edgetpu.report(models["int8"]).summary()["first_unsupported"] is None
    assert edgetpu.report(models["float"]).summary()["first_unsupported"]["reasons"] == ["dtype"]
    assert edgetpu.report(models["dynamic"]).summary()["first_unsupported"]["reasons"] == ["dynamic"]
    refused = edgetpu.report(with_version(models["int8"].read_bytes(), "CONV_2D", 6)).summary()
    assert refused["refused"] and refused["edgetpu_ops"] == 0 and refused["first_unsupported"]["reasons"] == ["version"]


# ---- compile(): the real compiler where it is on PATH, a clear message where not ---------------

def test_compile_without_the_compiler_says_so(models, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no edgetpu_compiler
    result = edgetpu.compile(models["int8"])
    assert not result.ran and not result.ok and result.path is None and result.edgetpu_ops is None
    assert "edgetpu_compiler is not on PATH" in str(result) and "int8.tflite was not compiled" in str(result)
    assert "Linux x86-64" in str(result) and edgetpu.COMPILER_DOCS in str(result)
    assert str(models["int8"].parent) not in str(result)  # the file's name, not the machine's path


FAKE_COMPILER = """#!/bin/sh
# Stands in for edgetpu_compiler: prints what compiler 16.0 prints, writes <name>_edgetpu.tflite.
for last; do true; done
name="${last%.tflite}"
echo "Edge TPU Compiler version 16.0.384591198"
case "$name" in
  *refused*) echo "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'."; echo "Invalid model: $last"; exit 1;;
esac
cp "$last" "${name}_edgetpu.tflite"
echo "Model compiled successfully in 12 ms."
echo "Input model: $last"
echo "Output model: ${name}_edgetpu.tflite"
echo "Number of Edge TPU subgraphs: 1"
echo "Total number of operations: 6"
case "$name" in
  *leaky*) echo "Number of operations that will run on Edge TPU: 1"; echo "Number of operations that will run on CPU: 5";;
esac
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


def test_compile_runs_the_compiler_and_reads_its_counts(models, fake_compiler, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name, ops in (("int8", (6, 0)), ("leaky", (1, 5))):
        path = work / f"{name}.tflite"
        path.write_bytes(models[name].read_bytes())
        result = edgetpu.compile(path)
        assert result.ran and result.ok, result.log
        assert result.path == work / f"{name}_edgetpu.tflite" and result.path.is_file()
        assert (result.edgetpu_ops, result.cpu_ops) == ops
        assert f"Input model: {name}.tflite" in result.log and str(work) not in result.log  # ran where the file is


def test_compile_reports_a_refused_model(models, fake_compiler, tmp_path):
    path = tmp_path / "refused.tflite"
    path.write_bytes(models["int8"].read_bytes())
    result = edgetpu.compile(path)
    assert result.ran and not result.ok and result.path is None
    assert "Didn't find op for builtin opcode 'CONV_2D' version '6'" in str(result)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        edgetpu.compile(tmp_path / "missing.tflite")


# ---- load_delegate() and runner(): the Edge TPU where it is, else LiteRT on the CPU -------------

def test_missing_runtime_falls_back_to_the_cpu(models, tmp_path):
    from book_utils import tflite

    delegate, why = edgetpu.load_delegate("libedgetpu_absent_for_this_test.so.1")
    assert delegate is None and "did not load" in why and "libedgetpu" in why
    compiled = tmp_path / "int8_edgetpu.tflite"
    compiled.write_bytes(models["int8"].read_bytes())
    for given in (None, compiled):
        runner = edgetpu.runner(models["int8"], given)
        if runner.device == "Edge TPU":  # a machine with Coral's runtime and a device attached
            pytest.skip("an Edge TPU is attached: the fallback is not exercised here")
        assert runner.device == "CPU" and runner.model == models["int8"]
        assert "running the int8 model on the CPU with LiteRT" in runner.message
    images = np.concatenate([image[0] for image in representative_images()]) * 255
    probabilities = runner.predict(images)
    assert probabilities.shape == (5, 3) and np.allclose(probabilities, tflite.predict(models["int8"], images))
    assert np.allclose(probabilities.sum(axis=1), 1, atol=0.05)
    assert runner.latency_ms(repeats=3, warmup=1) > 0


# ---- the chapter's own record -------------------------------------------------------------------

def test_chapter_record_flags_what_it_must():
    """The reports of chapter 10's committed full run: each model fails for its reason, the int8 one passes.

    (The smoke run in tests/test_notebooks.py asserts the same inside the notebook.)
    """
    import json

    path = Path(__file__).resolve().parent.parent / "results" / "10_edge_tpu.json"
    if not path.exists():
        pytest.skip(f"no {path.name} yet: run notebooks/10_edge_tpu.ipynb (tests/test_notebooks.py does)")
    record = json.loads(path.read_text())
    reports = record["edgetpu_reports"]
    assert reports["float32"]["first_unsupported"]["reasons"] == ["dtype"] and reports["float32"]["edgetpu_ops"] == 0
    dynamic = reports["int8, dynamic batch"]
    assert dynamic["first_unsupported"]["reasons"] == ["dynamic"] and dynamic["edgetpu_ops"] == 0
    static = reports["int8, batch 1"]
    assert static["first_unsupported"] is None and static["cpu_ops"] == 0 and not static["refused"]
    head = reports["hard-swish head"]
    assert head["first_unsupported"]["name"] == "HARD_SWISH" and head["first_unsupported"]["reasons"] == ["op"]
    assert 0 < head["edgetpu_ops"] < head["ops"] and head["edgetpu_ops"] == head["first_unsupported"]["index"]
    assert record["model_bytes"] < record["float_bytes"] / 3 and 0.9 <= record["agreement_with_float"] <= 1
    assert record["latency_ms"] > 0 and record["device"] in ("CPU", "Edge TPU")


# ---- Coral's model requirements and per-op limits ("TensorFlow models on the Edge TPU") -------------

def limits_model():
    """Every op but the last three exceeds one of Coral's per-op limits (or needs nothing: the conv)."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 1), batch_size=1)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [0, 8]]))(x)  # pads channels
    x = keras.layers.Lambda(lambda t: t[:, ::2, ::2, :])(x)  # strides 2
    x = keras.layers.Softmax()(x)  # over a 4-D tensor
    x = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=-1, keepdims=True))(x)  # over channels
    x = keras.layers.GlobalAveragePooling2D()(x)  # MEAN over x and y: allowed
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_per_op_limits_of_corals_table_are_checked():
    r = edgetpu.report(convert(limits_model()))
    found = [(op.name, [reason.kind for reason in op.reasons]) for op in r.ops]
    assert found == [("CONV_2D", []), ("PAD", ["limit"]), ("STRIDED_SLICE", ["limit"]), ("SOFTMAX", ["limit"]),
                     ("MEAN", ["limit"]), ("MEAN", []), ("FULLY_CONNECTED", []), ("SOFTMAX", [])]
    assert "x and/or y only" in r.ops[1].reason and "strides 1" in r.ops[2].reason
    assert "16,000" in r.ops[3].reason and "axes [3]" in r.ops[4].reason
    assert r.first_unsupported.index == 1 and len(r.tpu_ops) == 1


def _tensor(shape, dtype="int8", constant=False, nbytes=0, index=0):
    return edgetpu.TensorInfo("t", dtype, tuple(shape), tuple(shape), constant, nbytes, None, index)


def test_rank_int32_and_constant_parameter_rules():
    five_d = edgetpu.OpInfo(0, "RESHAPE", 1, [_tensor((1, 14, 14, 8))], [_tensor((1, 2, 7, 14, 8))])
    leading_ones = edgetpu.OpInfo(0, "RESHAPE", 1, [_tensor((1, 14, 14, 8))], [_tensor((1, 1, 14, 14, 8))])
    assert [r.kind for r in edgetpu._reasons(five_d)] == ["rank"] and edgetpu._reasons(leading_ones) == []
    computed_int32 = edgetpu.OpInfo(0, "ADD", 1, [_tensor((1, 3)), _tensor((1, 3))], [_tensor((1, 3), "int32")])
    assert [r.kind for r in edgetpu._reasons(computed_int32)] == ["dtype"]
    assert "only for constants" in edgetpu._reasons(computed_int32)[0].message
    conv = [_tensor((1, 8, 8, 4)), _tensor((4, 3, 3, 4), constant=True, nbytes=144)]
    constant_bias = edgetpu.OpInfo(0, "CONV_2D", 3, conv + [_tensor((4,), "int32", constant=True, nbytes=16)],
                                   [_tensor((1, 6, 6, 4))])
    computed_bias = edgetpu.OpInfo(0, "CONV_2D", 3, conv + [_tensor((4,), "int8")], [_tensor((1, 6, 6, 4))])
    assert edgetpu._reasons(constant_bias) == []
    assert [r.kind for r in edgetpu._reasons(computed_bias)] == ["parameters"]


def test_parameter_memory_against_the_on_chip_8_mb(models):
    r = edgetpu.report(models["int8"])
    # conv 3x3x1 filters x 4 (int8) + 4 int32 biases + MEAN's 2 int32 axes + dense 4x3 (int8; zero bias omitted)
    assert r.memory()["parameter_bytes"] == 36 + 16 + 8 + 12 and r.memory()["streamed_at_least"] == 0
    big = edgetpu.OpInfo(0, "FULLY_CONNECTED", 4, [_tensor((1, 4096)), _tensor((2304, 4096), constant=True,
                                                                               nbytes=2304 * 4096, index=1)],
                         [_tensor((1, 2304))])
    m = edgetpu.EdgeTPUReport("big", [big]).memory()
    assert m["parameter_bytes"] == 9 * 2**20 and m["cached_at_most"] == 8 * 2**20 and m["streamed_at_least"] == 2**20
    assert "parameters on the Edge TPU: 72 bytes" in str(r)


def test_16x8_quantization_is_flagged_for_its_int16_activations():
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_cnn())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_images
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = edgetpu.report(converter.convert())
    conv = next(op for op in r.ops if op.name == "CONV_2D")
    assert conv.reasons[0].kind == "dtype" and "int16" in conv.reasons[0].short
