"""Every exercise checker accepts a right answer and rejects a wrong one.

The right answers live here, in the tests, not in the book."""
import re

import numpy as np
import pytest

from book_utils import exercises


def unroll(images):
    return images.reshape(len(images), -1).astype(np.float32) / 255


def conv_output_size(n, kernel, stride=1, padding="valid"):
    return -(-n // stride) if padding == "same" else (n - kernel) // stride + 1


def max_pool(x):
    h, w = x.shape
    return x.reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))


def convolve(image, kernel):
    kh, kw = kernel.shape
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1), np.float32)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[r, c] = (image[r:r + kh, c:c + kw] * kernel).sum()
    return out


RIGHT = {
    "1.1": 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10,
    "1.2": unroll,
    "1.3": lambda m: np.trace(m) / m.sum(),
    "1.4": lambda n, b: -(-n // b),
    "2.1": conv_output_size,
    "2.2": 5 * 5 * 8 * 16 + 16,
    "2.3": max_pool,
    "2.4": convolve,
    "3.1": 3 * 3 * 3 * 48 + 48,
    "3.2": lambda t, p, k: np.array([(p[t == c] == c).mean() for c in range(k)]),
    "3.3": (4, 4, 128),
    "3.4": lambda x: x[:, :, ::-1],
}

WRONG = {
    "1.1": 784 * 256 + 256 * 128 + 128 * 10,  # forgot the biases
    "1.2": lambda x: x.reshape(len(x), -1),  # not scaled, wrong dtype
    "1.3": lambda m: np.trace(m) / len(m),
    "1.4": lambda n, b: n // b,  # drops the last partial batch
    "2.1": lambda n, k, s=1, p="valid": n - k + 1,  # ignores the stride
    "2.2": 5 * 5 * 16,
    "2.3": lambda x: x[::2, ::2],
    "2.4": lambda image, kernel: convolve(image, kernel[::-1, ::-1]),  # a flipped kernel
    "3.1": 3 * 3 * 48 + 48,
    "3.2": lambda t, p, k: np.full(k, (t == p).mean()),
    "3.3": (32, 32, 128),
    "3.4": lambda x: x[:, ::-1],  # flips vertically
}

# The predict-then-measure exercises and their possible answers (tested at the end of this file).
PREDICTIONS = {"1.5": ("lower", "same", "higher"), "2.5": ("lower", "same", "higher"), "3.5": ("lower", "same", "higher"),
               "4.5": ("lower", "same", "higher"),
               "5.5": ("plain", "resnet", "same"), "6.5": ("less", "as much", "more"),
               "7.5": ("less", "same", "more"), "8.5": ("lower", "same", "higher"), "9.5": ("none", "under 1%", "1% or more"),
               "10.5": ("less", "same", "more"),
               "11.5": ("fewer", "as many", "more")}


def test_every_exercise_is_tested():
    assert set(RIGHT) == set(WRONG) == set(exercises.EXERCISES) - set(PREDICTIONS)
    chapters = {int(e.split(".")[0]) for e in exercises.EXERCISES}
    for chapter in chapters:
        assert len(exercises.questions(chapter)) >= 3


# Parametrized over the book's exercises; the answers are looked up when the test runs, so that
# the RIGHT.update / WRONG.update blocks of later chapters at the end of this file count too.
@pytest.mark.parametrize("exercise_id", sorted(set(exercises.EXERCISES) - set(PREDICTIONS)))
def test_right_answer_passes(exercise_id, capsys):
    assert exercises.check(exercise_id, RIGHT[exercise_id]) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("exercise_id", sorted(set(exercises.EXERCISES) - set(PREDICTIONS)))
def test_wrong_answer_fails_with_a_hint(exercise_id, capsys):
    assert exercises.check(exercise_id, WRONG[exercise_id]) is False
    assert "not yet:" in capsys.readouterr().out


def test_a_crashing_answer_is_reported_not_raised(capsys):
    def broken(*args):
        raise ZeroDivisionError("oops")

    assert exercises.check("2.1", broken) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_unknown_exercise_names_the_existing_ones():
    with pytest.raises(KeyError, match="1.1"):
        exercises.check("9.9", 0)

RIGHT.update({"4.1": 3 * 3 * 64 * 128 + 2 * 3 * 3 * 128 * 128 + 3 * 4 * 128,  # three convs without bias, three BNs
              "4.2": lambda n: 2 * n + 1, "4.3": lambda h, w, c_in, c_out, k: h * w * k * k * c_in * c_out,
              "4.4": 137_728})
WRONG.update({"4.1": 3 * 3 * 64 * 128 + 2 * 3 * 3 * 128 * 128 + 3 * 128,  # biases instead of BN
              "4.2": lambda n: 3 * n, "4.3": lambda h, w, c_in, c_out, k: h * w * k * k * c_out,
              "4.4": 153_600})


def _separable_cost_ratio(n, k):
    return 1 / n + 1 / k ** 2


def _inverted_residual_params(c_in, t, c_out, k=3):
    hidden = c_in * t
    expand = (c_in * hidden + 4 * hidden) if t != 1 else 0
    return expand + k * k * hidden + 4 * hidden + hidden * c_out + 4 * c_out


RIGHT.update({"6.1": (512 * 64 + 64) + (64 * 256 + 256) + (9 * 64 * 256 + 256), "6.2": _separable_cost_ratio,
              "6.3": _inverted_residual_params, "6.4": lambda x: x * np.clip(x + 3, 0, 6) / 6})
WRONG.update({"6.1": (256 * 64 + 64) + (64 * 256 + 256) + (9 * 64 * 256 + 256),  # input taken as 256 channels
              "6.2": lambda n, k: 1 / k ** 2,  # forgot the pointwise convolution
              "6.3": lambda c_in, t, c_out, k=3: c_in * c_in * t + k * k * c_in * t + c_in * t * c_out,  # no BN
              "6.4": lambda x: x / (1 + np.exp(-x))})  # swish itself


def _cifar_resnet_params(depth):
    n = (depth - 2) // 6
    total = 3 * 3 * 3 * 16 + 4 * 16 + 64 * 10 + 10  # stem conv + BN, dense head
    for c in (16, 32, 64):
        first_in = 16 if c == 16 else c // 2
        total += 9 * first_in * c + 9 * c * c + 8 * c  # the first block of the stage
        total += (n - 1) * (18 * c * c + 8 * c)
    return total


RIGHT.update({"5.1": lambda c: 18 * c * c + 8 * c,
              "5.2": lambda f: 4 * f * f + 9 * f * f + 4 * f * f + 4 * (f + f + 4 * f),
              "5.3": _cifar_resnet_params})
WRONG.update({"5.1": lambda c: 18 * c * c,  # forgot batch normalization
              "5.2": lambda f: 3 * 9 * f * f + 4 * 6 * f,  # three 3x3 convs
              "5.3": lambda depth: 271_098})  # right for ResNet-20 only
RIGHT.update({"7.1": lambda phi: (1.2 ** phi, 1.1 ** phi, 1.15 ** phi),
              "7.2": 96 * 4 + 4 + 4 * 96 + 96,
              "7.3": 16 * 96 + 4 * 96 + 9 * 96 + 4 * 96 + (96 * 4 + 4 + 4 * 96 + 96) + 96 * 24 + 4 * 24,
              "7.4": 2_516_358})  # efficientnet(1.0, 0.5) for 32x32, 10 classes
WRONG.update({"7.1": lambda phi: (1.2 * phi, 1.1 * phi, 1.15 * phi),  # multiplied, not raised to phi
              "7.2": 96 * 4 + 4 * 96,  # forgot the biases
              "7.3": 16 * 96 + 9 * 96 + 96 * 24,  # forgot BN and SE
              "7.4": 4_062_374})  # full depth: B0 for 32x32


def _edgetpu_ops(names, supported):
    for i, name in enumerate(names):
        if name not in supported:
            return i
    return len(names)


RIGHT.update({"10.1": lambda x, s, z: np.clip(np.round(x / s + z), -128, 127).astype(np.int8),
              "10.2": _edgetpu_ops,
              "10.3": 64 * 9 * 32 + 4 * 64,
              "10.4": lambda p: (p.astype(np.int16) - 128).astype(np.int8)})
WRONG.update({"10.1": lambda x, s, z: np.round(x / s + z).astype(np.int8),  # no clipping: 300 wraps around
              "10.2": lambda names, supported: sum(name in supported for name in names),  # ignores the split
              "10.3": 4 * (64 * 9 * 32 + 64),  # float32 bytes
              "10.4": lambda p: p.astype(np.int8)})  # wraps 200 to -56 instead of shifting by -128
RIGHT.update({"11.1": lambda base_rate, base_batch, batch: base_rate * batch / base_batch,
              "11.2": lambda n, b, r: -(-n // (b * r)),
              "11.3": lambda n, workers, index: list(range(index, n, workers)),
              "11.4": "float32"})
WRONG.update({"11.1": lambda base_rate, base_batch, batch: base_rate * (batch / base_batch) ** 0.5,  # square-root rule
              "11.2": lambda n, b, r: n // (b * r),  # drops the last, smaller batch
              "11.3": lambda n, workers, index: list(range(index * (n // workers), (index + 1) * (n // workers))),
              "11.4": "bfloat16"})  # the compute dtype


def _fold_bn(w, b, gamma, beta, mean, var, eps):
    factor = gamma / np.sqrt(var + eps)
    return w * factor, (b - mean) * factor + beta


def _atan2(y, x):
    base = np.arctan(y / np.where(x == 0, 1e-12, x))
    return base + np.where(x < 0, np.where(y >= 0, np.pi, -np.pi), 0.0)


def _upright(p, o):
    return {1: p, 2: np.flip(p, 1), 3: np.rot90(p, 2), 4: np.flip(p, 0), 5: p.transpose(1, 0, 2),
            6: np.rot90(p, -1), 7: np.rot90(p.transpose(1, 0, 2), 2), 8: np.rot90(p, 1)}[o]


RIGHT.update({"8.1": lambda r, s, z: np.clip(np.round(r / s) + z, -128, 127).astype(np.int8),
              "8.2": 4_718_592 // 2 + 32,
              "8.3": lambda w, bits: np.abs(w).max() / (2 ** (bits - 1) - 1),
              "8.4": lambda p, q: (p.argmax(1) == q.argmax(1)).mean(),
              "9.1": lambda k: k.transpose(3, 2, 0, 1),
              "9.2": _fold_bn,
              "9.3": _atan2, "9.4": _upright})
WRONG.update({"8.1": lambda r, s, z: (np.round(r / s) + z).astype(np.int8),  # no clipping: wraps around
              "8.2": 4_718_592 // 2,  # forgot the lookup table
              "8.3": lambda w, bits: w.max() / (2 ** (bits - 1) - 1),  # ignores negative weights
              "8.4": lambda p, q: np.isclose(p, q).all(axis=1).mean(),  # same probabilities, not same class
              "9.1": lambda k: k.reshape(k.shape[::-1]),  # right shape, scrambled values
              "9.2": lambda w, b, g, be, m, v, eps: (w * g, b + be),  # forgot mean and variance
              "9.3": lambda y, x: np.arctan(y / np.where(x == 0, 1e-12, x)),  # wrong half of the plane
              "9.4": lambda p, o: np.rot90(p, {3: 2, 6: 1, 8: 3}.get(o, 0))})  # turned the wrong way, mirrors ignored


# Predict-then-measure exercises: the right answer is whatever the checker's experiment measures, so
# the test answers once, reads the measured outcome from the verdict, and checks the two agree.


@pytest.mark.parametrize("exercise_id", sorted(PREDICTIONS))
def test_prediction_exercises_judge_by_their_own_experiment(exercise_id, capsys):
    choices = PREDICTIONS[exercise_id]
    assert exercises.check(exercise_id, "maybe") is False
    assert "answer one of" in capsys.readouterr().out  # refused before any training
    right = exercises.check(exercise_id, choices[0])
    out = capsys.readouterr().out
    assert "%" in out  # the measured accuracies are printed
    if right:
        assert "correct" in out
    else:
        measured = re.search(r"the experiment says '([^']+)'", out).group(1)
        assert measured in choices and measured != choices[0]
