"""Where things live (data, results, models), seeds, hardware and notebook set-up."""
from __future__ import annotations

import contextlib
import logging
import os
import platform
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@contextlib.contextmanager
def quiet():
    """Hide what TensorFlow's and LiteRT's C++ code prints on stderr (it ignores TF_CPP_MIN_LOG_LEVEL),
    and TensorFlow's Python INFO lines (which name temporary folders), for the duration of a block."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no real stderr (some embedded interpreters): nothing to hide
        saved = None
    if saved is not None:
        os.dup2(devnull, 2)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        tf_logger.setLevel(level)


def repo_root() -> Path | None:
    """The book's checkout when the package runs from one (editable install), else None."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").exists() and (root / "notebooks").is_dir():
        return root
    return None


def _book_dir(env_var: str, name: str) -> Path:
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / name


def data_dir() -> Path:
    """Offline data sets: $BOOK_DATA_DIR, else data/ of the checkout."""
    return _book_dir("BOOK_DATA_DIR", "data")


def results_dir() -> Path:
    """Where each chapter's run writes its results JSON: $BOOK_RESULTS_DIR, else results/."""
    return _book_dir("BOOK_RESULTS_DIR", "results")


def models_dir() -> Path:
    """Trained models that later chapters load: $BOOK_MODELS_DIR, else models/ (created when missing)."""
    path = _book_dir("BOOK_MODELS_DIR", "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def keras_cache_dir() -> Path:
    """Keras's own download cache ($KERAS_HOME/datasets, by default ~/.keras/datasets)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


# The vector instructions that decide how fast a CPU runs float32, bfloat16 and int8 kernels.
CPU_FEATURES = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "VNNI": ("avx512_vnni", "avx_vnni"),
                "BF16": ("avx512_bf16",), "AMX": ("amx_tile",), "NEON dot product": ("asimddp",)}


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its instruction-set flags (/proc/cpuinfo; elsewhere no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: say nothing rather than guess
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and model in (platform.processor(), platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features"):
            flags |= set(value.split())
    return model, flags


def cpu_features(flags: str | None = None) -> list[str]:
    """The CPU's vector instruction sets that matter for inference speed, by name (AVX2, VNNI, ...)."""
    have = cpu_info()[1] if flags is None else set(flags.split())
    return [name for name, names in CPU_FEATURES.items() if have & set(names)]


def hardware() -> str:
    """A one-line description of the machine a result was measured on, with its CPU's vector instructions."""
    cpu = cpu_info()[0]
    features = cpu_features()
    if features:
        cpu += f" ({', '.join(features)})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores, {platform.system()}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    text += f", {len(gpus)} GPU" if gpus else ", no GPU"
    return text


def setup(seed: int = 42, mode: str = "full", deterministic: bool = True) -> str:
    """Seed Python, NumPy and TensorFlow, make ops deterministic, and stamp figures with the run.

    Returns a line saying the mode, the hardware and the date, which every figure then carries.
    """
    import datetime as dt

    import keras
    import tensorflow as tf

    from book_utils import plots

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    plots.RUN_STAMP = f"{mode} run, {hardware()}, {today}"
    return plots.RUN_STAMP


def show_source(obj) -> object:
    """Display the source code of a book_utils function or class in the notebook."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


class ParameterError(ValueError):
    """A notebook parameter has the wrong type or is out of range."""


CHOICES = {"OPTIMIZER": ("sgd", "adamw"), "DATASET": ("cifar10", "imagenette")}  # text parameters


def check_params(**params) -> None:
    """Validate a notebook's parameters (as papermill passed them) and say clearly what is wrong."""
    for name, value in params.items():
        if name == "SMOKE" or name.startswith("USE_"):
            ok, want = isinstance(value, bool), "True or False"
        elif name.endswith("_SIZE") and name != "BATCH_SIZE":  # TRAIN_SIZE and friends: None means all
            ok, want = value is None or (_is_int(value) and value >= 10), "None (all) or a whole number >= 10"
        elif name == "SEED":
            ok, want = _is_int(value) and value >= 0, "a whole number >= 0"
        elif name in ("DROPOUT", "LABEL_SMOOTHING"):
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1, \
                "a fraction between 0 and 1"
        elif name.endswith(("LEARNING_RATE", "WEIGHT_DECAY")):  # QAT_LEARNING_RATE too
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 10, \
                "a number between 0 and 10"
        elif name.endswith(("WIDTH", "ALPHA", "_SCALE")):  # WIDTH, EFFICIENTNET_WIDTH, DEPTH_SCALE...
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 8, \
                "a scale factor above 0 and at most 8 (1.0 is the paper's network)"
        elif name in CHOICES:
            ok, want = value in CHOICES[name], "one of " + ", ".join(map(repr, CHOICES[name]))
        else:  # EPOCHS, BATCH_SIZE, and other counts
            ok, want = _is_int(value) and value >= 1, "a whole number >= 1"
        if not ok:
            raise ParameterError(f"Parameter {name} must be {want}, but got {value!r} ({type(value).__name__}). "
                                 f"With papermill, pass it as e.g. -p {name} <value>; in the notebook, "
                                 "edit the parameters cell.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
