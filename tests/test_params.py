"""Notebook parameters of the wrong type or out of range get a clear error."""
import pytest

from book_utils import check_params
from book_utils.env import ParameterError


def test_good_parameters_pass():
    check_params(SMOKE=True, EPOCHS=3, BATCH_SIZE=64, TRAIN_SIZE=None, SEED=0, LEARNING_RATE=0.002, DROPOUT=0.1)
    check_params(TRAIN_SIZE=1000)


@pytest.mark.parametrize("name, value, expected", [
    ("EPOCHS", "5", "a whole number >= 1"),
    ("EPOCHS", 0, "a whole number >= 1"),
    ("EPOCHS", 2.5, "a whole number >= 1"),
    ("BATCH_SIZE", True, "a whole number >= 1"),
    ("SMOKE", "yes", "True or False"),
    ("TRAIN_SIZE", 5, "None \\(all\\) or a whole number >= 10"),
    ("SEED", -1, "a whole number >= 0"),
    ("LEARNING_RATE", "fast", "a number between 0 and 10"),
    ("DROPOUT", 0.5 * 2, "a fraction between 0 and 1"),
])
def test_bad_parameter_names_the_problem_and_the_fix(name, value, expected):
    with pytest.raises(ParameterError, match=expected) as err:
        check_params(**{name: value})
    assert f"Parameter {name}" in str(err.value) and f"-p {name}" in str(err.value)
