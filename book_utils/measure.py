"""Measuring what a model and its input cost: CPU latency per image, input-pipeline throughput."""
from __future__ import annotations

import time

import numpy as np


# The instruction sets that decide whether int8 beats float32 on a CPU: 8-bit dot products (VNNI on x86,
# the dot-product extension on Arm, AMX tiles) and the vector widths around them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def instruction_sets() -> dict:
    """The CPU's model and the instruction sets that matter for int8 vs float32 speed (from
    env.cpu_info; elsewhere than Linux the list is None). Record it with every latency."""
    import platform

    from book_utils import env

    model, flags = env.cpu_info()
    return {"cpu": model, "machine": platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags] if flags else None,
            "int8_dot_product": any(f in flags for f in INT8_DOT_FLAGS) if flags else None}


def median_ms(call, repeats: int, warmup: int = 0) -> float:
    """Median milliseconds of call() over `repeats` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def forward_pass(model):
    """A call that classifies one image of random pixels with a Keras model (batch 1, as a tf.function);
    the values do not change the cost."""
    import tensorflow as tf

    shape = tuple(model.input_shape[1:])
    if None in shape:
        raise ValueError(f"{model.name} takes images of any size {shape}; build it with a fixed input_shape.")
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32"))
    forward = tf.function(lambda x: model(x, training=False))
    return lambda: forward(image).numpy()


def latency_ms(model, repeats: int = 50, warmup: int = 5, threads: int | None = None) -> float:
    """Median milliseconds to classify one image (batch 1) with a Keras model, compiled as a tf.function.

    The input is random pixels of the model's input shape: the cost of a forward pass does not depend
    on the values. Take ratios of figures measured in one run; single timings on a busy machine vary.
    """
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    return median_ms(forward_pass(model), repeats, warmup)


def rounds_ms(calls: dict, repeats: int, rounds: int = 5, warmup: int = 5) -> dict:
    """Milliseconds of several calls ({name: call}) timed together: `rounds` rounds, each timing every call
    in turn (the median of repeats / rounds runs; the first round warms each call up first).

    Load from elsewhere on a shared machine comes in bursts; timed one after the other, a burst slows
    whichever call is being timed, while in rounds it slows one round of each. Returns {name: [ms per round]}."""
    if rounds < 1 or repeats < rounds:
        raise ValueError(f"need at least one round and one timed run per round (rounds={rounds}, repeats={repeats})")
    per_round = {name: [] for name in calls}
    for i in range(rounds):
        for name, call in calls.items():
            per_round[name].append(median_ms(call, repeats // rounds, warmup if i == 0 else 0))
    return per_round


def compare_latency_ms(models: dict, repeats: int = 100, rounds: int = 5, warmup: int = 5) -> dict:
    """Batch-1 milliseconds of several Keras models ({name: model}), measured together so that they compare:
    rounds_ms over their forward passes, each model's figure its fastest round's median. Returns {name: ms}."""
    per_round = rounds_ms({name: forward_pass(model) for name, model in models.items()}, repeats, rounds, warmup)
    return {name: min(ms) for name, ms in per_round.items()}


# ---- Input pipelines: images per second at steady state ------------------------------------------

def naive_dataset(x, y, batch_size: int = 128, classes: int = 10, augment=None):
    """The input pipeline written the obvious way: one image at a time, in order, nothing overlapped
    (the baseline that data.pipeline is measured against)."""
    import tensorflow as tf

    def prepare(image, label):
        image = tf.cast(image, tf.float32)
        if augment is not None:
            image = augment(image[None], training=True)[0]
        return image, tf.one_hot(label, classes)

    return tf.data.Dataset.from_tensor_slices((x, y)).map(prepare).batch(batch_size)


def images_per_second(dataset, batches: int | None = None, repeats: int = 3,
                      warmup_batches: int | None = None) -> float:
    """Images per second a tf.data pipeline delivers at steady state, as training sees it (no model).

    One iterator runs over dataset.repeat(), as Keras's fit keeps one across epochs. The first
    `warmup_batches` (default: one whole epoch, so that cache() is complete, shuffle buffers have been
    filled once and AUTOTUNE has settled) are not timed; then `repeats` windows of `batches` batches
    each (default: one epoch, so each window pays one epoch's shuffle-buffer refill, as training
    does) are timed, and the median rate is returned. A fresh iterator per measurement would instead
    time the first batches of an epoch: buffer filling and an unfinished cache.
    """
    import tensorflow as tf

    epoch = int(dataset.cardinality())
    if (warmup_batches is None or batches is None) and epoch <= 0:
        raise ValueError("the dataset's length is unknown or infinite: pass batches= and warmup_batches= "
                         "(e.g. the number of batches in one epoch)")
    batches = epoch if batches is None else batches
    warmup_batches = epoch if warmup_batches is None else warmup_batches
    if batches < 1 or repeats < 1 or warmup_batches < 0:
        raise ValueError(f"need batches >= 1, repeats >= 1, warmup_batches >= 0 (got {batches}, {repeats}, "
                         f"{warmup_batches})")
    it = iter(dataset.repeat())
    for _ in range(warmup_batches):
        next(it)
    rates = []
    for _ in range(repeats):
        start, images = time.perf_counter(), 0
        for _ in range(batches):
            images += int(tf.nest.flatten(next(it))[0].shape[0])
        rates.append(images / (time.perf_counter() - start))
    return float(np.median(rates))
