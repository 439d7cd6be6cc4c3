"""Every exercise checker accepts a right answer and rejects a wrong one.

The right answers live here, in the tests, not in the book."""
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
    "1.1": 669_706,
    "1.2": unroll,
    "1.3": lambda m: np.trace(m) / m.sum(),
    "1.4": lambda n, b: -(-n // b),
    "2.1": conv_output_size,
    "2.2": 18_496,
    "2.3": max_pool,
    "2.4": convolve,
    "3.1": 896,
    "3.2": lambda t, p, k: np.array([(p[t == c] == c).mean() for c in range(k)]),
    "3.3": (8, 8, 64),
    "3.4": lambda x: x[:, :, ::-1],
}

WRONG = {
    "1.1": 784 * 512 + 512 * 512 + 512 * 10,  # forgot the biases
    "1.2": lambda x: x.reshape(len(x), -1),  # not scaled, wrong dtype
    "1.3": lambda m: np.trace(m) / len(m),
    "1.4": lambda n, b: n // b,  # drops the last partial batch
    "2.1": lambda n, k, s=1, p="valid": n - k + 1,  # ignores the stride
    "2.2": 64 * 9,
    "2.3": lambda x: x[::2, ::2],
    "2.4": lambda image, kernel: convolve(image, kernel[::-1, ::-1]),  # a flipped kernel
    "3.1": 320,
    "3.2": lambda t, p, k: np.full(k, (t == p).mean()),
    "3.3": (32, 32, 64),
    "3.4": lambda x: x[:, ::-1],  # flips vertically
}


def test_every_exercise_is_tested():
    assert set(RIGHT) == set(WRONG) == set(exercises.EXERCISES)
    chapters = {int(e.split(".")[0]) for e in exercises.EXERCISES}
    for chapter in chapters:
        assert len(exercises.questions(chapter)) >= 3


# Parametrized over the book's exercises; the answers are looked up when the test runs, so that
# the RIGHT.update / WRONG.update blocks of later chapters at the end of this file count too.
@pytest.mark.parametrize("exercise_id", sorted(exercises.EXERCISES))
def test_right_answer_passes(exercise_id, capsys):
    assert exercises.check(exercise_id, RIGHT[exercise_id]) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("exercise_id", sorted(exercises.EXERCISES))
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
