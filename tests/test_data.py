"""Data loading on the real data sets: contents, checksums, offline messages, subsets."""
import numpy as np
import pytest

from book_utils import data

# Published figures, as listed in the data folder's SOURCES.md.
MNIST_TRAIN_PER_DIGIT = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_PER_DIGIT = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_is_the_official_data_set(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int64
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_PER_DIGIT
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_PER_DIGIT
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.x_train.mean() == pytest.approx(33.3184, abs=1e-4)
    assert mnist.x_train.std() == pytest.approx(78.5675, abs=1e-4)
    assert mnist.x_test.mean() == pytest.approx(33.7912, abs=1e-4)
    assert mnist.source.startswith("MNIST, official 60k/10k (")


def test_cifar10_is_the_official_lossless_data_set(cifar10):
    assert cifar10.x_train.shape == (50000, 32, 32, 3) and cifar10.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(cifar10.y_train).tolist() == [5000] * 10
    assert np.bincount(cifar10.y_test).tolist() == [1000] * 10
    assert cifar10.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar10.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert cifar10.class_names[3] == "cat" and cifar10.class_names[5] == "dog"
    pixels = cifar10.x_train.reshape(-1, 3).astype(np.float64)
    assert pixels.mean(axis=0) == pytest.approx([125.307, 122.950, 113.865], abs=1e-3)
    assert pixels.std(axis=0) == pytest.approx([62.993, 62.089, 66.705], abs=1e-3)
    assert cifar10.x_test.reshape(-1, 3).mean(axis=0) == pytest.approx([126.025, 123.709, 114.854], abs=1e-3)
    assert cifar10.source.startswith("CIFAR-10, official 50k/10k (")


def test_no_test_image_is_also_a_training_image(mnist, cifar10):
    for ds in (mnist, cifar10):
        train_rows = {row.tobytes() for row in ds.x_train.reshape(len(ds.x_train), -1)}
        assert not any(row.tobytes() in train_rows for row in ds.x_test[:2000].reshape(2000, -1))


def test_imagenette_offline_subset_is_decoded_into_square_crops(data_dir):
    if not (data_dir / data.IMAGENETTE_OFFLINE).is_file():
        pytest.skip(f"{data.IMAGENETTE_OFFLINE} is not in the data directory")
    ds = data.load("imagenette", data_dir=data_dir, download=False)
    assert ds.x_train.shape == (1500, 64, 64, 3) and ds.x_test.shape == (1000, 64, 64, 3)
    assert np.bincount(ds.y_train).tolist() == [150] * 10 and np.bincount(ds.y_test).tolist() == [100] * 10
    assert ds.class_names[0] == "tench" and "squashed to 224 px" in ds.source
    assert 60 < ds.x_train.mean() < 200 and ds.x_train.std() > 30  # real photos, not blank crops


def test_the_same_arrays_in_another_file_are_accepted_and_changed_ones_refused(data_dir, tmp_path):
    with np.load(data_dir / "mnist.npz") as f:
        arrays = {k: f[k] for k in f.files}
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist.npz", **arrays)  # uncompressed: other bytes, same arrays
    assert data.load("mnist", data_dir=tmp_path, download=False).source.endswith("(lossless offline copy)")
    arrays["x_test"][123, 14, 14] ^= 1  # one pixel, one bit
    np.savez(tmp_path / "mnist" / "mnist.npz", **arrays)
    with pytest.raises(data.ChecksumError, match=r"does not match any published checksum.*different: x_test"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_fashion_mnist_loads_with_its_published_class_balance():
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_truncated_file_is_refused_and_left_untouched(data_dir, tmp_path):
    bad = tmp_path / "cifar10" / "cifar10.npz"
    bad.parent.mkdir()
    with open(data_dir / "cifar10.npz", "rb") as f:
        content = f.read(1 << 20)  # the first MB only
    bad.write_bytes(content)
    with pytest.raises(data.ChecksumError, match="does not match any published checksum") as err:
        data.load("cifar10", data_dir=tmp_path, download=False)
    assert "Delete it" in str(err.value)
    assert bad.read_bytes() == content


def test_known_files_are_recognised_by_their_recorded_checksums(data_dir):
    assert data.verify(data_dir / "mnist.npz") == "lossless offline copy"
    assert data.verify(data_dir / "cifar10.npz") == "lossless offline copy"


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


def test_image_folder_pipeline_reads_real_photos(cifar10, tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):  # twenty test photos of each, written as PNG files into a folder per class
        folder = tmp_path / "test" / name
        folder.mkdir(parents=True)
        for i in np.flatnonzero(cifar10.y_test == cifar10.class_names.index(name))[:20]:
            Image.fromarray(cifar10.x_test[i]).save(folder / f"{i}.png")
    ds = data.image_folder_dataset(tmp_path / "test", image_size=(32, 32), batch_size=16, shuffle=False)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    images = np.concatenate(images)
    assert images.shape == (40, 32, 32, 3)
    assert np.bincount(np.concatenate(labels)).tolist() == [20, 20]  # cat = 0, dog = 1 (alphabetical)
    first_cat = cifar10.x_test[np.flatnonzero(cifar10.y_test == 3)]
    assert any(np.array_equal(images[0], photo) for photo in first_cat[:20])  # PNG is lossless


def test_image_folder_dataset_rejects_a_missing_folder(tmp_path):
    with pytest.raises(data.DataError, match="is not a folder"):
        data.image_folder_dataset(tmp_path / "nowhere")
