"""The building blocks of Part II (chapters 4-7), one copy of each.

Every block is a function `block(x, ..., name=...) -> x` on Keras functional
tensors; `name` prefixes the names of the layers it adds, so that a summary
reads like the paper's table. The builders in `book_utils.architectures` are
made of these blocks only.
"""
from __future__ import annotations

from keras import layers, ops

BN_MOMENTUM = 0.9  # as in chapter 3: moving statistics settle within a short run


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of `divisor`, losing at most 10% (MobileNetV2, EfficientNet)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def bn_act(x, activation="relu", name="bn"):
    """Batch normalization, then an activation (None: linear) (Ioffe & Szegedy 2015, arXiv:1502.03167)."""
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x) if activation else x


def conv_bn_act(x, filters, kernel_size=3, strides=1, activation="relu", use_bias=False, name="conv"):
    """Convolution, batch normalization, activation: the unit of CNNs since 2015 (BN: arXiv:1502.03167)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                      name=f"{name}_conv")(x)
    return bn_act(x, activation, name)


def depthwise_bn_act(x, kernel_size=3, strides=1, activation="relu6", name="dw"):
    """Depthwise convolution (one filter per channel), BN, activation (MobileNets, arXiv:1704.04861)."""
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                               name=f"{name}_conv")(x)
    return bn_act(x, activation, name)


def vgg_block(x, filters, convs, batch_norm=False, name="block"):
    """VGG block: `convs` 3x3 convolutions with ReLU, then a 2x2 max-pool (VGG, arXiv:1409.1556).

    batch_norm=True puts BN between each convolution and its ReLU (the "VGG-BN" of later work).
    """
    for i in range(1, convs + 1):
        if batch_norm:
            x = conv_bn_act(x, filters, 3, name=f"{name}_conv{i}")
        else:
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv{i}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def shortcut(x, filters, strides=1, projection=True, use_bias=False, name="shortcut"):
    """Residual shortcut: identity, else 1x1 conv-BN (option B) or zero-padded subsampling (A) (arXiv:1512.03385)."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    if projection:
        return conv_bn_act(x, filters, 1, strides, activation=None, use_bias=use_bias, name=name)
    x = layers.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)  # keep every other pixel
    return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, filters - x.shape[-1]]])  # new channels are zeros


def basic_residual_block(x, filters, strides=1, projection=True, use_bias=False, residual=True, name="block"):
    """Basic residual block: two 3x3 conv-BN plus the shortcut, then ReLU (ResNet-18/34, arXiv:1512.03385).

    residual=False drops the shortcut: the "plain" network the paper compares against.
    """
    skip = shortcut(x, filters, strides, projection, use_bias, name=f"{name}_shortcut") if residual else None
    x = conv_bn_act(x, filters, 3, strides, use_bias=use_bias, name=f"{name}_1")
    x = conv_bn_act(x, filters, 3, activation=None, use_bias=use_bias, name=f"{name}_2")
    if residual:
        x = layers.Add(name=f"{name}_add")([skip, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def bottleneck_block(x, filters, strides=1, use_bias=False, name="block"):
    """Bottleneck residual block: 1x1 reduce, 3x3, 1x1 to 4 x filters, plus shortcut (ResNet-50, arXiv:1512.03385)."""
    skip = shortcut(x, 4 * filters, strides, use_bias=use_bias, name=f"{name}_shortcut")
    x = conv_bn_act(x, filters, 1, strides, use_bias=use_bias, name=f"{name}_1")  # v1: stride on the 1x1
    x = conv_bn_act(x, filters, 3, use_bias=use_bias, name=f"{name}_2")
    x = conv_bn_act(x, 4 * filters, 1, activation=None, use_bias=use_bias, name=f"{name}_3")
    x = layers.Add(name=f"{name}_add")([skip, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def fire_module(x, squeeze, expand, name="fire"):
    """Fire module: 1x1 squeeze, then 1x1 and 3x3 expands, concatenated (SqueezeNet, arXiv:1602.07360)."""
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze1x1")(x)
    e1 = layers.Conv2D(expand, 1, activation="relu", name=f"{name}_expand1x1")(x)
    e3 = layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(x)
    return layers.Concatenate(name=f"{name}_concat")([e1, e3])


def depthwise_separable_block(x, filters, strides=1, activation="relu6", name="block"):
    """Depthwise separable conv: 3x3 depthwise, 1x1 pointwise, each with BN-ReLU (MobileNets, arXiv:1704.04861)."""
    x = depthwise_bn_act(x, 3, strides, activation, name=f"{name}_dw")
    return conv_bn_act(x, filters, 1, activation=activation, name=f"{name}_pw")


def hard_sigmoid(x, name="hard_sigmoid"):
    """Hard sigmoid ReLU6(x + 3) / 6, a piecewise-linear sigmoid (MobileNetV3, arXiv:1905.02244)."""
    return layers.Activation("hard_sigmoid", name=name)(x)


def hard_swish(x, name="hard_swish"):
    """Hard swish x * ReLU6(x + 3) / 6, a swish cheap on phones (MobileNetV3, arXiv:1905.02244)."""
    return layers.Activation("hard_swish", name=name)(x)


def squeeze_excite(x, squeeze_channels, activation="relu", gate="sigmoid", name="se"):
    """Squeeze-and-excitation: global pool, 1x1 reduce, 1x1 expand, per-channel gate (SENet, arXiv:1709.01507)."""
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(squeeze_channels, 1, activation=activation, name=f"{name}_reduce")(s)
    s = layers.Conv2D(x.shape[-1], 1, activation=gate, name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


def inverted_residual(x, filters, expansion=6, strides=1, kernel_size=3, activation="relu6", se=None,
                      name="block"):
    """Inverted residual, linear bottleneck: 1x1 expand, depthwise, 1x1 project (MobileNetV2, arXiv:1801.04381)."""
    # se: squeeze_excite's arguments (squeeze_channels, activation, gate) to put one after the depthwise conv
    inputs, channels = x, x.shape[-1]
    if expansion != 1:
        x = conv_bn_act(x, round_channels(channels * expansion), 1, activation=activation,
                        name=f"{name}_expand")
    x = depthwise_bn_act(x, kernel_size, strides, activation, name=f"{name}_dw")
    if se:
        x = squeeze_excite(x, **se, name=f"{name}_se")
    x = conv_bn_act(x, filters, 1, activation=None, name=f"{name}_project")  # linear: no ReLU on few channels
    if strides == 1 and channels == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def mbconv(x, filters, expansion=6, strides=1, kernel_size=3, activation="swish", se_ratio=0.25, name="block"):
    """MBConv: inverted residual with squeeze-and-excite (MnasNet, arXiv:1807.11626; EfficientNet's block)."""
    # the SE bottleneck is se_ratio x the block's input width, as in MnasNet and EfficientNet
    se = dict(squeeze_channels=max(1, int(x.shape[-1] * se_ratio)), activation=activation, gate="sigmoid")
    return inverted_residual(x, filters, expansion, strides, kernel_size, activation,
                             se=se if se_ratio else None, name=name)


def fused_mbconv(x, filters, expansion=4, strides=1, kernel_size=3, activation="relu", expand_from=None,
                 name="block"):
    """Fused MBConv: a full 3x3 conv replaces 1x1 expand + depthwise (EfficientNet-EdgeTPU, arXiv:2003.02838)."""
    # Hidden width: expansion x expand_from (default: the input's width). The stride goes on the 3x3 conv,
    # as in timm and EfficientNetV2; the TensorFlow TPU reference puts it on the 1x1 projection.
    inputs, channels = x, x.shape[-1]
    x = conv_bn_act(x, round_channels((expand_from or channels) * expansion), kernel_size, strides, activation,
                    name=f"{name}_fused")
    x = conv_bn_act(x, filters, 1, activation=None, name=f"{name}_project")
    if strides == 1 and channels == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def inception_module(x, f1, f3_reduce, f3, f5_reduce, f5, pool_proj, name="inception"):
    """Inception module: 1x1, 1x1-3x3, 1x1-5x5 and pool-1x1 branches, concatenated (GoogLeNet, arXiv:1409.4842).

    The 1x1 convolutions before the 3x3 and 5x5 ones reduce the channels they see; the pooling
    branch (3x3 max-pool, stride 1) is projected by a 1x1 convolution. Every convolution has ReLU.
    """
    b1 = layers.Conv2D(f1, 1, activation="relu", name=f"{name}_1x1")(x)
    b3 = layers.Conv2D(f3_reduce, 1, activation="relu", name=f"{name}_3x3_reduce")(x)
    b3 = layers.Conv2D(f3, 3, padding="same", activation="relu", name=f"{name}_3x3")(b3)
    b5 = layers.Conv2D(f5_reduce, 1, activation="relu", name=f"{name}_5x5_reduce")(x)
    b5 = layers.Conv2D(f5, 5, padding="same", activation="relu", name=f"{name}_5x5")(b5)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = layers.Conv2D(pool_proj, 1, activation="relu", name=f"{name}_pool_proj")(bp)
    return layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])
