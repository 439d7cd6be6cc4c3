"""Self-study exercises and their checkers.

In a notebook:  ``exercises.check("2.1", conv_output_size)`` prints whether the
answer is right and, if not, a case it gets wrong. Every checker computes the
expected answer itself (from Keras layers or from first principles), so the
answers are nowhere written down.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Exercise:
    id: str
    question: str
    checker: Callable  # answer -> None if right, else a hint (str)


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, question: str):
    def register(checker):
        EXERCISES[id] = Exercise(id, question, checker)
        return checker
    return register


def questions(chapter: int) -> list[Exercise]:
    """The exercises of one chapter, in order."""
    return [e for e in EXERCISES.values() if e.id.split(".")[0] == str(chapter)]


def check(id: str, answer) -> bool:
    """Check an answer; print the verdict (and a hint when wrong) and return True when right."""
    if id not in EXERCISES:
        raise KeyError(f"No exercise {id!r}. Exercises: {', '.join(EXERCISES)}.")
    try:
        hint = EXERCISES[id].checker(answer)
    except Exception as e:  # the reader's function crashed: that is a wrong answer, with a reason
        hint = f"your answer raised {type(e).__name__}: {e}"
    print(f"Exercise {id}: " + ("correct." if hint is None else f"not yet: {hint}"))
    return hint is None


def _dense_params(sizes) -> int:
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def _layer_params(layer, input_shape) -> int:
    layer.build(input_shape)
    return layer.count_params()


# ---- Chapter 1 -------------------------------------------------------------

@exercise("1.1", "How many trainable parameters does the MLP 784-512-512-10 have? Answer with an int.")
def _mlp_params(answer):
    expected = _dense_params([784, 512, 512, 10])
    if answer == expected:
        return None
    return "each Dense layer has (inputs + 1) x outputs parameters: a weight per input and one bias per unit."


@exercise("1.2", "Write unroll(images): (n, 28, 28) uint8 -> (n, 784) float32 with values in [0, 1], "
                 "row by row.")
def _unroll(fn):
    images = (np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
    out = np.asarray(fn(images))
    if out.shape != (3, 784):
        return f"for 3 images the shape should be (3, 784), not {out.shape}."
    if out.dtype != np.float32:
        return f"the dtype should be float32, not {out.dtype}."
    if not np.allclose(out, images.reshape(3, 784) / 255.0):
        return "values should be pixel / 255, with the rows of the image one after the other."
    return None


@exercise("1.3", "Write accuracy_from_confusion(matrix): the accuracy a confusion matrix "
                 "(rows = true class, columns = predicted) records.")
def _accuracy_from_confusion(fn):
    for matrix in (np.diag([5, 3, 2]), np.array([[8, 2], [1, 9]]), np.array([[0, 4], [6, 0]])):
        expected = np.trace(matrix) / matrix.sum()
        got = fn(matrix)
        if not np.isclose(got, expected):
            return f"for {matrix.tolist()} the accuracy is {expected:.3f}, you gave {got}."
    return None


@exercise("1.4", "Write steps_per_epoch(n_images, batch_size): how many weight updates one epoch makes.")
def _steps(fn):
    for n, b in ((5000, 128), (60000, 128), (100, 100), (1, 32), (129, 128)):
        expected = -(-n // b)
        if fn(n, b) != expected:
            return f"{n} images in batches of {b} take {expected} steps (the last batch may be smaller)."
    return None


# ---- Chapter 2 -------------------------------------------------------------

@exercise("2.1", "Write conv_output_size(n, kernel, stride=1, padding='valid'): the width of a "
                 "convolution's output on an n-wide input ('valid' or 'same' padding).")
def _conv_output_size(fn):
    import keras

    for n, k, s, p in ((28, 3, 1, "valid"), (28, 5, 1, "valid"), (28, 3, 2, "valid"),
                       (28, 3, 2, "same"), (27, 3, 2, "same"), (32, 1, 1, "valid"), (7, 7, 1, "valid")):
        layer = keras.layers.Conv2D(1, k, strides=s, padding=p)
        expected = layer.compute_output_shape((1, n, n, 1))[1]
        got = fn(n, k, s, p)
        if got != expected:
            return f"n={n}, kernel={k}, stride={s}, padding={p!r} gives {expected}, not {got}."
    return None


@exercise("2.2", "How many parameters has a Conv2D with 64 filters of 3x3 applied to 32 input channels? "
                 "Answer with an int.")
def _conv_params(answer):
    import keras

    expected = _layer_params(keras.layers.Conv2D(64, 3), (None, 28, 28, 32))
    if answer == expected:
        return None
    return "each filter has 3 x 3 x (input channels) weights plus one bias."


@exercise("2.3", "Write max_pool(x): 2x2 max-pooling with stride 2 of a 2-D array with even sides.")
def _max_pool(fn):
    import keras

    x = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 1, 1], [9, 2, 3, 7]], dtype=np.float32)
    for array in (x, np.arange(36, dtype=np.float32).reshape(6, 6)[::-1]):
        expected = np.asarray(keras.layers.MaxPooling2D(2)(array[None, :, :, None]))[0, :, :, 0]
        got = np.asarray(fn(array))
        if got.shape != expected.shape or not np.allclose(got, expected):
            return f"for {array.tolist()} expected {expected.tolist()}, got {got.tolist()}."
    return None


@exercise("2.4", "Write convolve(image, kernel): the 'valid' sliding weighted sum (what Conv2D computes) "
                 "of a 2-D image with a 2-D kernel.")
def _convolve(fn):
    import tensorflow as tf

    image = (np.arange(49, dtype=np.float32).reshape(7, 7) % 5)
    for kernel in (np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32),
                   np.array([[1, 2], [0, -1]], np.float32)):
        expected = tf.nn.conv2d(image[None, :, :, None], kernel[:, :, None, None], 1, "VALID").numpy()[0, :, :, 0]
        got = np.asarray(fn(image, kernel))
        if got.shape != expected.shape or not np.allclose(got, expected):
            return (f"with kernel {kernel.tolist()} expected shape {expected.shape}, got {got.shape}; "
                    "no kernel flip: Conv2D slides the kernel as it is.")
    return None


# ---- Chapter 3 -------------------------------------------------------------

@exercise("3.1", "How many parameters has the first layer of the CIFAR-10 network: Conv2D with 32 "
                 "3x3 filters on an RGB image (with bias)? Answer with an int.")
def _rgb_conv_params(answer):
    import keras

    expected = _layer_params(keras.layers.Conv2D(32, 3), (None, 32, 32, 3))
    if answer == expected:
        return None
    grey = _layer_params(keras.layers.Conv2D(32, 3), (None, 32, 32, 1))
    return f"on a grey image the layer has {grey}; colour triples the weights of each filter, not the biases."


@exercise("3.2", "Write per_class_accuracy(y_true, y_pred, num_classes): an array of the accuracy on "
                 "each class.")
def _per_class_accuracy(fn):
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 0, 2, 2])
    expected = np.array([0.5, 2 / 3, 0.75])
    got = np.asarray(fn(y_true, y_pred, 3), dtype=float)
    if got.shape != expected.shape or not np.allclose(got, expected):
        return f"for y_true={y_true.tolist()}, y_pred={y_pred.tolist()} expected {np.round(expected, 3).tolist()}."
    return None


@exercise("3.3", "What is the shape (height, width, channels) of the feature map that the CIFAR-10 network "
                 "flattens? Answer with a tuple.")
def _flatten_shape(answer):
    from book_utils.models import build_cifar_cnn

    model = build_cifar_cnn()
    expected = tuple(model.get_layer("flatten").input.shape[1:])
    if tuple(answer) == expected:
        return None
    return "'same' padding keeps the size; each 2x2 max-pool halves it; the last conv sets the channels."


@exercise("3.4", "Write horizontal_flip(images): mirror a batch of (n, height, width, channels) images "
                 "left to right.")
def _horizontal_flip(fn):
    images = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    got = np.asarray(fn(images))
    expected = images[:, :, ::-1, :]
    if got.shape != images.shape or not np.array_equal(got, expected):
        return "flip the width axis (axis 2) only; rows, channels and the batch stay in place."
    return None
