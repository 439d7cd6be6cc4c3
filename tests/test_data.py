"""Data loading on the real data sets: contents, checksums, offline messages, subsets."""
import shutil
import tarfile

import numpy as np
import pytest

from book_utils import data

MNIST_TEST_PER_DIGIT = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # published counts


def test_mnist_test_set_is_the_official_one(mnist):
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_PER_DIGIT
    assert mnist.x_test.mean() == pytest.approx(33.79, abs=0.01)


def test_mnist_training_set_matches_its_source(mnist):
    if "5k" in mnist.source:
        assert mnist.x_train.shape == (5000, 28, 28)
        assert np.bincount(mnist.y_train).tolist() == [500] * 10
    else:
        assert mnist.x_train.shape == (60000, 28, 28)
        assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert set(np.unique(mnist.y_train)) == set(range(10))
    # none of the training images is a copy of a test image
    test_rows = {row.tobytes() for row in mnist.x_test.reshape(10000, -1)}
    assert not any(row.tobytes() in test_rows for row in mnist.x_train[:2000].reshape(2000, -1))


def test_cifar10_copy_has_every_image_and_the_official_colours(cifar10):
    assert cifar10.x_train.shape == (50000, 32, 32, 3) and cifar10.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(cifar10.y_train).tolist() == [5000] * 10
    assert np.bincount(cifar10.y_test).tolist() == [1000] * 10
    assert cifar10.class_names[3] == "cat" and cifar10.class_names[5] == "dog"
    mean = cifar10.x_train.reshape(-1, 3).mean(axis=0)
    assert mean == pytest.approx([125.3, 122.95, 113.87], abs=0.15)  # official: 125.31 122.95 113.87


def test_fashion_mnist_loads_with_its_published_class_balance():
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_corrupt_file_is_refused_and_left_untouched(data_dir, tmp_path):
    original = next(data_dir.glob("**/t10k-labels-idx1-ubyte.gz"))
    bad = tmp_path / "mnist" / original.name
    bad.parent.mkdir()
    content = original.read_bytes()[:-100]  # truncated
    bad.write_bytes(content)
    for name in ("t10k-images-idx3-ubyte.gz", "mnist_5k_train_subset.csv.gz"):
        source = next(data_dir.glob(f"**/{name}"), None)
        if source:
            shutil.copy(source, bad.parent / name)
    with pytest.raises(data.ChecksumError, match="does not match any published checksum") as err:
        data.load("mnist", data_dir=tmp_path, download=False)
    assert "Delete it" in str(err.value)
    assert bad.read_bytes() == content


def test_unknown_file_cannot_be_verified(tmp_path):
    stray = tmp_path / "my-images.zip"
    stray.write_bytes(b"PK")
    with pytest.raises(data.ChecksumError, match="not a file this book knows"):
        data.verify(stray)


def test_offline_with_nothing_found_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(data.DataError) as err:
        data.load("mnist", data_dir=tmp_path / "empty", download=False)
    message = str(err.value)
    assert "MNIST" in message and str(tmp_path / "empty") in message and "mnist.npz" in message
    assert "BOOK_DATA_DIR" in message and "switched off" in message


def test_failed_download_becomes_a_clear_error(tmp_path, monkeypatch):
    import keras

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", no_network)
    for name in ("mnist", "cifar10"):
        with pytest.raises(data.DataError, match="official download failed: OSError"):
            data.load(name, data_dir=tmp_path / "empty", download=True)


def test_unknown_data_set_name_lists_the_choices():
    with pytest.raises(data.DataError, match="Choose one of: mnist, fashion_mnist, cifar10"):
        data.load("imagenet")


def test_subset_is_balanced_shuffled_and_repeatable(mnist):
    x, y = data.subset(mnist.x_test, mnist.y_test, 1000, seed=1)
    assert len(x) == 1000 and np.bincount(y).tolist() == [100] * 10
    x2, y2 = data.subset(mnist.x_test, mnist.y_test, 1000, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(y, np.sort(y))  # shuffled
    _, y3 = data.subset(mnist.x_test, mnist.y_test, 1000, seed=2)
    assert not np.array_equal(y, y3)


def test_train_val_split_is_disjoint_and_complete(mnist):
    x, y = mnist.x_test[:2000], mnist.y_test[:2000]
    (x_tr, y_tr), (x_val, y_val) = data.train_val_split(x, y, 200, seed=0)
    assert len(x_tr) == 1800 and len(x_val) == 200
    assert np.bincount(y_val, minlength=10).min() >= 19
    seen = {row.tobytes() for row in x_val.reshape(200, -1)}
    assert sum(row.tobytes() in seen for row in x_tr.reshape(1800, -1)) <= 2  # MNIST has few duplicates
    assert np.array_equal(np.sort(np.concatenate([y_tr, y_val])), np.sort(y))


def test_image_folder_pipeline_reads_real_jpegs(data_dir, tmp_path):
    tar = next(data_dir.glob("**/cifar10-jpeg-q75.tar.gz"))
    with tarfile.open(tar) as t:
        wanted = [m for m in t if m.isfile() and m.name.startswith(("test/cat/", "test/dog/"))]
        keep = [m for m in wanted if m.name.startswith("test/cat/")][:20] + \
               [m for m in wanted if m.name.startswith("test/dog/")][:20]
        t.extractall(tmp_path, members=keep, filter="data")
    ds = data.image_folder_dataset(tmp_path / "test", image_size=(32, 32), batch_size=16, shuffle=False)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    assert np.concatenate(images).shape == (40, 32, 32, 3)
    assert np.bincount(np.concatenate(labels)).tolist() == [20, 20]  # cat = 0, dog = 1 (alphabetical)


def test_image_folder_dataset_rejects_a_missing_folder(tmp_path):
    with pytest.raises(data.DataError, match="is not a folder"):
        data.image_folder_dataset(tmp_path / "nowhere")
