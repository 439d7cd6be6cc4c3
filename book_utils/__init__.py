"""Helpers shared by the chapters of the CNN book.

Each chapter introduces a piece of code and shows its source; this package is
where the later chapters import it from. Import it before TensorFlow: it
imports TensorFlow quietly, so that start-up messages stay out of notebooks.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly():
    """TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL; hide stderr while it loads."""
    from book_utils.env import quiet

    with quiet():
        import tensorflow  # noqa: F401


_import_tensorflow_quietly()

__version__ = "0.1.0"

from book_utils.env import check_params, setup, show_source  # noqa: E402

__all__ = ["check_params", "setup", "show_source", "__version__"]
