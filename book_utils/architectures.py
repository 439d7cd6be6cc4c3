"""The model builders of Part II (chapters 4-7), one per family, made of `book_utils.blocks`.

Each builder takes `input_shape` and `classes` and works from 32x32 images up
to 224x224. At 224x224x3 with 1000 classes their parameter counts equal
keras.applications' (tests/test_architectures.py checks this).
"""
from __future__ import annotations

import math

import keras
from keras import layers

from book_utils.blocks import (basic_residual_block, bottleneck_block, conv_bn_act, depthwise_separable_block,
                               fire_module, fused_mbconv, hard_swish, inverted_residual, mbconv,
                               round_channels, vgg_block)

PAPERS = {  # family -> arXiv id
    "VGG": "1409.1556",
    "ResNet": "1512.03385",
    "SqueezeNet": "1602.07360",
    "MobileNet": "1704.04861",
    "MobileNetV2": "1801.04381",
    "MobileNetV3": "1905.02244",
    "SENet": "1709.01507",
    "MnasNet": "1807.11626",
    "EfficientNet": "1905.11946",
    "EfficientNet-EdgeTPU": "2003.02838",
    "Inception": "1409.4842",
}


def _input(input_shape):
    """The image input, scaled from 0..255 to 0..1 as in chapters 1-3."""
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, layers.Rescaling(1 / 255, name="scale_0_1")(inputs)


def _strides(stem, stages, small_input):
    """Strides of the stem and of each stage; small_input=True gives the stem stride 1.

    ImageNet networks shrink their input 32 times (224 -> 7); a 32x32 image would end as a
    single pixel. With a stride-1 stem it shrinks 16 times (32 -> 2), at 4 times the cost per
    image of the unchanged network on a 32x32 input. Ports to CIFAR often also keep the resolution
    in the first strided stage (32 -> 4, 16 times the cost): more accurate, too slow for 2 CPU cores.
    The parameters are the same either way.
    """
    return (1 if small_input else stem), list(stages)


def _classifier(x, classes, dropout=0.0):
    """Global average pooling, optional dropout, softmax layer: the head of every network since NiN."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(classes, activation="softmax", name="probabilities")(x)


VGG_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # 3x3 convs per block: Table 1, columns D and E


def vgg(depth=16, input_shape=(224, 224, 3), classes=1000, width=1.0, dense=4096, batch_norm=False, dropout=0.5):
    """VGG-16/19: five VGG blocks of 64-512 filters, then two dense layers of 4096 (arXiv:1409.1556).

    width scales the filters; dense is the width of the two hidden dense layers (4096 in the paper,
    far more than 32x32 images need); batch_norm adds BN after each convolution.
    """
    inputs, x = _input(input_shape)
    for i, (filters, convs) in enumerate(zip((64, 128, 256, 512, 512), VGG_CONVS[depth]), start=1):
        x = vgg_block(x, int(filters * width), convs, batch_norm, name=f"block{i}")
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(dense, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"vgg{depth}")


RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet(depth=50, input_shape=(224, 224, 3), classes=1000, width=1.0):
    """ResNet-18/34 (basic blocks) and 50/101/152 (bottlenecks) for ImageNet (arXiv:1512.03385, Table 1)."""
    use_bias = True  # as Keras's ResNet50; redundant before BN (its beta is a bias), torchvision drops them
    inputs, x = _input(input_shape)
    x = conv_bn_act(x, int(64 * width), 7, 2, use_bias=use_bias, name="stem")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], start=1):
        filters = int(64 * width * 2 ** (stage - 1))
        for i in range(blocks):
            strides = 2 if stage > 1 and i == 0 else 1
            name = f"stage{stage}_block{i + 1}"
            if depth < 50:
                x = basic_residual_block(x, filters, strides, use_bias=use_bias, name=name)
            else:
                x = bottleneck_block(x, filters, strides, use_bias=use_bias, name=name)
    return keras.Model(inputs, _classifier(x, classes), name=f"resnet{depth}")


def resnet_cifar(depth=20, input_shape=(32, 32, 3), classes=10, width=1.0, residual=True):
    """ResNet-20/32/44/56/110 for CIFAR (arXiv:1512.03385, section 4.2).

    A 3x3 stem, then 3 stages of (depth - 2) / 6 basic blocks with 16, 32, 64 filters; the
    shortcuts are identities, zero-padded where the width doubles (option A: no parameters).
    residual=False builds the paper's "plain" network of the same depth.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), not {depth}")
    blocks = (depth - 2) // 6
    inputs, x = _input(input_shape)
    x = conv_bn_act(x, int(16 * width), 3, name="stem")
    for stage in (1, 2, 3):
        filters = int(16 * width * 2 ** (stage - 1))
        for i in range(blocks):
            strides = 2 if stage > 1 and i == 0 else 1
            x = basic_residual_block(x, filters, strides, projection=False, residual=residual,
                                     name=f"stage{stage}_block{i + 1}")
    return keras.Model(inputs, _classifier(x, classes), name=f"{'resnet' if residual else 'plain'}{depth}_cifar")


def squeezenet(input_shape=(224, 224, 3), classes=1000, dropout=0.5):
    """SqueezeNet 1.1: a 3x3 stem, eight fire modules, a 1x1 conv classifier (arXiv:1602.07360)."""
    inputs, x = _input(input_shape)
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(x)  # no padding: 224 -> 111 -> 55
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    fires = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192), 8: (64, 256),
             9: (64, 256)}  # fire number -> (squeeze, expand) filters
    for i, (squeeze, expand) in fires.items():
        x = fire_module(x, squeeze, expand, name=f"fire{i}")
        if i in (3, 5):
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv2D(classes, 1, activation="relu", name="conv10")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="squeezenet_1.1")


def mobilenet_v1(input_shape=(224, 224, 3), classes=1000, alpha=1.0, dropout=1e-3):
    """MobileNet: a 3x3 stem, 13 depthwise separable blocks, widths x `alpha` (arXiv:1704.04861, Table 1)."""
    inputs, x = _input(input_shape)
    x = conv_bn_act(x, int(32 * alpha), 3, 2, activation="relu6", name="stem")
    widths = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    for i, filters in enumerate(widths, start=1):
        strides = 2 if i in (2, 4, 6, 12) else 1
        x = depthwise_separable_block(x, int(filters * alpha), strides, name=f"block{i}")
    return keras.Model(inputs, _classifier(x, classes, dropout), name=f"mobilenet_{alpha:g}")


MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]  # (expansion t, channels c, repeats n, first stride s), paper's Table 2


def mobilenet_v2(input_shape=(224, 224, 3), classes=1000, alpha=1.0, small_input=False):
    """MobileNetV2: a 3x3 stem, 17 inverted residuals, a 1x1 conv to 1280 (arXiv:1801.04381, Table 2).

    small_input=True: for 32x32 images, a stride-1 stem (see _strides).
    """
    inputs, x = _input(input_shape)
    stem_strides, stage_strides = _strides(2, [s for *_, s in MOBILENET_V2], small_input)
    x = conv_bn_act(x, round_channels(32 * alpha), 3, stem_strides, activation="relu6", name="stem")
    for stage, (expansion, channels, repeats, _), strides in zip(range(1, 8), MOBILENET_V2, stage_strides):
        for i in range(repeats):
            x = inverted_residual(x, round_channels(channels * alpha), expansion, strides if i == 0 else 1,
                                  name=f"stage{stage}_block{i + 1}")
    x = conv_bn_act(x, round_channels(1280 * max(alpha, 1.0)), 1, activation="relu6", name="head")
    return keras.Model(inputs, _classifier(x, classes), name=f"mobilenet_v2_{alpha:g}")


MOBILENET_V3 = {  # (kernel, expansion size, out channels, SE, activation, stride), paper's Tables 1 and 2
    "large": [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
              (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
              (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1),
              (3, 184, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
              (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
              (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1),
              (5, 960, 160, True, "hard_swish", 1)],
    "small": [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
              (5, 96, 40, True, "hard_swish", 2), (5, 240, 40, True, "hard_swish", 1),
              (5, 240, 40, True, "hard_swish", 1), (5, 120, 48, True, "hard_swish", 1),
              (5, 144, 48, True, "hard_swish", 1), (5, 288, 96, True, "hard_swish", 2),
              (5, 576, 96, True, "hard_swish", 1), (5, 576, 96, True, "hard_swish", 1)],
}
MOBILENET_V3_HEAD = {"large": 1280, "small": 1024}  # width of the dense layer after pooling


def mobilenet_v3(variant="large", input_shape=(224, 224, 3), classes=1000, alpha=1.0, dropout=0.2):
    """MobileNetV3-Large/Small: searched inverted residuals with SE and hard-swish (arXiv:1905.02244)."""
    inputs, x = _input(input_shape)
    x = conv_bn_act(x, 16, 3, 2, activation="hard_swish", name="stem")
    table_input = 16  # the input width in the table, at alpha = 1
    for i, (kernel, exp_size, channels, se, activation, strides) in enumerate(MOBILENET_V3[variant], start=1):
        expansion = exp_size / table_input  # the ratio is kept when alpha scales the widths, as in Keras
        expanded = round_channels(x.shape[-1] * expansion)
        se_args = dict(squeeze_channels=round_channels(expanded / 4), activation="relu", gate="hard_sigmoid")
        x = inverted_residual(x, round_channels(channels * alpha), expansion, strides, kernel, activation,
                              se_args if se else None, name=f"block{i}")
        table_input = channels
    x = conv_bn_act(x, round_channels(6 * x.shape[-1]), 1, activation="hard_swish", name="head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(round_channels(MOBILENET_V3_HEAD[variant] * max(alpha, 1.0)), name="head_dense")(x)
    x = hard_swish(x, name="head_dense_hard_swish")  # no BN after the pooled 1x1 conv (a dense layer here)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_v3_{variant}_{alpha:g}")


# (expansion, kernel, channels, repeats, stride) of EfficientNet-B0's stages: the paper's Table 1
EFFICIENTNET_B0 = [(1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
                   (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)]


def efficientnet(width=1.0, depth=1.0, resolution=224, dropout=0.2, input_shape=None, classes=1000,
                 small_input=False):
    """EfficientNet: B0's MBConv stages, channels x `width`, repeats x `depth` (arXiv:1905.11946).

    B0 = (1.0, 1.0, 224, 0.2), B1 = (1.0, 1.1, 240, 0.2), ..., B7 = (2.0, 3.1, 600, 0.5).
    small_input=True: for 32x32 images, a stride-1 stem (see _strides).
    """
    inputs, x = _input(input_shape or (resolution, resolution, 3))
    stem_strides, stage_strides = _strides(2, [row[-1] for row in EFFICIENTNET_B0], small_input)
    x = conv_bn_act(x, round_channels(32 * width), 3, stem_strides, activation="swish", name="stem")
    for stage, (expansion, kernel, channels, repeats, _), strides in zip(range(1, 8), EFFICIENTNET_B0,
                                                                         stage_strides):
        for i in range(math.ceil(repeats * depth)):
            x = mbconv(x, round_channels(channels * width), expansion, strides if i == 0 else 1, kernel,
                       name=f"stage{stage}_block{i + 1}")
    x = conv_bn_act(x, round_channels(1280 * width), 1, activation="swish", name="head")
    return keras.Model(inputs, _classifier(x, classes, dropout), name=f"efficientnet_w{width:g}_d{depth:g}")


EDGETPU_S = [(True, 4, 3, 24, 1, 1), (True, 8, 3, 32, 2, 2), (True, 8, 3, 48, 4, 2), (False, 8, 5, 96, 5, 2),
             (False, 8, 5, 144, 4, 1), (False, 8, 5, 192, 2, 2)]
# (fused, expansion, kernel, channels, repeats, stride): the blocks_args of the TensorFlow TPU reference,
# models/official/efficientnet/edgetpu/efficientnet_edgetpu_builder.py (no SE, ReLU everywhere)
EDGETPU_SCALING = {"S": (1.0, 1.0, 224, 0.2), "M": (1.0, 1.1, 240, 0.2), "L": (1.2, 1.4, 300, 0.3)}


def efficientnet_edgetpu(variant="S", input_shape=None, classes=1000, small_input=False):
    """EfficientNet-EdgeTPU-S/M/L: fused MBConvs early, MBConvs without SE later, ReLU (arXiv:2003.02838).

    small_input=True: for 32x32 images, a stride-1 stem (see _strides).
    """
    width, depth, resolution, dropout = EDGETPU_SCALING[variant]
    inputs, x = _input(input_shape or (resolution, resolution, 3))
    stem_strides, stage_strides = _strides(2, [row[-1] for row in EDGETPU_S], small_input)
    x = conv_bn_act(x, round_channels(32 * width), 3, stem_strides, name="stem")
    block_input = round_channels(24 * width)  # as in the reference, the first block expands 24 x 4, not 32 x 4
    for stage, (fused, expansion, kernel, channels, repeats, _), strides in zip(range(1, 7), EDGETPU_S,
                                                                                stage_strides):
        filters = round_channels(channels * width)
        for i in range(math.ceil(repeats * depth)):
            s, name = strides if i == 0 else 1, f"stage{stage}_block{i + 1}"
            if fused:
                x = fused_mbconv(x, filters, expansion, s, kernel, expand_from=block_input, name=name)
            else:
                x = inverted_residual(x, filters, expansion, s, kernel, activation="relu", name=name)
            block_input = filters
    x = conv_bn_act(x, round_channels(1280 * width), 1, name="head")
    return keras.Model(inputs, _classifier(x, classes, dropout), name=f"efficientnet_edgetpu_{variant}")
