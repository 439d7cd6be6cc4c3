"""Loading the book's data sets: offline copies first, then Keras's cache, then the official download.

Every file is checked against a published or recorded checksum before it is used (MNIST and
CIFAR-10 by the sha256 of their official arrays, whatever file holds them); a file that does
not match is refused and left untouched.

    >>> ds = load("mnist")
    >>> ds.x_train.shape, ds.source
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from book_utils import env

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenette")

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
# Imagenette (fast.ai): ten easy ImageNet classes, one folder per WordNet id. No cats; one dog.
IMAGENETTE_CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                      "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                      "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                      "n03888257": "parachute"}
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_OFFLINE = "imagenette2-224-subset.tgz"  # the offline subset (see SOURCES.md of the data folder)

# Checksums of the files this module reads as files: (algorithm, hex digest, which copy it is).
# The official ones are published by the data sets' authors, Keras or torchvision; the offline
# copies' are recorded in the data folder's SOURCES.md and in Debian's dataset-fashion-mnist.
KNOWN_FILES: dict[str, list[tuple[str, str, str]]] = {
    "mnist.npz": [("sha256", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1", "Keras download"),
                  ("sha256", "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
                   "lossless offline copy")],
    "cifar10.npz": [("sha256", "8eedc18e0917abc2bfc44b7fddb2e44a97c803d0808054251cc048afa5415832",
                     "lossless offline copy")],
    "train-images-idx3-ubyte.gz": [
        ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "official Fashion-MNIST"),
        ("sha256", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", "Debian Fashion-MNIST")],
    "train-labels-idx1-ubyte.gz": [
        ("md5", "25c81989df183df01b3e8a0aad5dffbe", "official Fashion-MNIST"),
        ("sha256", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", "Debian Fashion-MNIST")],
    "t10k-images-idx3-ubyte.gz": [
        ("md5", "bef4ecab320f06d8554ea6380940ec79", "official Fashion-MNIST"),
        ("sha256", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", "Debian Fashion-MNIST")],
    "t10k-labels-idx1-ubyte.gz": [
        ("md5", "bb300cfdad3c16e7a12a480ee83cd310", "official Fashion-MNIST"),
        ("sha256", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", "Debian Fashion-MNIST")],
    "imagenette2-160.tgz": [  # the md5 torchvision's Imagenette dataset publishes for this URL
        ("md5", "e793b78cc4c9e9a4ccc0c1155377a412", "Imagenette 2 (160 px), fast.ai")],
    IMAGENETTE_OFFLINE: [("sha256", "0fb8a88c2bff563df4d08189e0b2e8602b5abb584f94cf746f629de95a98a0bf",
                          "Imagenette offline subset (224 px)")],
}
# sha256 of the official arrays' raw bytes (uint8, C order), whatever file they came in: Keras's
# download and the lossless offline copy hold the same arrays, so both pass (and nothing else does).
OFFICIAL_ARRAYS: dict[str, dict[str, str]] = {
    "mnist": {"x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
              "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
              "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
              "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"},
    "cifar10": {"x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
                "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
                "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
                "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"},
}
SOURCE = {"mnist": "MNIST, official 60k/10k", "cifar10": "CIFAR-10, official 50k/10k"}
KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(RuntimeError):
    """A data set could not be loaded; the message says why and what to do."""


class ImageError(ValueError):
    """Images that do not fit a model (shape, type or value range); the message says how to fix them."""


class ChecksumError(DataError):
    """A file's checksum does not match any known copy of it."""


@dataclass
class Dataset:
    """Images as uint8 arrays (N, H, W) or (N, H, W, C), labels as int arrays (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str  # which data this is, recorded with every result
    files: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train {self.x_train.shape}, test {self.x_test.shape}, "
                f"{len(self.class_names)} classes, source={self.source!r})")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_REFUSED = ("The file is corrupt, truncated or a different version; it was not used and not changed. "
            "Delete it and download it again, or point BOOK_DATA_DIR at a good copy.")


def verify(path: str | os.PathLike) -> str:
    """Check a data file against its known checksums; return which copy it is or raise ChecksumError."""
    path = Path(path)
    known = KNOWN_FILES.get(path.name)
    if not known:
        raise ChecksumError(f"{path.name} is not a file this book knows, so it cannot be verified. "
                            f"Known files: {', '.join(sorted(KNOWN_FILES))}.")
    digests: dict[str, str] = {}
    for algorithm, digest, origin in known:
        if algorithm not in digests:
            digests[algorithm] = file_digest(path, algorithm)
        if digests[algorithm] == digest:
            return origin
    raise ChecksumError(f"{path} does not match any published checksum of {path.name} "
                        f"(its sha256 is {digests.get('sha256') or file_digest(path, 'sha256')}). {_REFUSED}")


def verify_arrays(name: str, arrays: dict[str, np.ndarray], where: str) -> None:
    """Check that the arrays are the official data set `name`, byte for byte; else raise ChecksumError."""
    wrong = [key for key, digest in OFFICIAL_ARRAYS[name].items()
             if key not in arrays
             or hashlib.sha256(np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes()).hexdigest() != digest]
    if wrong:
        raise ChecksumError(f"{where} does not match any published checksum of the official {SOURCE[name]} "
                            f"arrays (different: {', '.join(wrong)}). {_REFUSED}")


def _find(directory: Path, name: str, subdir: str) -> Path | None:
    for candidate in (directory / subdir / name, directory / name):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): a magic number, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _not_found(name: str, looked: list[str], download_error: str | None) -> DataError:
    places = "\n".join(f"  - {p}" for p in looked)
    why = (f"The official download failed: {download_error}" if download_error
           else "Downloading was switched off (download=False or BOOK_OFFLINE=1).")
    return DataError(
        f"Could not load the {name} data set. Looked in:\n{places}\n{why}\n"
        "What to do: connect to the internet and run again (the official files are downloaded "
        "once and verified), or set BOOK_DATA_DIR to a folder holding the offline copies "
        "(for this project's developers and CI: ../shared/data).")


def _download_allowed(download: bool | None) -> bool:
    if download is None:
        return os.environ.get("BOOK_OFFLINE", "0") != "1"
    return download


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         download: bool | None = None) -> Dataset:
    """Load one of the book's data sets by name ("mnist", "fashion_mnist", "cifar10", "imagenette")."""
    loaders = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10,
               "imagenette": load_imagenette}
    if name not in loaders:
        raise DataError(f"Unknown data set {name!r}. Choose one of: {', '.join(DATASETS)}; "
                        "for a folder of images use image_folder_dataset(path).")
    return loaders[name](data_dir=data_dir, download=download)


def load_mnist(*, data_dir=None, download: bool | None = None) -> Dataset:
    """MNIST: 28x28 grey digits, 60,000 + 10,000. Data directory, then Keras's cache, then the official download."""
    return _load_npz("mnist", MNIST_CLASSES, data_dir, download)


def load_cifar10(*, data_dir=None, download: bool | None = None) -> Dataset:
    """CIFAR-10: 32x32 colour photos, 50,000 + 10,000. Data directory, then Keras (its cache or the download)."""
    return _load_npz("cifar10", CIFAR10_CLASSES, data_dir, download)


def _load_npz(name: str, class_names: list[str], data_dir, download: bool | None) -> Dataset:
    """The official arrays: cifar10.npz / mnist.npz in the data directory, else Keras's cache or download.

    Whatever the file, the arrays are checked against the official arrays' sha256 before use."""
    directory = Path(data_dir) if data_dir else env.data_dir()
    npz = _find(directory, f"{name}.npz", name)
    if npz:
        return _dataset(name, class_names, _read_npz(npz), "lossless offline copy", npz)
    looked = [f"{directory} ({name}.npz or {name}/{name}.npz)"]
    cached = env.keras_cache_dir() / ("mnist.npz" if name == "mnist" else "cifar-10-batches-py-target")
    if not cached.exists() and not _download_allowed(download):
        raise _not_found(SOURCE[name].split(",")[0], looked + [str(cached)], None)
    try:  # Keras checks the downloaded file against its published sha256 first
        import keras
        if name == "mnist":
            path = Path(keras.utils.get_file("mnist.npz", origin=KERAS_DATASETS_URL + "mnist.npz",
                                             file_hash=KNOWN_FILES["mnist.npz"][0][1]))
            return _dataset(name, class_names, _read_npz(path), "Keras download", path)
        (x_tr, y_tr), (x_te, y_te) = keras.datasets.cifar10.load_data()
    except ChecksumError:
        raise
    except Exception as e:  # network errors come in many types; report them all the same way
        raise _not_found(SOURCE[name].split(",")[0], looked + [str(cached)], f"{type(e).__name__}: {e}") from None
    arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    return _dataset(name, class_names, arrays, "Keras download", cached)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except Exception as e:  # a damaged zip raises zipfile, zlib, OSError or KeyError errors
        raise ChecksumError(f"{path} does not match any published checksum: it cannot be read as the "
                            f"data set's .npz file ({type(e).__name__}: {e}). {_REFUSED}") from None


def _dataset(name: str, class_names: list[str], arrays: dict, copy: str, path: Path) -> Dataset:
    verify_arrays(name, arrays, str(path))
    return Dataset(name, arrays["x_train"], arrays["y_train"].reshape(-1).astype(np.int64), arrays["x_test"],
                   arrays["y_test"].reshape(-1).astype(np.int64), class_names, f"{SOURCE[name]} ({copy})",
                   [str(path)])


def load_fashion_mnist(*, data_dir=None, download: bool | None = None) -> Dataset:
    """Fashion-MNIST: 28x28 grey clothes. Data directory, Debian's package, Keras's cache, download."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    directory = Path(data_dir) if data_dir else env.data_dir()
    cache = env.keras_cache_dir() / "fashion-mnist"
    looked = []
    for place, label in ((directory / "fashion-mnist", "data directory"),
                         (DEBIAN_FASHION_MNIST, "Debian package dataset-fashion-mnist"),
                         (cache, "Keras cache")):
        paths = [place / n for n in names]
        if all(p.is_file() for p in paths):
            return _fashion_from(paths, f"Fashion-MNIST, official 60k/10k ({label})")
        looked.append(str(place))
    if not _download_allowed(download):
        raise _not_found("Fashion-MNIST", looked, None)
    try:
        import keras
        paths = [Path(keras.utils.get_file(n, origin=KERAS_DATASETS_URL + n, cache_subdir="datasets/fashion-mnist",
                                           file_hash=KNOWN_FILES[n][0][1], hash_algorithm="md5"))
                 for n in names]
    except Exception as e:
        raise _not_found("Fashion-MNIST", looked, f"{type(e).__name__}: {e}") from None
    return _fashion_from(paths, "Fashion-MNIST, official 60k/10k (official download)")


def _fashion_from(paths: list[Path], source: str) -> Dataset:
    for p in paths:
        verify(p)
    x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in paths)
    return Dataset("fashion_mnist", x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64),
                   FASHION_MNIST_CLASSES, source, [str(p) for p in paths])


IMAGENETTE_SIZE = 64  # pixels: square crops of the photos, small enough for a CPU


def load_imagenette(*, data_dir=None, download: bool | None = None) -> Dataset:
    """Imagenette: photos of ten ImageNet classes as 64x64 centre crops; its val split is the test set.

    Offline: the subset in the data directory (1,500 train + 1,000 val images of imagenette2, re-saved at
    224x224 without keeping the aspect ratio). Online: fast.ai's imagenette2-160 (9,469 + 3,925), by md5.
    """
    directory = Path(data_dir) if data_dir else env.data_dir()
    tar = _find(directory, IMAGENETTE_OFFLINE, "imagenette") or _find(directory, "imagenette2-160.tgz", "imagenette")
    cached = env.keras_cache_dir() / "imagenette2-160.tgz"
    if not tar and cached.is_file():
        tar = cached
    if not tar:
        looked = [f"{directory} ({IMAGENETTE_OFFLINE} or imagenette2-160.tgz)", str(cached)]
        if not _download_allowed(download):
            raise _not_found("Imagenette", looked, None)
        try:
            import keras
            tar = Path(keras.utils.get_file("imagenette2-160.tgz", origin=IMAGENETTE_URL,
                                            file_hash=KNOWN_FILES["imagenette2-160.tgz"][0][1]))
        except Exception as e:
            raise _not_found("Imagenette", looked, f"{type(e).__name__}: {e}") from None
    arrays = _cached_image_tar(tar, IMAGENETTE_CLASSES, size=IMAGENETTE_SIZE)
    what = ("Imagenette offline subset (1,500 train / 1,000 val of imagenette2, squashed to 224 px)"
            if tar.name == IMAGENETTE_OFFLINE else "Imagenette 2 (160 px, fast.ai)")
    return Dataset("imagenette", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   list(IMAGENETTE_CLASSES.values()),
                   f"{what} as {IMAGENETTE_SIZE}x{IMAGENETTE_SIZE} centre crops; test = its val split", [str(tar)])


def _cached_image_tar(tar: Path, folders: dict[str, str], size: int | None) -> dict[str, np.ndarray]:
    """Verify an archive of <split>/<class folder>/<image> files, decode it once, cache the arrays as .npz."""
    verify(tar)
    digest = file_digest(tar, "sha256")
    cache = env.keras_cache_dir() / f"{tar.name.split('.')[0]}{f'-{size}px' if size else ''}-{digest[:12]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    arrays = _decode_image_tar(tar, list(folders), size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)  # atomic: a killed run never leaves half a cache behind
    return arrays


SPLITS = {"train": "train", "val": "test"}  # folder name -> split (Imagenette's val split is the test set)


def _decode_image_tar(tar: Path, folders: list[str], size: int | None = None) -> dict[str, np.ndarray]:
    """Decode every <split>/<class folder>/<image> in the archive with Pillow (optionally a centre square crop)."""
    from PIL import Image

    out: dict[str, tuple[list, list, list]] = {"train": ([], [], []), "test": ([], [], [])}
    index = {c: i for i, c in enumerate(folders)}
    with tarfile.open(tar, "r:gz") as t:
        for member in t:
            parts = member.name.strip("./").split("/")[-3:]  # ignore a top-level folder
            if not member.isfile() or len(parts) != 3 or parts[0] not in SPLITS or parts[1] not in index:
                continue
            image = Image.open(io.BytesIO(t.extractfile(member).read())).convert("RGB")
            if size:
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            names, xs, ys = out[SPLITS[parts[0]]]
            names.append(parts[2])
            xs.append(np.asarray(image, dtype=np.uint8))
            ys.append(index[parts[1]])
    arrays = {}
    for split, (names, xs, ys) in out.items():
        order = sorted(range(len(names)), key=lambda i: (ys[i], names[i]))  # a stable, documented order
        arrays[f"x_{split}"] = np.stack([xs[i] for i in order])
        arrays[f"y_{split}"] = np.array([ys[i] for i in order], dtype=np.int64)
    return arrays


def image_folder_dataset(directory: str | os.PathLike, *, image_size=(32, 32), batch_size: int = 64,
                         shuffle: bool = True, seed: int = 42):
    """A batched, cached, prefetched tf.data pipeline over a folder of <class>/<image> files."""
    import keras
    import tensorflow as tf

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a folder. Pass a folder with one sub-folder of images per class.")
    ds = keras.utils.image_dataset_from_directory(directory, image_size=image_size, batch_size=batch_size,
                                                  shuffle=shuffle, seed=seed, verbose=False)
    return ds.cache().prefetch(tf.data.AUTOTUNE)


def pipeline(x: np.ndarray, y: np.ndarray, *, batch_size: int = 128, training: bool = False, augment=None,
             classes: int | None = None, seed: int = 42):
    """A tf.data input pipeline over arrays: cache, shuffle, batch, augment, prefetch.

    training: reshuffle every epoch and apply `augment` (a Keras layer, e.g. models.augmentation())
    to each batch, on the CPU threads that tf.data runs in parallel with training.
    classes: one-hot encode the labels (needed for label smoothing).
    """
    import tensorflow as tf

    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels; pass matching arrays.")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)
        if training and augment is not None:
            images = augment(images, training=True)
        if classes:
            labels = tf.one_hot(labels, classes)
        return images, labels

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def check_images(images, shape) -> np.ndarray:
    """Images as a model takes them: (N, *shape[1:]) numbers in 0..255 (one image may omit N); else ImageError."""
    images, shape = np.asarray(images), tuple(None if n is None else int(n) for n in shape)
    if images.ndim == len(shape) - 1:
        images = images[None]
    if images.shape[1:] != shape[1:]:
        raise ImageError(f"the model takes images of shape {shape[1:]}, not {images.shape[1:]}: "
                          "resize them, or add the channel axis with images[..., None]")
    if images.dtype.kind not in "uif":
        raise ImageError(f"images must be numbers (uint8 pixels 0-255), not {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ImageError(f"pixel values must lie in 0..255 (got {images.min():g}..{images.max():g}); "
                          "pass the photos as they are: the model scales them itself")
    return images


def _balanced_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random indices with the classes as equally represented as n allows."""
    classes = np.unique(y)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    take = [idx[: n // len(classes) + (i < n % len(classes))] for i, idx in enumerate(per_class)]
    return rng.permutation(np.concatenate(take))


def subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A shuffled, class-balanced random subset of n examples (all of them, shuffled, when n is None)."""
    rng = np.random.default_rng(seed)
    take = rng.permutation(len(x)) if n is None or n >= len(x) else _balanced_indices(y, n, rng)
    return x[take], y[take]


def train_val_split(x: np.ndarray, y: np.ndarray, n_val: int, seed: int = 0):
    """Shuffle, then hold out a class-balanced validation set: returns (x_train, y_train), (x_val, y_val)."""
    if not 0 < n_val < len(x):
        raise ValueError(f"n_val must be between 1 and {len(x) - 1}, not {n_val}")
    rng = np.random.default_rng(seed)
    val = _balanced_indices(y, n_val, rng)
    train = rng.permutation(np.setdiff1d(np.arange(len(x)), val))
    return (x[train], y[train]), (x[val], y[val])
