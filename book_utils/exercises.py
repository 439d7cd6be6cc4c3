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


def _block_params(block, input_channels, *args, **kwargs):
    """count_params() of one block from book_utils.blocks on an 8x8 input (the count does not depend on the size)."""
    import keras

    inputs = keras.Input((8, 8, input_channels))
    return keras.Model(inputs, block(inputs, *args, **kwargs)).count_params()


def _dense_params(sizes) -> int:
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def _layer_params(layer, input_shape) -> int:
    layer.build(input_shape)
    return layer.count_params()


# ---- Chapter 1 -------------------------------------------------------------

@exercise("1.1", "How many trainable parameters does an MLP 784-256-128-10 (dense layers with biases) have? "
                 "Answer with an int.")
def _mlp_params(answer):
    expected = _dense_params([784, 256, 128, 10])
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


@exercise("2.2", "How many parameters has a Conv2D with 16 filters of 5x5 applied to 8 input channels? "
                 "Answer with an int.")
def _conv_params(answer):
    import keras

    expected = _layer_params(keras.layers.Conv2D(16, 5), (None, 28, 28, 8))
    if answer == expected:
        return None
    return "each filter has 5 x 5 x (input channels) weights plus one bias."


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

@exercise("3.1", "How many parameters has a Conv2D with 48 filters of 3x3 (with bias) on an RGB image? "
                 "Answer with an int.")
def _rgb_conv_params(answer):
    import keras

    expected = _layer_params(keras.layers.Conv2D(48, 3), (None, 32, 32, 3))
    if answer == expected:
        return None
    grey = _layer_params(keras.layers.Conv2D(48, 3), (None, 32, 32, 1))
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


# ---- Predict, then measure: the checker runs the experiment ----------------------------------------------

def _prediction(choices: tuple[str, ...], experiment):
    """A checker for a predicted outcome: experiment() runs the experiment and returns (measured outcome, report)."""
    def checker(answer):
        if answer not in choices:
            return f"answer one of {', '.join(map(repr, choices))} (the experiment runs once you have)."
        measured, report = experiment()
        print(report)
        return None if answer == measured else f"the experiment says {measured!r}; read the numbers above."
    return checker


def _compare(a: float, b: float, tolerance: float = 0.01) -> str:
    """'lower', 'same' or 'higher': b against a, 'same' within `tolerance` (an accuracy fraction)."""
    return "same" if abs(b - a) <= tolerance else ("higher" if b > a else "lower")


def shuffled_pixels_experiment(build, *, train_images: int = 5000, epochs: int = 3, seed: int = 0) -> dict:
    """Train build() on MNIST images, then again with all pixels shuffled by one fixed permutation
    (the same for every image, train and test); return both test accuracies (on 2,000 test images)."""
    import keras

    from book_utils import data

    mnist = data.load("mnist")
    x, y = data.subset(mnist.x_train, mnist.y_train, train_images, seed)
    x_test, y_test = mnist.x_test[:2000], mnist.y_test[:2000]
    order = np.random.default_rng(seed).permutation(28 * 28)
    accuracy = {}
    for name, shuffle in (("original", False), ("shuffled", True)):
        keras.utils.set_random_seed(seed)
        tr, te = (a.reshape(len(a), -1)[:, order].reshape(a.shape) if shuffle else a for a in (x, x_test))
        model = build()
        if len(model.input_shape) == 4:
            tr, te = tr[..., None], te[..., None]
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(tr, y, epochs=epochs, batch_size=128, verbose=0)
        accuracy[name] = float(model.evaluate(te, y_test, verbose=0)[1])
    return accuracy


def _shuffled_pixels_checker(build, what: str, **settings):
    def experiment():
        acc = shuffled_pixels_experiment(build, **settings)
        return (_compare(acc["original"], acc["shuffled"]),
                f"{what}: {acc['original']:.2%} on the real digits, {acc['shuffled']:.2%} on shuffled pixels "
                "('same' means within 1 point)")
    return _prediction(("lower", "same", "higher"), experiment)


def _mlp():
    from book_utils.models import build_mlp
    return build_mlp()


def _cnn():
    from book_utils.models import build_cnn
    return build_cnn()


exercise("1.5", "Predict, then measure: shuffle the 784 pixels of every image with one fixed permutation "
                "(the same for all images, training and test). Is the MLP's test accuracy 'lower', 'same' or "
                "'higher' than on the real digits? The checker trains both.")(
    _shuffled_pixels_checker(_mlp, "MLP"))
exercise("2.5", "Predict, then measure: the same experiment as 1.5 with the CNN of this chapter. With the "
                "pixels shuffled, is its test accuracy 'lower', 'same' or 'higher'? The checker trains both.")(
    _shuffled_pixels_checker(_cnn, "CNN", train_images=3000, epochs=2))


def upside_down_experiment(*, train_images: int = 5000, epochs: int = 3, seed: int = 0) -> dict:
    """Chapter 3's network trained briefly on CIFAR-10 photos (no augmentation), then tested on 2,000 test
    photos as they are, mirrored left to right, and turned upside down; returns the three accuracies."""
    import keras

    from book_utils import data
    from book_utils.models import build_cifar_cnn

    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, train_images, seed)
    keras.utils.set_random_seed(seed)
    model = build_cifar_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    x_test, y_test = cifar.x_test[:2000], cifar.y_test[:2000]
    return {name: float(model.evaluate(images, y_test, verbose=0)[1]) for name, images in
            (("original", x_test), ("mirrored", x_test[:, :, ::-1]), ("upside down", x_test[:, ::-1]))}


def _upside_down_outcome():
    acc = upside_down_experiment()
    return (_compare(acc["original"], acc["upside down"], tolerance=0.02),
            f"test photos as they are: {acc['original']:.2%}; mirrored left to right: {acc['mirrored']:.2%}; "
            f"upside down: {acc['upside down']:.2%} ('same' means within 2 points)")


exercise("3.5", "Predict, then measure: train this chapter's network briefly without augmentation, then test it "
                "on the test photos turned upside down. Is its accuracy 'lower', 'same' or 'higher' than on the "
                "photos as they are? The checker trains it and also tries mirrored photos.")(
    _prediction(("lower", "same", "higher"), _upside_down_outcome))


# ---- Chapter 4 -------------------------------------------------------------

@exercise("4.1", "Block 3 of this chapter's half-width VGG-16 is blocks.vgg_block(x, 128, 3, batch_norm=True) on "
                 "the 64 channels block 2 outputs: three 3x3 convolutions with 128 filters, each followed by batch "
                 "normalization. How many parameters has it, BN's included? Answer with an int.")
def _vgg_block_params(answer):
    from book_utils.blocks import vgg_block

    expected = _block_params(vgg_block, 64, 128, 3, batch_norm=True)
    if answer == expected:
        return None
    convs = 3 * 3 * 64 * 128 + 2 * 3 * 3 * 128 * 128
    if answer == convs + 3 * 128:
        return "with batch normalization the convolutions have no bias (BN's shift replaces it); count BN instead."
    if answer == convs:
        return "add batch normalization: 4 numbers per channel (scale, shift, running mean and variance) per BN layer."
    return ("the first convolution sees 64 channels, the next two see 128; each has 3 x 3 x inputs x filters weights "
            "and no bias; each BN layer has 4 numbers per channel; the max-pool has none.")


@exercise("4.2", "Write receptive_field(n): the side of the input window that one output pixel of n stacked "
                 "3x3 convolutions (stride 1) depends on.")
def _receptive_field(fn):
    import tensorflow as tf

    for n in (1, 2, 3, 5, 8):
        size = 4 * n + 3
        x = np.zeros((1, size, size, 1), np.float32)
        x[0, size // 2, size // 2] = 1.0  # one lit pixel: the outputs it reaches span the receptive field
        for _ in range(n):
            x = tf.nn.conv2d(x, tf.ones((3, 3, 1, 1)), 1, "SAME")
        expected = int((np.asarray(x)[0, size // 2, :, 0] > 0).sum())
        got = fn(n)
        if got != expected:
            return f"receptive_field({n}) should be {expected}, not {got}: each 3x3 layer adds one pixel on each side."
    return None


@exercise("4.3", "Write conv_macs(h, w, c_in, c_out, k): multiply-accumulates per image of a k x k "
                 "convolution with 'same' padding and stride 1 on an h x w x c_in input, c_out filters.")
def _conv_macs(fn):
    import keras

    from book_utils.macs import count_macs

    for h, w, c_in, c_out, k in ((224, 224, 3, 64, 3), (28, 28, 192, 32, 5), (14, 10, 16, 8, 1)):
        inputs = keras.Input((h, w, c_in))
        conv = keras.layers.Conv2D(c_out, k, padding="same")(inputs)
        expected = count_macs(keras.Model(inputs, conv))
        got = fn(h, w, c_in, c_out, k)
        if got != expected:
            return (f"conv_macs{(h, w, c_in, c_out, k)} should be {expected:,}, not {got}: every output "
                    "position uses every weight of the kernel once.")
    return None


@exercise("4.4", "Inception (3a)'s 5x5 branch maps 192 channels to 32 with a 1x1 reduction to 16 channels "
                 "first. How many weights (no biases) does the reduction save against a 5x5 convolution "
                 "straight on the 192 channels? Answer with an int.")
def _reduction_saves(answer):
    import keras

    def weights(filters, k, c_in):
        return _layer_params(keras.layers.Conv2D(filters, k, use_bias=False), (None, 28, 28, c_in))

    expected = weights(32, 5, 192) - (weights(16, 1, 192) + weights(32, 5, 16))
    if answer == expected:
        return None
    return "count the direct 5x5 conv (5 x 5 x 192 x 32), then subtract both convs of the reduced branch."


def batch_norm_experiment(*, train_images: int = 4000, epochs: int = 2, learning_rate: float = 0.02,
                          seed: int = 0) -> dict:
    """A plain VGG-style stack of eight 3x3 convolutions (four blocks.vgg_block of two, 16-32-64-64 filters, then
    one dense layer) trained briefly on CIFAR-10 photos with SGD (momentum 0.9, a constant learning rate), once
    as it is and once with batch normalization after every convolution; returns both accuracies on 2,000 test
    photos."""
    import keras

    from book_utils import data
    from book_utils.blocks import vgg_block

    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, train_images, seed)
    x_test, y_test = cifar.x_test[:2000], cifar.y_test[:2000]
    accuracy = {}
    for name, batch_norm in (("plain", False), ("batch norm", True)):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(x.shape[1:])
        h = keras.layers.Rescaling(1 / 255)(inputs)
        for i, filters in enumerate((16, 32, 64, 64), start=1):
            h = vgg_block(h, filters, 2, batch_norm, name=f"block{i}")
        outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        accuracy[name] = float(model.evaluate(x_test, y_test, verbose=0)[1])
    return accuracy


def _batch_norm_outcome():
    acc = batch_norm_experiment()
    return (_compare(acc["plain"], acc["batch norm"], tolerance=0.02),
            f"eight plain convolutions: {acc['plain']:.2%}; with batch normalization: {acc['batch norm']:.2%} "
            "(chance is 10%; 'same' means within 2 points)")


exercise("4.5", "Predict, then measure: a plain VGG-style stack of eight 3x3 convolutions (four blocks of two, 16 to "
                "64 filters) is trained for 2 epochs on 4,000 CIFAR-10 photos with SGD (learning rate 0.02, momentum "
                "0.9), once as it is and once with batch normalization after every convolution. With BN, is the "
                "test accuracy 'lower', 'same' or 'higher'? The checker trains both.")(
    _prediction(("lower", "same", "higher"), _batch_norm_outcome))


# ---- Chapter 6 -------------------------------------------------------------

@exercise("6.1", "Read architectures.squeezenet: how many parameters has SqueezeNet 1.1's last fire module, fire9 "
                 "(its three convolutions, all with biases)? Its input is what fire8 outputs. Answer with an int.")
def _fire_params(answer):
    from book_utils.architectures import squeezenet

    net = squeezenet()
    expected = sum(net.get_layer(f"fire9_{part}").count_params() for part in ("squeeze1x1", "expand1x1", "expand3x3"))
    if answer == expected:
        return None
    return ("fire8 concatenates its two expands, so fire9 sees 256 + 256 channels; its 1x1 squeeze sees them all, "
            "both expands see only the 64 squeezed channels; each filter has one bias.")


@exercise("6.2", "Write separable_cost_ratio(n_out, k): the MACs of a k x k depthwise convolution plus a 1x1 "
                 "pointwise convolution to n_out channels, divided by those of a standard k x k convolution "
                 "to n_out channels (same input, 'same' padding).")
def _separable_ratio(fn):
    import keras

    from book_utils.macs import count_macs

    for m, n, k in ((32, 64, 3), (512, 512, 3), (16, 1000, 5), (96, 24, 7)):
        def cost(*layer_list):
            return count_macs(keras.Sequential([keras.Input((8, 8, m)), *layer_list]))

        standard = cost(keras.layers.Conv2D(n, k, padding="same", use_bias=False))
        separable = cost(keras.layers.DepthwiseConv2D(k, padding="same", use_bias=False),
                         keras.layers.Conv2D(n, 1, use_bias=False))
        got = fn(n, k)
        if not np.isclose(got, separable / standard):
            return (f"with {m} input channels, n_out={n}, k={k} the ratio is {separable / standard:.4f}, "
                    f"not {got}; it does not depend on the input channels or the map size.")
    return None


@exercise("6.3", "Write inverted_residual_params(c_in, expansion, c_out, kernel=3): the count_params() of "
                 "blocks.inverted_residual on c_in channels (BN's 4 numbers per channel included; take "
                 "c_in x expansion as the hidden width).")
def _inverted_residual_params(fn):
    from book_utils.blocks import inverted_residual

    for c_in, expansion, c_out, kernel in ((16, 6, 24, 3), (24, 6, 24, 3), (32, 1, 16, 3), (40, 6, 80, 5)):
        expected = _block_params(inverted_residual, c_in, c_out, expansion, 1, kernel)
        got = fn(c_in, expansion, c_out, kernel)
        if got != expected:
            return (f"c_in={c_in}, expansion={expansion}, c_out={c_out}, kernel={kernel} gives {expected:,}, "
                    f"not {got}. No conv has a bias; each conv is followed by BN; expansion 1 has no expand conv.")
    return None


@exercise("6.4", "Write hard_swish(x) for NumPy arrays: MobileNetV3's piecewise-linear version of swish.")
def _hard_swish(fn):
    import keras

    x = np.linspace(-8, 8, 161).astype(np.float32)
    expected = keras.ops.convert_to_numpy(keras.activations.hard_swish(x))
    got = np.asarray(fn(x), dtype=np.float64)
    if got.shape != x.shape or not np.allclose(got, expected, atol=1e-5):
        worst = float(x[np.argmax(np.abs(np.broadcast_to(got, x.shape) - expected))]) if got.size == x.size else 0
        return f"x * ReLU6(x + 3) / 6: zero below -3, x above 3, a parabola between (check x = {worst:g})."
    return None


def separable_speed_experiment(*, shape=(32, 32, 128), rounds: int = 3, repeats: int = 150) -> dict:
    """Batch-1 time of a standard 3x3 convolution and of a depthwise separable one (3x3 depthwise, then 1x1
    pointwise) with the same input and output channels, on an input of `shape`, timed together with
    measure.rounds_ms. Returns both layers' MACs and their milliseconds in every round."""
    import keras

    from book_utils import macs, measure

    def layer(*layer_list):
        return keras.Sequential([keras.Input(shape), *layer_list])

    channels = shape[-1]
    nets = {"standard": layer(keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)),
            "separable": layer(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False),
                               keras.layers.Conv2D(channels, 1, use_bias=False))}
    ms = measure.rounds_ms({name: measure.forward_pass(net) for name, net in nets.items()}, repeats, rounds)
    return {"macs": {name: macs.count_macs(net) for name, net in nets.items()}, "ms": ms}


def _separable_speed_outcome():
    result = separable_speed_experiment()
    mac_ratio = result["macs"]["standard"] / result["macs"]["separable"]
    speedups = [s / p for s, p in zip(result["ms"]["standard"], result["ms"]["separable"])]
    speedup = float(np.median(speedups))
    measured = "less" if speedup < mac_ratio / 1.5 else ("more" if speedup > 1.5 * mac_ratio else "as much")
    rounds = "; ".join(f"standard {s:.2f} ms, separable {p:.2f} ms" for s, p in
                       zip(result["ms"]["standard"], result["ms"]["separable"]))
    return measured, (f"MACs: standard {result['macs']['standard'] / 1e6:.0f} M, separable "
                      f"{result['macs']['separable'] / 1e6:.1f} M ({mac_ratio:.1f} times fewer). Time per image, "
                      f"batch 1, {len(speedups)} rounds: {rounds}. The separable layer does {1 / mac_ratio:.0%} of "
                      f"the MACs in {1 / speedup:.0%} of the time: {speedup:.1f} times faster (median of the rounds; "
                      "'as much' means within a factor of 1.5 of the MAC ratio).")


exercise("6.5", "Predict, then measure: on a 32x32 map with 128 channels, a depthwise separable convolution (3x3 "
                "depthwise, then 1x1 to 128 channels) does 1/128 + 1/9 of the MACs of a standard 3x3 convolution "
                "to 128 channels, about 8.4 times fewer. On this machine, at batch 1, is it faster than the standard "
                "one by 'less' than that, by 'as much' or by 'more'? The checker times both together with measure.rounds_ms.")(
    _prediction(("less", "as much", "more"), _separable_speed_outcome))


# Chapter 5: ResNet

@exercise("5.1", "Write basic_block_params(c): the parameters of a stride-1 basic residual block with c input "
                 "and c output channels (two 3x3 convolutions without bias, each followed by BN with 4 "
                 "numbers per channel; the identity shortcut is free).")
def _basic_block_params(fn):
    from book_utils.blocks import basic_residual_block

    for c in (16, 32, 64, 512):
        expected = _block_params(basic_residual_block, c, filters=c)
        if fn(c) != expected:
            return f"c={c} gives {expected:,}, not {fn(c)}. Each 3x3 conv has 3 x 3 x c x c weights."
    return None


@exercise("5.2", "Write bottleneck_params(f): the parameters of a stride-1 bottleneck block whose input has 4f "
                 "channels (1x1 to f, 3x3 f to f, 1x1 to 4f, no biases, BN after each; identity shortcut).")
def _bottleneck_params(f_fn):
    from book_utils.blocks import bottleneck_block

    for f in (16, 64, 128, 512):
        expected = _block_params(bottleneck_block, 4 * f, filters=f)
        if f_fn(f) != expected:
            return f"f={f} gives {expected:,}, not {f_fn(f)}. Count the three convs, then BN on f, f and 4f channels."
    return None


@exercise("5.3", "Change the depth: write cifar_resnet_params(depth) giving the parameters of "
                 "architectures.resnet_cifar(depth) (6n + 2 layers, 10 classes, option-A shortcuts) without "
                 "building it.")
def _cifar_resnet_params(fn):
    from book_utils.architectures import resnet_cifar

    for depth in (8, 20, 32, 56):
        expected = resnet_cifar(depth).count_params()
        if fn(depth) != expected:
            return (f"depth {depth} gives {expected:,}, not {fn(depth)}. Stem: a 3x3 conv (3 -> 16) and BN; "
                    "n blocks per stage at 16, 32, 64 channels (the first block of stages 2 and 3 takes half "
                    "as many channels in); head: 64 x 10 weights + 10 biases.")
    return None


def block_removal_experiment(*, train_images: int = 5000, epochs: int = 3, seed: int = 0) -> dict:
    """ResNet-20 and the plain network of the same depth, each trained briefly with the recipe, then tested on
    2,000 test photos as they are and with each block that keeps the resolution switched off in turn (the last
    batch norm of its branch scaled to zero, so its branch outputs zeros). Returns {network: {"intact": accuracy,
    block name: accuracy, ...}}."""
    import keras

    from book_utils import data, train
    from book_utils.architectures import resnet_cifar

    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, train_images, seed)
    x_test, y_test = cifar.x_test[:2000], cifar.y_test[:2000]
    result = {}
    for name, residual in (("ResNet-20", True), ("plain-20", False)):
        keras.utils.set_random_seed(seed)
        model = resnet_cifar(20, residual=residual)
        train.fit_recipe(model, x, y, (cifar.x_test[-1000:], cifar.y_test[-1000:]), epochs=epochs, seed=seed,
                         verbose=0)

        def accuracy():
            return float((model.predict(x_test, batch_size=500, verbose=0).argmax(axis=1) == y_test).mean())

        result[name] = {"intact": accuracy()}
        for stage in (1, 2, 3):
            for block in (2, 3) if stage > 1 else (1, 2, 3):  # the first block of stages 2, 3 changes the shape
                bn = model.get_layer(f"stage{stage}_block{block}_2_bn")
                saved = [w.numpy() for w in bn.weights]
                bn.gamma.assign(np.zeros_like(saved[0]))
                bn.beta.assign(np.zeros_like(saved[1]))
                result[name][f"stage{stage}_block{block}"] = accuracy()
                for w, value in zip(bn.weights, saved):
                    w.assign(value)
    return result


def _block_removal_outcome():
    acc = block_removal_experiment()
    drops = {name: float(np.mean([a["intact"] - v for block, v in a.items() if block != "intact"]))
             for name, a in acc.items()}
    lines = [f"{name}: {a['intact']:.2%} intact; one block off at a time: "
             + ", ".join(f"{v:.1%}" for block, v in a.items() if block != "intact")
             + f" (mean drop {100 * drops[name]:.1f} points)" for name, a in acc.items()]
    outcome = _compare(drops["ResNet-20"], drops["plain-20"], tolerance=0.02)
    outcome = {"higher": "plain", "lower": "resnet", "same": "same"}[outcome]  # whose drop is larger
    return outcome, "\n".join(lines) + "\n('same' means mean drops within 2 points)"


exercise("5.5", "Predict, then measure: switch off one block at a time (its branch outputs zeros) in a ResNet-20 and "
                "in the plain network of the same depth, both trained briefly. Which loses more test accuracy on "
                "average: 'plain', 'resnet' or 'same'? The checker trains both and switches off each block that "
                "keeps the resolution.")(
    _prediction(("plain", "resnet", "same"), _block_removal_outcome))


# ---- Chapter 7 -------------------------------------------------------------

@exercise("7.1", "Write compound_scaling(phi): EfficientNet's (depth, width, resolution) multipliers for a "
                 "given phi, with alpha = 1.2, beta = 1.1, gamma = 1.15.")
def _compound_scaling(fn):
    alpha, beta, gamma = 1.2, 1.1, 1.15  # the paper's grid search on B0, section 3.3
    for phi in (0, 1, 2, 3.5, -1):
        expected = (alpha ** phi, beta ** phi, gamma ** phi)
        got = tuple(fn(phi))
        if len(got) != 3 or not np.allclose(got, expected):
            return (f"for phi={phi} expected multipliers close to {tuple(round(v, 3) for v in expected)}, "
                    f"got {got}: depth = alpha^phi, width = beta^phi, resolution = gamma^phi.")
    return None


@exercise("7.2", "How many parameters has the squeeze-and-excite block of EfficientNet-B0's stage-2 first "
                 "MBConv: on 96 channels, squeezing to 4 (blocks.squeeze_excite, with biases)? Answer with an int.")
def _se_params(answer):
    import keras

    from book_utils.blocks import squeeze_excite

    x = keras.Input((8, 8, 96))
    expected = keras.Model(x, squeeze_excite(x, 4)).count_params()
    if answer == expected:
        return None
    return "two 1x1 convs on the pooled vector: 96 -> 4 and 4 -> 96, each with a bias per output channel."


@exercise("7.3", "How many parameters has blocks.mbconv(x, 24, expansion=6, strides=2, kernel_size=3) on a "
                 "16-channel input (B0's stage-2 first block), batch normalization included? Answer with an int.")
def _mbconv_params(answer):
    import keras

    from book_utils.blocks import mbconv

    x = keras.Input((32, 32, 16))
    expected = keras.Model(x, mbconv(x, 24, expansion=6, strides=2, kernel_size=3)).count_params()
    if answer == expected:
        return None
    return ("add up: 1x1 expand 16 -> 96 (no bias) + BN (4 per channel), 3x3 depthwise (9 per channel) + BN, "
            "SE (squeeze to a quarter of the block's input width, with biases), 1x1 project 96 -> 24 + BN.")


@exercise("7.4", "Halve only the depth: how many parameters has EfficientNet-B0 for CIFAR-10 at full width and "
                 "half depth, architectures.efficientnet(1.0, 0.5, input_shape=(32, 32, 3), classes=10, "
                 "small_input=True)? Compare with the chapter's counts at full size and at half width and depth. "
                 "Answer with an int.")
def _half_depth_params(answer):
    from book_utils.architectures import efficientnet

    def count(width, depth, classes=10):
        return efficientnet(width, depth, input_shape=(32, 32, 3), classes=classes, small_input=True).count_params()

    expected = count(1.0, 0.5)
    if answer == expected:
        return None
    if answer == count(1.0, 1.0):
        return "that is B0 at full depth: depth 0.5 halves every stage's repeats (rounded up)."
    if answer == count(0.5, 0.5):
        return "that is the chapter's model, which halves the width too; keep width 1.0."
    if answer == count(1.0, 0.5, classes=1000):
        return "that count has ImageNet's 1,000 classes; CIFAR-10 has 10."
    return "build it: architectures.efficientnet(1.0, 0.5, input_shape=(32, 32, 3), classes=10, small_input=True)."


def resolution_experiment(*, sizes=(32, 64), repeats: int = 15, rounds: int = 5, seed: int = 0) -> dict:
    """The chapter's small EfficientNet (width 0.5, depth 0.5, stride-1 stem) built for each input size:
    MACs per image (macs.count_macs) and CPU milliseconds per image at batch 1, the sizes timed together
    (measure.compare_latency_ms: `rounds` rounds of `repeats` runs each, each size's fastest round's median;
    a busy machine slows some rounds, never speeds one up). Returns {size: {"macs": ..., "ms": ...}}."""
    import keras

    from book_utils import architectures, macs, measure

    keras.utils.set_random_seed(seed)
    nets = {size: architectures.efficientnet(0.5, 0.5, input_shape=(size, size, 3), classes=10, small_input=True)
            for size in sizes}
    ms = measure.compare_latency_ms(nets, repeats * rounds, rounds)
    return {size: {"macs": macs.count_macs(net), "ms": ms[size]} for size, net in nets.items()}


def _time_against_macs(small: dict, large: dict) -> tuple[str, str]:
    """Did the time per image grow 'less' than the MACs, the 'same' factor (75% to 125% of it) or 'more'?
    small, large: {"macs", "ms"}. Returns the outcome and a sentence with both factors."""
    mac_factor, time_factor = large["macs"] / small["macs"], large["ms"] / small["ms"]
    share = time_factor / mac_factor
    outcome = "same" if 0.75 <= share <= 1.25 else ("less" if share < 0.75 else "more")
    return outcome, (f"The MACs grew {mac_factor:.2f}x, the time {time_factor:.2f}x, {share:.0%} of the MACs' "
                     "factor ('same' means 75% to 125%).")


def _resolution_outcome():
    small, large = resolution_experiment().values()
    outcome, factors = _time_against_macs(small, large)
    return (outcome,
            f"32x32: {small['macs'] / 1e6:.1f} M MACs, {small['ms']:.2f} ms per image; 64x64: "
            f"{large['macs'] / 1e6:.1f} M MACs, {large['ms']:.2f} ms per image. {factors}")


exercise("7.5", "Predict, then measure: build the chapter's small EfficientNet (width 0.5, depth 0.5, stride-1 "
                "stem) for 64x64 images instead of 32x32. Four times the pixels: its MACs grow about 4x. Does its "
                "CPU time per image (batch 1) grow 'less' than its MACs, the 'same' factor (within a quarter), or "
                "'more'? The checker counts the MACs and times both networks (under a minute).")(
    _prediction(("less", "same", "more"), _resolution_outcome))


# ---- Chapter 10 ------------------------------------------------------------

@exercise("10.1", "Write quantize(x, scale, zero_point): the int8 values TFLite stores for the real values x "
                  "(x / scale + zero_point, rounded to the nearest integer, clipped to -128..127), as an int8 array.")
def _quantize(fn):
    x = np.array([-1.0, -0.26, 0.0, 0.1, 0.49, 2.0, 300.0])
    for scale, zero in ((0.01, 0), (1.0, -128), (0.5, 3)):
        expected = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        out = np.asarray(fn(x, scale, zero))
        if out.dtype != np.int8:
            return f"return int8 values, not {out.dtype}."
        if not np.array_equal(out, expected):
            return (f"for scale {scale} and zero point {zero}, x = {x.tolist()} should give {expected.tolist()}, "
                    f"not {out.tolist()}: divide by the scale, add the zero point, round, then clip.")
    return None


@exercise("10.2", "Write edgetpu_ops(op_names, supported): how many operators of a model (names in execution "
                  "order) the Edge TPU compiler maps to the Edge TPU, given the set of supported names.")
def _edgetpu_ops(fn):
    from book_utils import edgetpu

    cases = [["CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"],
             ["CONV_2D", "HARD_SWISH", "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"],
             ["CONV_2D", "CONV_2D", "LEAKY_RELU", "CONV_2D", "HARD_SWISH", "SOFTMAX"],
             ["HARD_SWISH", "CONV_2D"], []]
    for names in cases:
        expected = next((i for i, name in enumerate(names) if name not in edgetpu.SUPPORTED_OPS), len(names))
        got = fn(list(names), set(edgetpu.SUPPORTED_OPS))
        if got != expected:
            return (f"for {names} the answer is {expected}, not {got}: the compiler stops at the first unsupported "
                    "op, and every op after it runs on the CPU too, supported or not.")
    return None


@exercise("10.3", "How many bytes do the weights and biases of an int8 Conv2D layer with 64 filters of 3x3 on 32 "
                  "input channels take in a .tflite file (int8 weights, int32 biases)? Answer with an int.")
def _int8_conv_bytes(answer):
    import keras

    conv = keras.layers.Conv2D(64, 3)
    conv.build((None, 8, 8, 32))
    kernel, bias = (int(np.prod(w.shape)) for w in conv.weights)
    expected = kernel * 1 + bias * 4
    if answer == expected:
        return None
    if answer == 4 * (kernel + bias):
        return "that is the float32 size: int8 weights take one byte each (biases stay 32-bit)."
    return "count the weights (3 x 3 x inputs x filters, one byte each) and the biases (one per filter, four bytes)."


@exercise("10.4", "The int8 model's input has scale 1.0 and zero point -128. Write to_int8_input(pixels): the "
                  "int8 array to feed it for an array of uint8 pixels 0..255.")
def _to_int8_input(fn):
    pixels = np.array([[0, 1, 127, 128, 200, 255]], dtype=np.uint8)
    expected = (pixels.astype(np.int16) - 128).astype(np.int8)
    out = np.asarray(fn(pixels.copy()))
    if out.dtype != np.int8:
        return f"return int8 values, not {out.dtype}."
    if not np.array_equal(out, expected):
        return (f"pixels {pixels.tolist()} should give {expected.tolist()}, not {out.tolist()}: q = pixel / scale + "
                "zero point; compute it in a wider integer type before casting, or 200 wraps around.")
    return None


def edgetpu_cpu_experiment(*, calibration: int = 100, repeats: int = 50, rounds: int = 5, seed: int = 0) -> dict:
    """MobileNetV2 (alpha 1.0) and EfficientNet-EdgeTPU-S for 32x32 photos (stride-1 stems, untrained: the
    time does not depend on the weights), each converted to full int8 (tflite.convert, batch 1) with
    `calibration` CIFAR-10 training photos: MACs per image (macs.count_macs) and LiteRT's milliseconds per
    image on one CPU thread. The two are timed in turn, `rounds` times, and each keeps its fastest median: a
    busy machine slows some rounds, never speeds one up. Returns {name: {"macs", "ms"}} and the CPU."""
    import keras

    from book_utils import architectures, data, macs, measure, tflite

    cifar = data.load("cifar10")
    photos = data.subset(cifar.x_train, cifar.y_train, calibration, seed)[0]
    keras.utils.set_random_seed(seed)
    nets = {"MobileNetV2": architectures.mobilenet_v2((32, 32, 3), 10, small_input=True),
            "EfficientNet-EdgeTPU-S": architectures.efficientnet_edgetpu("S", (32, 32, 3), 10, small_input=True)}
    files = {name: tflite.convert(net, "int8", representative=photos, batch_size=1) for name, net in nets.items()}
    per_round = measure.rounds_ms({name: tflite.forward_pass(f) for name, f in files.items()}, repeats * rounds, rounds)
    ms = {name: min(times) for name, times in per_round.items()}
    return {"nets": {name: {"macs": macs.count_macs(net), "ms": ms[name]} for name, net in nets.items()},
            "cpu": measure.instruction_sets()}


def _edgetpu_cpu_outcome():
    r = edgetpu_cpu_experiment()
    mobile, edge = r["nets"]["MobileNetV2"], r["nets"]["EfficientNet-EdgeTPU-S"]
    outcome, factors = _time_against_macs(mobile, edge)
    cpu = r["cpu"]
    isa = ", ".join(cpu["isa"]) if cpu["isa"] else "not known on this system"
    return (outcome,
            f"MobileNetV2: {mobile['macs'] / 1e6:.1f} M MACs, {mobile['ms']:.3f} ms per image; EfficientNet-EdgeTPU-S: "
            f"{edge['macs'] / 1e6:.1f} M MACs, {edge['ms']:.3f} ms per image (int8, LiteRT, one thread, batch 1). "
            f"{factors} CPU: {cpu['cpu']} ({isa}).")


exercise("10.5", "Predict, then measure: EfficientNet-EdgeTPU-S for 32x32 photos does several times the MACs of "
                 "MobileNetV2 (both with the stride-1 stem; macs.count_macs counts them). Run both as full-int8 files "
                 "with LiteRT on this CPU (one thread, batch 1): does EdgeTPU-S's time per image grow 'less' than its "
                 "MACs, by the 'same' factor (within a quarter), or 'more'? The checker converts and times both "
                 "(about a minute) and prints the CPU's instruction sets.")(
    _prediction(("less", "same", "more"), _edgetpu_cpu_outcome))


# ---- Chapter 11 (appendix: scaling) ----------------------------------------

@exercise("11.1", "Write scaled_learning_rate(base_rate, base_batch, batch): the learning rate for a global "
                  "batch of `batch` images by the linear scaling rule, given the rate that suits base_batch.")
def _scaled_learning_rate(fn):
    for base_rate, base_batch, batch in ((0.1, 256, 1024), (0.1, 128, 128), (0.4, 1024, 256), (0.05, 64, 8192)):
        expected = base_rate * (batch / base_batch)
        got = fn(base_rate, base_batch, batch)
        if not np.isclose(got, expected):
            return (f"for base rate {base_rate} at batch {base_batch}, a batch of {batch} should get {expected:g}, "
                    f"not {got}: the rate grows in proportion to the batch.")
    return None


@exercise("11.2", "Write steps_per_epoch(n_images, per_replica_batch, replicas): how many synchronous steps one "
                  "epoch takes when every replica gets per_replica_batch images per step (count a last, "
                  "smaller batch).")
def _steps_per_epoch_replicas(fn):
    for n, b, r in ((1_281_167, 128, 8), (45_000, 64, 2), (50_000, 128, 1), (1000, 100, 10), (10, 64, 8)):
        expected = -(-n // (b * r))
        if fn(n, b, r) != expected:
            return (f"{n} images, {b} per replica, {r} replicas: {expected} steps, not {fn(n, b, r)}. "
                    "Each step consumes one global batch of per_replica_batch x replicas images.")
    return None


@exercise("11.3", "Write shard(n, workers, index): the list of element positions (0 .. n-1) that worker `index` "
                  "reads when tf.data shards a data set of n elements between `workers` workers.")
def _shard(fn):
    import tensorflow as tf

    for n, workers, index in ((12, 2, 1), (10, 3, 0), (10, 3, 2), (7, 4, 3), (5, 8, 6)):
        expected = [int(i) for i in tf.data.Dataset.range(n).shard(workers, index).as_numpy_iterator()]
        got = [int(i) for i in fn(n, workers, index)]
        if got != expected:
            return f"shard({n}, {workers}, {index}) should be {expected}, not {got}: ask tf.data what it does."
    return None


@exercise("11.4", "Under the mixed_bfloat16 policy, in which dtype does a Dense layer keep its kernel? "
                  "Answer with a string such as 'float16'.")
def _mixed_variable_dtype(answer):
    import keras

    layer = keras.layers.Dense(4, dtype=keras.mixed_precision.Policy("mixed_bfloat16"))
    layer.build((None, 3))
    expected = str(layer.kernel.dtype)
    if str(answer) == expected:
        return None
    return (f"not {answer!r}: a mixed policy computes in 16 bits but keeps the weights in a type that can "
            "hold small updates. Try it: keras.layers.Dense(4, dtype='mixed_bfloat16').")


def augment_order_experiment(*, images: int = 4096, batch_size: int = 128, rounds: int = 3, seed: int = 0) -> dict:
    """Steady-state images per second (measure.images_per_second, its defaults) of data.pipeline over `images`
    CIFAR-10 training photos with the book's augmentation, which batches first and augments whole batches, and
    of the same pipeline augmenting each image alone before batching (cache, shuffle, parallel map and prefetch
    as they are). The two are measured in turn, `rounds` times, and each keeps its best rate: a busy machine
    slows some rounds, never speeds one up. Returns {"batched": ..., "per image": ...}."""
    import tensorflow as tf

    from book_utils import data, measure, models

    cifar = data.load("cifar10")
    x, y = data.subset(cifar.x_train, cifar.y_train, images, seed)
    augment = models.augmentation(seed)

    def one_image(image, label):
        return augment(tf.cast(image, tf.float32)[None], training=True)[0], tf.one_hot(label, 10)

    pipelines = {
        "batched": data.pipeline(x, y, batch_size=batch_size, training=True, augment=augment, classes=10, seed=seed),
        "per image": tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), seed=seed)
        .map(one_image, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE),
    }
    rates = {name: 0.0 for name in pipelines}
    for _ in range(rounds):
        for name, ds in pipelines.items():
            rates[name] = max(rates[name], measure.images_per_second(ds))
    return rates


def _augment_order_outcome():
    from book_utils import env

    rates = augment_order_experiment()
    share = rates["per image"] / rates["batched"]
    outcome = "as many" if 0.8 <= share <= 1.25 else ("fewer" if share < 0.8 else "more")
    return (outcome,
            f"data.pipeline (augments whole batches): {rates['batched']:,.0f} images/s; augmenting each image "
            f"before batching: {rates['per image']:,.0f} images/s, {share:.0%} of the batched rate ('as many' "
            f"means 80% to 125%). Steady state, best of 3 rounds, on {env.hardware()}.")


exercise("11.5", "Predict, then measure: data.pipeline batches the photos first and then augments whole batches. "
                 "Move the augmentation before the batching, so that each image is augmented alone (cache, "
                 "shuffle, parallel map and prefetch stay). At steady state, does this pipeline deliver 'fewer' "
                 "images per second than data.pipeline, 'as many' (within 20%) or 'more'? The checker measures "
                 "both with measure.images_per_second on 4,096 CIFAR-10 photos (under a minute).")(
    _prediction(("fewer", "as many", "more"), _augment_order_outcome))


# ---- Chapter 8 -------------------------------------------------------------

@exercise("8.1", "Write quantize(r, scale, zero_point): int8 codes of real numbers r with the affine map "
                 "r = scale * (q - zero_point): round to the nearest integer, clip to -128..127, dtype int8.")
def _quantize(fn):
    r = np.array([-3.0, -0.26, -0.24, 0.0, 0.1, 0.74, 1.26, 5.0, 100.0], np.float32)
    for scale, zero in ((0.5, 0), (0.02, -128), (0.25, 10)):
        out = np.asarray(fn(r, scale, zero))
        if out.dtype != np.int8:
            return f"return int8 values, not {out.dtype}."
        expected = np.clip(np.round(r / scale) + zero, -128, 127).astype(np.int8)
        if not np.array_equal(out, expected):
            return (f"for scale {scale} and zero point {zero} expected {expected.tolist()}: divide by the scale, "
                    "round, add the zero point, then clip.")
    return None


@exercise("8.2", "A 4-bit palettized weight tensor has 4,718,592 weights and one lookup table of 16 float16 "
                 "values. How many bytes does it take? Answer with an int.")
def _palette_bytes(answer):
    n, bits, table = 4_718_592, 4, 16
    expected = n * bits // 8 + table * 2
    if answer == expected:
        return None
    if answer == n * bits // 8:
        return "add the lookup table: 16 values of 2 bytes each."
    return "each weight is a 4-bit index (half a byte); the table holds 16 float16 values."


@exercise("8.3", "Write symmetric_scale(w, bits): the scale of symmetric linear quantization of the weights w to "
                 "signed `bits`-bit integers, so that the largest |w| maps to 2**(bits-1) - 1.")
def _symmetric_scale(fn):
    rng = np.random.default_rng(8)
    for bits in (8, 4, 2):
        w = rng.normal(0, 0.1, 500).astype(np.float32)
        w[7] = -0.9  # the extreme weight is negative
        expected = float(np.abs(w).max()) / (2 ** (bits - 1) - 1)
        if not np.isclose(float(fn(w, bits)), expected, rtol=1e-5):
            return f"for {bits} bits expected {expected:.6f}: the largest |w| (mind negative weights) over 2**(bits-1) - 1."
    return None


@exercise("8.4", "Write agreement(p, q): the fraction of images on which two models' probability arrays "
                 "(n, classes) have the same top-1 class.")
def _agreement(fn):
    rng = np.random.default_rng(4)
    p = rng.random((50, 10))
    q = p.copy()
    q[:10] = rng.random((10, 10))
    expected = float((p.argmax(1) == q.argmax(1)).mean())
    if not np.isclose(float(fn(p, q)), expected):
        return f"expected {expected:.2f}: compare p.argmax(axis=1) with q.argmax(axis=1) and take the mean."
    return None


def calibration_data_experiment(*, train_images: int = 6000, epochs: int = 2, calibration: int = 300,
                                test_images: int = 2000, seed: int = 0) -> dict:
    """A small digit CNN (two convolutions, 13k parameters) trained briefly on MNIST, converted to full int8
    three times with `calibration` images each: held-out training digits, uniform random noise (0-255), and
    CIFAR-10 photos turned grey and cropped to 28x28. Returns each int8 model's top-1 agreement with the float
    model on `test_images` test digits."""
    import keras

    from book_utils import data, tflite

    mnist = data.load("mnist")
    x, y = data.subset(mnist.x_train, mnist.y_train, train_images + calibration, seed)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 3, activation="relu")(h))
    h = keras.layers.MaxPooling2D()(keras.layers.Conv2D(32, 3, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[:train_images, ..., None], y[:train_images], epochs=epochs, batch_size=64, verbose=0)
    x_test = mnist.x_test[:test_images, ..., None]
    reference = model.predict(x_test, verbose=0).argmax(axis=1)
    photos = data.load("cifar10").x_train[:calibration].mean(axis=-1, keepdims=True)[:, 2:30, 2:30]
    sets = {"digits": x[train_images:, ..., None],
            "noise": np.random.default_rng(seed).integers(0, 256, (calibration, 28, 28, 1)),
            "grey photos": photos}
    return {name: float((tflite.predict(tflite.convert(model, "int8", representative=images.astype("uint8")),
                                        x_test).argmax(axis=1) == reference).mean())
            for name, images in sets.items()}


def _calibration_data_outcome():
    agree = calibration_data_experiment()
    return (_compare(agree["digits"], agree["noise"]),
            f"top-1 agreement of the int8 model with the float model on 2,000 test digits, calibrated with 300 "
            f"digits: {agree['digits']:.2%}; with 300 images of random noise: {agree['noise']:.2%}; with 300 grey "
            f"photos: {agree['grey photos']:.2%} ('same' means within 1 point)")


exercise("8.5", "Predict, then measure: calibrate the full-int8 conversion of a small digit CNN with 300 images of "
                "random noise (pixels uniform in 0-255) instead of 300 digits. Is the int8 model's agreement with "
                "the float model 'lower', 'same' or 'higher' than with digit calibration? The checker trains the "
                "CNN, converts it both ways (and once with grey photos) and measures.")(
    _prediction(("lower", "same", "higher"), _calibration_data_outcome))


# ---- Chapter 9 -------------------------------------------------------------

@exercise("9.1", "Core ML stores a Conv2D kernel as (out, in, height, width); Keras as (height, width, in, out). "
                 "Write to_coreml(kernel) for a Keras kernel array.")
def _to_coreml(fn):
    import keras

    layer = keras.layers.Conv2D(5, (3, 2))
    layer.build((None, 8, 8, 4))
    kernel = np.asarray(layer.kernel)
    out = np.asarray(fn(kernel))
    if out.shape != (5, 4, 3, 2):
        return f"a (3, 2, 4, 5) kernel should become (5, 4, 3, 2), not {out.shape}."
    if not np.array_equal(out, kernel.transpose(3, 2, 0, 1)):
        return "the shape is right but the values moved: out[o, i, y, x] must equal kernel[y, x, i, o]."
    return None


@exercise("9.2", "Fold batch normalization into a Dense layer: write fold_bn(w, b, gamma, beta, mean, var, eps) "
                 "returning (w2, b2) so that x @ w2 + b2 equals BN(x @ w + b) at inference.")
def _fold_bn(fn):
    import keras

    rng = np.random.default_rng(9)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    dense, bn = keras.layers.Dense(3), keras.layers.BatchNormalization(epsilon=0.01)
    dense.build((None, 5))
    bn.build((None, 3))
    bn.set_weights([rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)])
    dense.set_weights([rng.normal(size=(5, 3)), rng.normal(size=3)])
    expected = np.asarray(bn(dense(x), training=False))
    gamma, beta, mean, var = bn.get_weights()
    w, b = dense.get_weights()
    w2, b2 = fn(w, b, gamma, beta, mean, var, 0.01)
    if not np.allclose(x @ np.asarray(w2) + np.asarray(b2), expected, atol=1e-4):
        return "scale each output column by gamma / sqrt(var + eps), and b2 = (b - mean) * that + beta."
    return None


@exercise("9.3", "Write atan2(y, x) for NumPy arrays using only np.arctan, np.where and arithmetic (the "
                 "custom layer's conversion): the angle of the point (x, y) in -pi..pi.")
def _atan2(fn):
    values = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], np.float32)
    y, x = (a.ravel() for a in np.meshgrid(values, values))
    out = np.asarray(fn(y, x), dtype=np.float64)
    expected = np.arctan2(y, x)
    wrong = ~np.isclose(out, expected, atol=1e-5)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        return f"atan2({y[i]:g}, {x[i]:g}) should be {expected[i]:.4f}, not {out[i]:.4f} (mind x < 0 and x == 0)."
    return None


@exercise("9.4", "A camera stores its pixels as the sensor saw them and an orientation number, 1 to 8 (EXIF's, "
                 "and CGImagePropertyOrientation's raw values), saying where the stored first row and first "
                 "column belong in the photo as shown: 1 top/left, 2 top/right, 3 bottom/right, 4 bottom/left, "
                 "5 left/top, 6 right/top, 7 right/bottom, 8 left/bottom. Write upright(pixels, orientation): "
                 "the (rows, columns, channels) array as it should be shown (what Vision does with the "
                 "orientation you pass it).")
def _upright(fn):
    from PIL import Image, ImageOps

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # no two pixels alike
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        image.getexif()[0x0112] = orientation  # the EXIF orientation tag, which Pillow applies
        expected = np.asarray(ImageOps.exif_transpose(image))
        out = np.asarray(fn(pixels.copy(), orientation))
        if out.shape != expected.shape or not np.array_equal(out, expected):
            return (f"orientation {orientation}: the stored first row belongs at the photo's "
                    f"{['top', 'top', 'bottom', 'bottom', 'left', 'right', 'right', 'left'][orientation - 1]} and "
                    f"the first column at its "
                    f"{['left', 'right', 'right', 'left', 'top', 'top', 'bottom', 'bottom'][orientation - 1]}; "
                    f"expected shape {expected.shape} with {expected[0, 0].tolist()} in the top left corner, got "
                    f"shape {out.shape}{'' if out.ndim < 3 else f' with {out[0, 0].tolist()}'}. np.rot90, "
                    "np.flip and np.transpose (axes 1, 0, 2) are all it takes.")
    return None


def float16_experiment(*, test_images: int = 2000, seed: int = 0) -> dict:
    """Chapter 6's MobileNetV2 (or, when the models folder lacks it, the chapter's stand-in trained briefly)
    converted to a float16 ML program; its weights back in Keras, computing in float16 (coreml.float16_copy),
    against the float32 Keras model on `test_images` CIFAR-10 test photos."""
    from book_utils import architectures, coreml, data, train

    cifar = data.load("cifar10")
    model, source, _ = train.earlier_model(
        "06_mobilenets.keras",
        lambda: architectures.mobilenet_v2(cifar.x_train.shape[1:], 10, alpha=0.35, small_input=True),
        cifar.x_train, cifar.y_train, epochs=3, train_size=2000, batch_size=32, learning_rate=0.05, seed=seed)
    half = coreml.float16_copy(coreml.load_into_keras(model, coreml.convert(model, cifar.class_names,
                                                                           precision="float16")))
    x, y = cifar.x_test[:test_images], cifar.y_test[:test_images]
    full_top1 = model.predict(x, batch_size=500, verbose=0).argmax(1)
    half_top1 = np.asarray(half.predict(x, batch_size=500, verbose=0), np.float32).argmax(1)
    return {"model": source, "images": len(x), "changed": float((full_top1 != half_top1).mean()),
            "float32 accuracy": float((full_top1 == y).mean()), "float16 accuracy": float((half_top1 == y).mean())}


def _float16_outcome():
    r = float16_experiment()
    changed = r["changed"]
    measured = "none" if changed == 0 else ("under 1%" if changed < 0.01 else "1% or more")
    return measured, (f"{r['model']}: on {r['images']:,} test photos, float32 {r['float32 accuracy']:.2%} correct, "
                      f"float16 weights and arithmetic {r['float16 accuracy']:.2%}; the top class changed on "
                      f"{changed:.2%} of the photos ({round(changed * r['images'])} photos).")


exercise("9.5", "Predict, then measure: the chapter ran the float16 file's weights in Keras in float32. On the "
                "GPU and the Neural Engine the arithmetic is float16 too: every activation rounded to 11 "
                "significant bits. Let Keras compute in float16 with the file's weights (coreml.float16_copy). On "
                "2,000 test photos, on how many does MobileNetV2's top class then differ from the float32 model's: "
                "'none', 'under 1%' or '1% or more'? The checker converts and measures (about a minute; longer "
                "when it must first train a stand-in).")(
    _prediction(("none", "under 1%", "1% or more"), _float16_outcome))
