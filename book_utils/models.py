"""The models of chapters 1-3. Each chapter shows the source of the builder it introduces."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers


def build_mlp(input_shape=(28, 28), classes: int = 10, hidden=(512, 512), dropout: float = 0.2):
    """Chapter 1: unroll the image into one long vector, then fully connected layers."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255, name="scale_0_1")(inputs)
    x = layers.Flatten(name="unroll")(x)  # 28x28 -> 784
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp_" + "_".join(map(str, hidden)))


def build_cnn(input_shape=(28, 28, 1), classes: int = 10, filters=(32, 64), dense=(512, 512),
              dropout=(0.25, 0.5)):
    """Chapter 2: two 3x3 convolutions and a 2x2 max-pool in front of a dense head."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255, name="scale_0_1")(inputs)
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, activation="relu", name=f"conv{i}_3x3")(x)
    x = layers.MaxPooling2D(2, name="max_pool")(x)
    x = layers.Dropout(dropout[0], name="dropout_features")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(dropout[1], name=f"dropout_{i}")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn_" + "_".join(map(str, (*filters, *dense))))


def build_small_cnn(input_shape=(28, 28, 1), classes: int = 10):
    """Chapter 2's small design: Conv32 5x5, Conv64 3x3, Conv128 1x1, each followed by a max-pool."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255, name="scale_0_1")(inputs)
    x = layers.Conv2D(32, 5, activation="relu", name="conv1_5x5")(x)     # 28 -> 24
    x = layers.MaxPooling2D(2, name="pool1")(x)                           # 24 -> 12
    x = layers.Conv2D(64, 3, activation="relu", name="conv2_3x3")(x)     # 12 -> 10
    x = layers.MaxPooling2D(2, name="pool2")(x)                           # 10 -> 5
    x = layers.Conv2D(128, 1, activation="relu", name="conv3_1x1")(x)    # mixes channels only
    x = layers.MaxPooling2D(2, name="pool3")(x)                           # 5 -> 2
    x = layers.Flatten(name="flatten")(x)                                 # 2x2x128 = 512
    x = layers.Dropout(0.3, name="dropout")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@keras.saving.register_keras_serializable(package="book_utils")
class RandomPadCrop(layers.Layer):
    """Pad each image by `padding` pixels (mirroring its border), then cut a random window of the
    original size out of it: a random shift of up to `padding` pixels in each direction. Training only."""

    def __init__(self, padding: int = 4, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding, self.seed = padding, seed

    def call(self, images, training=False):
        import tensorflow as tf

        if not training:
            return images
        p, shape = self.padding, tf.shape(images)
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
        offsets = tf.random.uniform((shape[0], 2), 0, 2 * p + 1, dtype=tf.int32, seed=self.seed)
        rows = offsets[:, :1] + tf.range(shape[1])[None]  # (batch, height): the rows each image keeps
        cols = offsets[:, 1:] + tf.range(shape[2])[None]
        return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


def augmentation(seed: int = 42, padding: int = 4):
    """Chapter 3: a random left-right flip and a random shift of up to `padding` pixels (pad and crop),
    applied to training batches only (data.pipeline(..., augment=augmentation()))."""
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        RandomPadCrop(padding, seed=seed),
    ], name="augmentation")


def build_cifar_cnn(input_shape=(32, 32, 3), classes: int = 10, batch_norm: bool = False, dropout: float = 0.25,
                    filters=(32, 64, 128)):
    """Chapter 3: blocks of (conv, conv, max-pool), with 32, 64 and 128 filters, then dense 512, 512."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255, name="scale_0_1")(inputs)
    for block, f in enumerate(filters, start=1):
        for i in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"block{block}_conv{i}")(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{i}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(dropout, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(512, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(2 * dropout, name=f"dense_dropout_{i}")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cifar_cnn" + ("_bn" if batch_norm else ""))


def classify(model, images, batch_size: int = 256) -> np.ndarray:
    """Class probabilities from a Keras model for 0..255 images, checked first (data.ImageError if they don't fit)."""
    from book_utils import data

    images = data.check_images(images, (None, *model.input_shape[1:]))
    return model.predict(images, batch_size=batch_size, verbose=0)
