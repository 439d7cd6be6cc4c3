"""Counting multiply-accumulates (MACs), the cost measure of the papers of Part II."""
from __future__ import annotations

import math

import keras
from keras import layers

COUNTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


def layer_macs(layer) -> int:
    """MACs per image of one layer: each kernel weight is used once per output position."""
    if isinstance(layer, keras.Model):
        return count_macs(layer)
    if not isinstance(layer, COUNTED):
        return 0
    if None in layer.output.shape[1:]:
        raise ValueError(f"{layer.name}: output shape {layer.output.shape} is not fixed; give an input_shape")
    positions = math.prod(layer.output.shape[1:-1])  # H x W for a conv, 1 for a dense layer on a vector
    return positions * math.prod(layer.kernel.shape)


def count_macs(model) -> int:
    """Multiply-accumulates per image of the Conv2D, DepthwiseConv2D and Dense layers, nested models included.

    Left out, as in the papers' counts: biases, batch normalization, activations,
    pooling, additions and multiplications of feature maps (residuals, SE gates).
    Each layer is counted once, even if the model calls it several times.
    """
    return sum(layer_macs(layer) for layer in model.layers)


def layer_table(model) -> list[dict]:
    """One row per layer: name, output shape, parameters, MACs per image."""
    return [dict(name=layer.name, output_shape=tuple(layer.output.shape), params=layer.count_params(),
                 macs=layer_macs(layer)) for layer in model.layers]
