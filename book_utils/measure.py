"""Measuring what a model costs to run: CPU latency per image."""
from __future__ import annotations

import time

import numpy as np


def latency_ms(model, repeats: int = 50, warmup: int = 5, threads: int | None = None) -> float:
    """Median milliseconds to classify one image (batch 1) with a Keras model, compiled as a tf.function.

    The input is random pixels of the model's input shape: the cost of a forward pass does not depend
    on the values. Take ratios of figures measured in one run; single timings on a busy machine vary.
    """
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    shape = tuple(model.input_shape[1:])
    if None in shape:
        raise ValueError(f"{model.name} takes images of any size {shape}; build it with a fixed input_shape.")
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32"))
    forward = tf.function(lambda x: model(x, training=False))
    for _ in range(warmup):
        forward(image).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(image).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
