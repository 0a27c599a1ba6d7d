"""cnnctl.model.summary: the FLOPs `cnnctl check` reports, counted by hand."""

import pytest

from cnnctl.config import load as config_lib
from cnnctl.model import summary



# --------------------------------------------------------------------------- FLOPs
def test_flops_of_the_mnist_cnn(write_yaml, model_yaml):
    info = summary.describe(config_lib.load(write_yaml(model_yaml([28, 28, 1], [
        "{type: conv2d, filters: 32, activation: relu}", "{type: max_pool2d}",
        "{type: conv2d, filters: 64, activation: relu}", "{type: max_pool2d}",
        "{type: conv2d, filters: 64, activation: relu}", "{type: flatten}",
        "{type: dense, units: 64, activation: relu}",
        "{type: dense, units: 10, activation: softmax}"]))))
    # 2 x multiply-accumulates: 26*26*9*32 + 11*11*9*32*64 + 3*3*9*64*64 + 576*64 + 64*10
    assert info["flops"] == 5_588_480
    assert info["params"] == 93_322
    assert [layer["flops"] for layer in info["layers"]] == [
        2 * 26 * 26 * 9 * 32, 0, 2 * 11 * 11 * 9 * 32 * 64, 0, 2 * 3 * 3 * 9 * 64 * 64, 0,
        2 * 576 * 64, 2 * 64 * 10]


@pytest.mark.parametrize("input_shape, layer, flops", [
    # 8x8 outputs x (3*3 window x 4 channels x multiplier 2)
    ([8, 8, 4], "{type: depthwise_conv2d, depth_multiplier: 2, padding: same}", 2 * 64 * (9 * 4 * 2)),
    # strided: 4x4 outputs
    ([8, 8, 4], "{type: depthwise_conv2d, strides: 2, padding: same}", 2 * 16 * (9 * 4)),
    # depthwise 3x3 on 4 channels, then pointwise 4 -> 16, at 8x8 outputs
    ([8, 8, 4], "{type: separable_conv2d, filters: 16, padding: same}", 2 * 64 * (9 * 4 + 4 * 16)),
    # each of the 4x4 input positions spreads a 3x3x(8 -> 3) kernel over the 8x8 output
    ([4, 4, 8], "{type: conv2d_transpose, filters: 3, strides: 2, padding: same}", 2 * 16 * (9 * 8 * 3)),
], ids=["depthwise", "depthwise-strided", "separable", "transposed"])
def test_flops_by_hand(write_yaml, input_shape, layer, flops, model_yaml):
    info = summary.describe(config_lib.load(write_yaml(model_yaml(input_shape, [layer]))))
    assert info["flops"] == flops
