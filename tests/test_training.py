"""The Part II training pieces: input pipeline, recipe, latency, and the Imagenette option."""

import keras
import numpy as np
import pytest

from book_utils import architectures, data, measure, models, results, train


def test_pipeline_batches_one_hot_labels_and_augments_only_when_training(cifar10):
    x, y = cifar10.x_test[:300], cifar10.y_test[:300]
    batches = list(data.pipeline(x, y, batch_size=128, classes=10))
    assert [b[0].shape[0] for b in batches] == [128, 128, 44]
    images, labels = batches[0]
    assert images.dtype == "float32" and labels.shape == (128, 10)
    np.testing.assert_array_equal(np.argmax(labels, axis=1), y[:128])
    np.testing.assert_array_equal(images.numpy(), x[:128].astype("float32"))  # evaluation: untouched, in order

    augmented = next(iter(data.pipeline(x, y, batch_size=300, training=True, augment=models.augmentation(1))))
    assert sorted(augmented[1].numpy().tolist()) == sorted(y.tolist())  # shuffled, nothing lost
    assert not np.array_equal(np.sort(augmented[0].numpy().ravel()), np.sort(x.astype("float32").ravel()))


def test_pipeline_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match="3 images but y has 2 labels"):
        data.pipeline(np.zeros((3, 8, 8, 3), np.uint8), np.zeros(2, np.int64))


def test_schedule_warms_up_then_decays_to_zero():
    lr = train.learning_rate_schedule(epochs=10, steps_per_epoch=100, learning_rate=0.1)
    values = np.array([float(lr(s)) for s in range(0, 1001, 50)])
    assert values[0] == 0 and abs(values[2] - 0.1) < 1e-6  # step 100: the end of the warm-up
    assert np.all(np.diff(values[2:]) <= 1e-9) and values[-1] < 1e-6


def test_recipe_trains_and_leaves_batch_norm_out_of_weight_decay(cifar10):
    x, y = data.subset(cifar10.x_train, cifar10.y_train, 512, 0)
    model = architectures.resnet_cifar(8)
    train.compile_classifier(model, epochs=2, steps_per_epoch=4, learning_rate=0.05)
    gamma = next(w for w in model.weights if w.path.endswith("stem_bn/gamma"))
    excluded = [v for v in model.trainable_variables if model.optimizer._use_weight_decay(v) is False]
    assert gamma.path in {v.path for v in excluded}
    assert not any(v.path.endswith("conv/kernel") for v in excluded)
    run = train.fit(model, data.pipeline(x, y, training=True, classes=10), epochs=2, verbose=0)
    assert run.epochs == 2 and np.isfinite(run.history["loss"]).all()


def test_recipe_refuses_an_unknown_optimizer():
    with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
        train.compile_classifier(architectures.resnet_cifar(8), epochs=1, steps_per_epoch=1, optimizer="adam")


def test_latency_is_a_positive_median_and_needs_a_fixed_input_shape():
    assert 0 < measure.latency_ms(architectures.resnet_cifar(8), repeats=5, warmup=1) < 10_000
    inputs = keras.Input((None, None, 3))
    flexible = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match="fixed input_shape"):
        measure.latency_ms(flexible)


def test_latencies_measured_together_order_the_models_by_their_cost():
    small, large = architectures.resnet_cifar(8), architectures.resnet_cifar(32)  # about 4x the MACs
    ms = measure.compare_latency_ms({"ResNet-8": small, "ResNet-32": large}, repeats=10, rounds=2, warmup=1)
    assert list(ms) == ["ResNet-8", "ResNet-32"]
    assert 0 < ms["ResNet-8"] < ms["ResNet-32"] < 10_000
    with pytest.raises(ValueError, match="one timed run per round"):
        measure.compare_latency_ms({"ResNet-8": small}, repeats=2, rounds=3)


def test_cat_dog_confusions_read_the_matrix():
    matrix = np.zeros((10, 10), int)
    matrix[3, 5], matrix[5, 3], matrix[3, 3], matrix[5, 5] = 7, 4, 90, 80
    got = results.cat_dog_confusions(matrix, data.CIFAR10_CLASSES)
    assert got == {"cat_as_dog": 7, "dog_as_cat": 4, "cats": 97, "dogs": 84}
    assert results.cat_dog_confusions(matrix, list(data.IMAGENETTE_CLASSES.values())) is None


def test_imagenette_offline_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(data.DataError, match="imagenette2-224-subset.tgz or imagenette2-160.tgz") as error:
        data.load("imagenette", data_dir=tmp_path, download=False)
    assert "BOOK_DATA_DIR" in str(error.value)


def test_imagenette_archive_with_the_wrong_checksum_is_refused(tmp_path):
    bad = tmp_path / "imagenette" / "imagenette2-160.tgz"
    bad.parent.mkdir()
    bad.write_bytes(b"not the archive")
    with pytest.raises(data.ChecksumError, match="not used and not changed"):
        data.load("imagenette", data_dir=tmp_path, download=False)
    assert bad.read_bytes() == b"not the archive"


def test_pad_and_crop_shifts_each_image_by_at_most_the_padding(cifar10):
    images = cifar10.x_test[:16].astype("float32")
    shifted = models.RandomPadCrop(4, seed=3)(images, training=True).numpy()
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    found = [next(((r, c) for r in range(9) for c in range(9)
                   if np.array_equal(shifted[i], padded[i, r:r + 32, c:c + 32])), None) for i in range(16)]
    assert None not in found  # every output is a 32x32 window of its own padded image
    assert len(set(found)) > 3  # ... at a different offset for different images
    assert np.array_equal(models.RandomPadCrop(4)(images, training=False), images)  # untouched at test time


def test_epoch_timer_brings_back_the_epochs_before_a_resumed_start(tmp_path):
    import json

    path = tmp_path / "epochs.json"
    path.write_text(json.dumps({"0": {"seconds": 2.0, "val_accuracy": 0.6}, "1": {"seconds": 3.0, "val_accuracy": 0.7},
                                "2": {"seconds": 9.0, "val_accuracy": 0.1}}))  # epoch 2 never reached its backup
    checkpoint = train.AtomicModelCheckpoint(tmp_path / "best.keras", monitor="val_accuracy", mode="max",
                                             save_best_only=True)
    timer = train.EpochTimer(path, checkpoint=checkpoint)
    timer.on_train_begin()
    timer.on_epoch_begin(2)  # the backup restored two epochs
    assert [e["seconds"] for e in timer.earlier] == [2.0, 3.0]
    assert checkpoint.best == 0.7  # a resumed epoch must beat the earlier best to replace the checkpoint
    for mode, best in (("min", 0.6), ("auto", None)):  # a loss-like monitor; a direction not yet known
        other = train.AtomicModelCheckpoint(tmp_path / "other.keras", monitor="val_accuracy", mode=mode,
                                            save_best_only=True)
        resumed = train.EpochTimer(path, checkpoint=other)
        resumed.on_train_begin()
        resumed.on_epoch_begin(2)
        assert other.best == best, mode
    timer.on_epoch_end(2, {"val_accuracy": 0.75})
    assert sorted(json.loads(path.read_text())) == ["0", "1", "2"]
    assert json.loads(path.read_text())["2"]["val_accuracy"] == 0.75

    fresh = train.EpochTimer(path)
    fresh.on_train_begin()
    fresh.on_epoch_begin(0)  # a run from the start ignores what the file holds
    assert fresh.earlier == []


def test_a_stopped_training_run_leaves_no_model_where_later_chapters_look(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_MODELS_DIR", str(tmp_path))
    x, y = mnist.x_train[:256, ..., None], mnist.y_train[:256]

    class StopInSecondEpoch(keras.callbacks.Callback):  # a reader interrupting the chapter's run
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    def fit(callbacks=()):
        model = models.build_small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        train.fit(model, x, y, epochs=2, validation_data=(x[:64], y[:64]), checkpoint=tmp_path / "chapter.keras",
                  callbacks=callbacks, verbose=0)
        return model

    def source():
        return train.earlier_model("chapter.keras", models.build_small_cnn, x, y, epochs=1, train_size=64)[1]

    with pytest.raises(KeyboardInterrupt):
        fit([StopInSecondEpoch()])
    assert (tmp_path / ".chapter.best.keras").is_file()  # the first epoch, kept for a resumed run
    assert not (tmp_path / "chapter.keras").exists() and source().startswith("stand-in for chapter.keras")
    model = fit()  # the chapter run to the end: its best epoch takes the name
    assert source() == "chapter.keras (trained in its chapter)" and not (tmp_path / ".chapter.best.keras").exists()
    assert keras.saving.load_model(tmp_path / "chapter.keras").count_params() == model.count_params()
