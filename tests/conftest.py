"""Test set-up: real data from BOOK_DATA_DIR, and results/models written under build/, never over results/."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Smoke runs in tests must never overwrite the committed full-run records.
os.environ.setdefault("BOOK_RESULTS_DIR", str(ROOT / "build" / "test-results"))
os.environ.setdefault("BOOK_MODELS_DIR", str(ROOT / "build" / "test-models"))
assert Path(os.environ["BOOK_RESULTS_DIR"]).resolve() != (ROOT / "results").resolve(), \
    "tests must not write into results/"

import book_utils  # noqa: E402,F401  (imports TensorFlow quietly)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory the book reads (BOOK_DATA_DIR; CI points it at ../shared/data)."""
    from book_utils import env
    return env.data_dir()


@pytest.fixture(scope="session")
def mnist():
    from book_utils import data
    return data.load("mnist")


@pytest.fixture(scope="session")
def cifar10():
    from book_utils import data
    return data.load("cifar10")
