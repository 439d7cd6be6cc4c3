"""Part II builders: parameter counts equal keras.applications' or the published ones, MACs the papers'.

Each 224x224 model is built once per session and only its counts are kept.
"""
import functools
import re

import keras
import numpy as np
import pytest

from book_utils import architectures as arch
from book_utils import blocks
from book_utils.macs import count_macs, layer_table

IMAGENET = dict(input_shape=(224, 224, 3), classes=1000)

OURS = {  # name -> our builder at 224x224x3 with 1000 classes
    "VGG16": lambda: arch.vgg(16, **IMAGENET),
    "VGG19": lambda: arch.vgg(19, **IMAGENET),
    "ResNet34": lambda: arch.resnet(34, **IMAGENET),
    "ResNet50": lambda: arch.resnet(50, **IMAGENET),
    "SqueezeNet1.1": lambda: arch.squeezenet(**IMAGENET),
    "MobileNet": lambda: arch.mobilenet_v1(**IMAGENET),
    "MobileNetV2": lambda: arch.mobilenet_v2(**IMAGENET),
    "MobileNetV3Small": lambda: arch.mobilenet_v3("small", **IMAGENET),
    "MobileNetV3Large": lambda: arch.mobilenet_v3("large", **IMAGENET),
    "EfficientNetB0": lambda: arch.efficientnet(**IMAGENET),
    "EfficientNetEdgeTPU-S": lambda: arch.efficientnet_edgetpu("S", **IMAGENET),
}


def keras_application(name, **kwargs):
    """keras.applications' model of that name, random weights, 224x224x3, 1000 classes unless told."""
    return getattr(keras.applications, name)(**{"weights": None, **IMAGENET, **kwargs})


def summarize(model) -> dict:
    """The counts the tests compare; the model itself can then be freed."""
    return dict(
        params=model.count_params(),
        trainable=sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        conv_biases=sum(int(np.prod(layer.bias.shape)) for layer in model.layers
                        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias),
        macs=count_macs(model),
    )


@pytest.fixture(scope="session")
def ours():
    """Counts of our model `name`, built on first use, once per session."""
    return functools.cache(lambda name: summarize(OURS[name]()))


@pytest.fixture(scope="session")
def reference():
    """Counts of keras.applications' model `name`, built on first use, once per session."""
    return functools.cache(lambda name: summarize(keras_application(name)))


# --- the same networks as keras.applications ---------------------------------------------------

@pytest.mark.parametrize("name", ["VGG16", "VGG19", "ResNet50", "MobileNet", "MobileNetV2",
                                  "MobileNetV3Small", "MobileNetV3Large"])
def test_parameter_count_equals_keras(name, ours, reference):
    # MobileNetV3: Keras's Rescaling (include_preprocessing) has no weights, and its head's 1x1 convs
    # on the pooled 1x1 map (conv_2, logits) have exactly the weights of our two dense layers.
    assert ours(name)["params"] == reference(name)["params"]
    assert ours(name)["macs"] == reference(name)["macs"]


def test_efficientnet_b0_equals_keras_but_for_its_input_normalization(ours, reference):
    # Keras's EfficientNetB0 puts a Normalization layer after Rescaling(1/255): a non-trainable mean (3),
    # variance (3) and count (1), for ImageNet statistics. We only scale to 0..1, as in chapters 1-3.
    assert reference("EfficientNetB0")["params"] - ours("EfficientNetB0")["params"] == 3 + 3 + 1
    assert reference("EfficientNetB0")["trainable"] == ours("EfficientNetB0")["trainable"]
    assert reference("EfficientNetB0")["macs"] == ours("EfficientNetB0")["macs"]


@pytest.mark.parametrize("name, build, keras_kwargs, difference", [
    ("MobileNet", lambda: arch.mobilenet_v1(alpha=0.5), dict(alpha=0.5), 0),
    ("MobileNetV2", lambda: arch.mobilenet_v2(alpha=0.35), dict(alpha=0.35), 0),
    ("MobileNetV3Small", lambda: arch.mobilenet_v3("small", alpha=0.75), dict(alpha=0.75), 0),
    ("EfficientNetB2", lambda: arch.efficientnet(1.1, 1.2, 260), dict(input_shape=(260, 260, 3)), 3 + 3 + 1),
], ids=["MobileNet-0.5", "MobileNetV2-0.35", "MobileNetV3Small-0.75", "EfficientNetB2"])
def test_width_and_depth_multipliers_scale_as_in_keras(name, build, keras_kwargs, difference):
    # EfficientNetB2 has the same Normalization layer as B0 (see above); B2 checks the compound scaling.
    assert keras_application(name, **keras_kwargs).count_params() - build().count_params() == difference


# --- the figures published for networks Keras does not ship -----------------------------------
# torchvision counts trainable parameters only: BN's moving mean and variance are buffers there.

def test_resnet34_matches_torchvision(ours):
    # torchvision ResNet34_Weights: num_params 21,797,672 (https://pytorch.org/vision/stable/models/
    # generated/torchvision.models.resnet34.html); He et al.'s Table 1 lists FLOPs. Our convs keep their
    # biases, as Keras's ResNet50 does; torchvision leaves them out (BN's beta does their job).
    counts = ours("ResNet34")
    assert counts["trainable"] - counts["conv_biases"] == 21_797_672


def test_squeezenet_1_1_matches_the_reference(ours):
    # Architecture: forresti/SqueezeNet, SqueezeNet_v1.1/train_val.prototxt (conv1 64 3x3, pools after
    # conv1, fire3, fire5); count: torchvision SqueezeNet1_1_Weights, num_params 1,235,496. No BN here.
    assert ours("SqueezeNet1.1")["params"] == 1_235_496


def test_efficientnet_edgetpu_s_matches_the_reference(ours):
    # Architecture: tensorflow/tpu models/official/efficientnet/edgetpu/efficientnet_edgetpu_builder.py
    # (which has 1001 classes; we have 1000). Its README gives no count; timm's port, model card
    # https://huggingface.co/timm/efficientnet_es.ra_in1k, gives "Params (M): 5.4", rounded: hence 0.05 M.
    assert ours("EfficientNetEdgeTPU-S")["trainable"] == pytest.approx(5.4e6, abs=0.05e6)


# --- multiply-accumulates at 224x224 ---------------------------------------------------------------

PUBLISHED_MACS = {
    "VGG16": 15.47e9,          # torchvision VGG16_Weights, "GFLOPS" 15.47 (multiply-adds)
    "ResNet34": 3.6e9,         # He et al. 2015, Table 1 ("FLOPs": multiply-adds); torchvision: 3.66
    "ResNet50": 3.8e9,         # He et al. 2015, Table 1; the often-quoted 4.1 G is torchvision's v1.5,
                               # which moves the stride to the 3x3 conv. Keras (and we) keep the paper's v1.
    "MobileNet": 569e6,        # Howard et al. 2017, Table 8 (1.0 MobileNet-224)
    "MobileNetV2": 300e6,      # Sandler et al. 2018, Table 4
    "MobileNetV3Large": 217e6,  # keras.applications.MobileNetV3Large's docstring table (paper: 219 M)
    "EfficientNetB0": 0.39e9,  # Tan & Le 2019, Table 2
    "EfficientNetEdgeTPU-S": 1.8e9,  # timm model card efficientnet_es.ra_in1k, "GMACs: 1.8"
}


@pytest.mark.parametrize("name", PUBLISHED_MACS)
def test_macs_match_the_published_figures(name, ours):
    assert ours(name)["macs"] == pytest.approx(PUBLISHED_MACS[name], rel=0.03)


def test_layer_table_adds_up_to_the_model():
    model = arch.resnet_cifar(20)
    rows = layer_table(model)
    assert sum(row["params"] for row in rows) == model.count_params()
    assert sum(row["macs"] for row in rows) == count_macs(model)
    assert rows[2] == dict(name="stem_conv", output_shape=(None, 32, 32, 16), params=3 * 3 * 3 * 16,
                           macs=32 * 32 * 3 * 3 * 3 * 16)


def test_nested_models_are_counted():
    inner = arch.resnet_cifar(20)
    outer = keras.Sequential([keras.Input((32, 32, 3)), inner])
    assert count_macs(outer) == count_macs(inner)


# --- small inputs -----------------------------------------------------------------------------------

SMALL = {
    "vgg16": lambda **k: arch.vgg(16, **k),
    "vgg19": lambda **k: arch.vgg(19, **k),
    "resnet34": lambda **k: arch.resnet(34, **k),
    "resnet50": lambda **k: arch.resnet(50, **k),
    "resnet_cifar20": lambda **k: arch.resnet_cifar(20, **k),
    "squeezenet": arch.squeezenet,
    "mobilenet_v1": arch.mobilenet_v1,
    "mobilenet_v2": arch.mobilenet_v2,
    "mobilenet_v3_small": lambda **k: arch.mobilenet_v3("small", **k),
    "mobilenet_v3_large": lambda **k: arch.mobilenet_v3("large", **k),
    "efficientnet_b0": arch.efficientnet,
    "efficientnet_edgetpu_s": arch.efficientnet_edgetpu,
}


@pytest.mark.parametrize("name", SMALL)
def test_builds_for_32x32_images(name):
    model = SMALL[name](input_shape=(32, 32, 3), classes=10)
    assert model.output_shape == (None, 10)


def test_cifar_resnets_have_the_papers_sizes():
    # He et al. 2015, Table 6: ResNet-20 0.27 M, ResNet-56 0.85 M parameters (rounded).
    for depth, millions in ((20, 0.27), (56, 0.85)):
        model = arch.resnet_cifar(depth)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == pytest.approx(millions * 1e6, abs=0.005e6)


def test_option_a_shortcut_survives_save_and_load(tmp_path):
    model = arch.resnet_cifar(20)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "resnet20.keras")
    reloaded = keras.models.load_model(tmp_path / "resnet20.keras")
    np.testing.assert_allclose(reloaded(images), model(images), rtol=1e-5, atol=1e-6)


# --- blocks and papers ------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [
    blocks.conv_bn_act, blocks.vgg_block, blocks.basic_residual_block, blocks.bottleneck_block,
    blocks.fire_module, blocks.depthwise_separable_block, blocks.inverted_residual, blocks.squeeze_excite,
    blocks.hard_swish, blocks.hard_sigmoid, blocks.mbconv, blocks.fused_mbconv])
def test_each_block_names_its_paper(block):
    assert "arXiv:" in block.__doc__.splitlines()[0]


def test_papers_are_arxiv_ids():
    assert arch.PAPERS["ResNet"] == "1512.03385" and arch.PAPERS["EfficientNet"] == "1905.11946"
    assert all(re.fullmatch(r"\d{4}\.\d{4,5}", i) for i in arch.PAPERS.values())


def test_inception_3a_has_the_papers_size():
    # GoogLeNet (arXiv:1409.4842), Table 1, inception (3a): 28x28x192 in, 28x28x256 out, 159K params, 128M ops.
    inputs = keras.Input((28, 28, 192))
    model = keras.Model(inputs, blocks.inception_module(inputs, 64, 96, 128, 16, 32, 32, name="3a"))
    assert model.output.shape[1:] == (28, 28, 256)
    # weights of each convolution: kernel height x width x input channels x filters
    shapes = [(1, 192, 64), (1, 192, 96), (3, 96, 128), (1, 192, 16), (5, 16, 32), (1, 192, 32)]
    weights = sum(k * k * c_in * c_out for k, c_in, c_out in shapes)
    biases = sum(c_out for _, _, c_out in shapes)
    assert model.count_params() == weights + biases == 163_696
    assert weights // 1024 == 159  # the paper's K is 1024 (163,328 weights = 159.5 K); the biases are left out
    assert round(count_macs(model) / 1e6) == 128 and count_macs(model) == 28 * 28 * weights
    assert "arXiv:" in blocks.inception_module.__doc__.splitlines()[0]


def test_small_input_stem_keeps_the_resolution_and_the_parameters():
    for build in (lambda **k: arch.mobilenet_v2((32, 32, 3), 10, **k), lambda **k: arch.efficientnet(
            input_shape=(32, 32, 3), classes=10, **k), lambda **k: arch.efficientnet_edgetpu(
            input_shape=(32, 32, 3), classes=10, **k)):
        plain, small = build(), build(small_input=True)
        assert plain.count_params() == small.count_params()
        assert small.get_layer("stem_conv").output.shape[1] == 32 and plain.get_layer("stem_conv").output.shape[1] == 16
        assert small.get_layer("head_conv").output.shape[1] == 2


def test_vgg_width_dense_and_batch_norm_for_small_images():
    model = arch.vgg(16, (32, 32, 3), 10, width=0.5, dense=512, batch_norm=True)
    assert model.get_layer("block1_conv1_conv").filters == 32 and model.get_layer("fc1").units == 512
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.output_shape == (None, 10)


def test_plain_network_has_no_additions_and_depth_must_be_6n_plus_2():
    plain = arch.resnet_cifar(20, residual=False)
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    assert plain.count_params() == arch.resnet_cifar(20).count_params()  # option A shortcuts are free
    with pytest.raises(ValueError, match="6n \\+ 2"):
        arch.resnet_cifar(21)
