"""Bad input, one table: every public entry point refuses it clearly, before anything is compiled.

Each row calls one public function, module, model, config field or CLI option with one bad
argument -- wrong rank, dtype or channel count, an empty array, a negative or zero size, an
unknown key, a value of the wrong type -- and requires the exception type and a message that
names the argument, the offending value and what was expected. Rows of array code run with
their inputs already on the device and with every XLA compilation counted: the error must
come from the Python checks, with zero compilations (``jax.clear_caches()`` first, so a cached
executable cannot hide one). CLI rows require exit code 2 and the message on stderr. A batch
that does not split over the devices is tried in a subprocess with 4 simulated CPU devices.
"""

# Rows bind their inputs as default arguments (``lambda x=f32(2, 7, 5, 3): ...``) on purpose:
# the inputs are built when the row is made, outside the window where compilations are counted.
# ruff: noqa: B008

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from fault_tools import KILL_CONFIG, ROOT, child_env, record
from jax._src import dispatch

from jaxcnn import cli
from jaxcnn import functional as F
from jaxcnn import kernels as K
from jaxcnn import models as M
from jaxcnn import nn as jnn
from jaxcnn import shapes as S
from jaxcnn.data import ArraySource, BatchLoader, load
from jaxcnn.data import augment as A
from jaxcnn.train import Checkpointer, default_config, make_optimizer, validate_config


@dataclass(frozen=True)
class Row:
    id: str
    make: Callable[[], Callable[[], Any]]  # builds the inputs (outside the count), returns the call
    error: type
    message: str  # regex: the argument, the value, what was expected
    kind: str = "array"  # "array" (compilations counted), "host", "config", "cli"


def f32(*shape):
    return jnp.ones(shape, jnp.float32)


def i32(*shape):
    return jnp.zeros(shape, jnp.int32)


def key():
    return jax.random.PRNGKey(0)


def rows_functional() -> list[Row]:
    k = lambda: f32(3, 3, 3, 4)  # noqa: E731 - a 3x3 kernel, 3 -> 4 channels
    return [
        Row("F.conv wrong rank", lambda: (lambda x=f32(7, 5), w=k(): F.conv(x, w)),
            ValueError, r"conv: x must have rank 3 or 4 or 5 .* got shape \(7, 5\)"),
        Row("F.conv single image without its batch axis", lambda: (lambda x=f32(7, 5, 3), w=k(): F.conv(x, w)),
            ValueError, r"conv: x must have a batch axis: got \(7, 5, 3\), read as one example \(H, W, C\)"),
        Row("F.conv wrong dtype", lambda: (lambda x=i32(2, 7, 5, 3), w=k(): F.conv(x, w)),
            TypeError, r"conv: x must have a floating dtype, got int32"),
        Row("F.conv wrong channel count", lambda: (lambda x=f32(2, 7, 5, 2), w=k(): F.conv(x, w)),
            ValueError, r"conv: channel mismatch: x of shape \(2, 7, 5, 2\) has C_in=2 .* expects C_in // groups = 3"),
        Row("F.conv zero stride", lambda: (lambda x=f32(2, 7, 5, 3), w=k(): F.conv(x, w, stride=0)),
            ValueError, r"conv: stride must be >= 1 in every dimension, got \(0, 0\)"),
        Row("F.conv negative dilation", lambda: (lambda x=f32(2, 7, 5, 3), w=k(): F.conv(x, w, dilation=-2)),
            ValueError, r"conv: dilation must be >= 1 in every dimension, got \(-2, -2\)"),
        Row("F.conv bad padding", lambda: (lambda x=f32(2, 7, 5, 3), w=k(): F.conv(x, w, padding="FULL")),
            ValueError, r"conv: padding='FULL' is not understood; expected 'VALID', 'SAME'"),
        Row("F.conv groups not dividing", lambda: (lambda x=f32(2, 7, 5, 3), w=k(): F.conv(x, w, groups=2)),
            ValueError, r"conv: groups=2 must divide the input channels C_in=3"),
        Row("F.conv kernel larger than input", lambda: (lambda x=f32(2, 7, 5, 3), w=f32(9, 9, 3, 4): F.conv(x, w)),
            ValueError, r"conv: kernel is larger than the padded input .* input 7 .* window 9"),
        Row("F.conv bias wrong shape", lambda: (lambda x=f32(2, 7, 5, 3), w=k(), b=f32(5): F.conv(x, w, b)),
            ValueError, r"conv: bias must have shape \(4,\) .* got \(5,\)"),
        Row("F.conv unknown layout", lambda: (lambda x=f32(2, 7, 5, 3), w=k(): F.conv(x, w, layout="NWHC")),
            ValueError, r"conv: unknown layout='NWHC'; expected one of"),
        Row("F.conv string input", lambda: (lambda w=k(): F.conv("image", w)),
            TypeError, r"conv: x must be an array, got str"),
        Row("F.conv_transpose wrong rank", lambda: (lambda x=f32(7, 5), w=k(): F.conv_transpose(x, w)),
            ValueError, r"conv_transpose: x must have rank 3 or 4 or 5 .* got shape \(7, 5\)"),
        Row("F.max_pool zero window", lambda: (lambda x=f32(2, 7, 5, 3): F.max_pool(x, 0)),
            ValueError, r"max_pool: window must be >= 1 in every dimension, got \(0, 0\)"),
        Row("F.max_pool wrong rank", lambda: (lambda x=f32(7, 5): F.max_pool(x, 2)),
            ValueError, r"max_pool: x must have rank 3 or 4 or 5 .* got shape \(7, 5\)"),
        Row("F.max_pool window larger than input", lambda: (lambda x=f32(2, 7, 5, 3): F.max_pool(x, 9)),
            ValueError, r"max_pool: window is larger than the padded input .* input 7 .* window 9"),
        Row("F.avg_pool zero stride", lambda: (lambda x=f32(2, 7, 5, 3): F.avg_pool(x, 2, stride=0)),
            ValueError, r"avg_pool: stride must be >= 1 in every dimension, got \(0, 0\)"),
        Row("F.avg_pool wrong dtype", lambda: (lambda x=i32(2, 7, 5, 3): F.avg_pool(x, 2)),
            TypeError, r"avg_pool: x must have a floating dtype, got int32"),
        Row("F.global_avg_pool wrong rank", lambda: (lambda x=f32(7): F.global_avg_pool(x)),
            ValueError, r"global_avg_pool: x must have rank 3 or 4 or 5 .* got shape \(7,\)"),
        Row("F.adaptive_avg_pool zero size", lambda: (lambda x=f32(2, 7, 5, 3): F.adaptive_avg_pool(x, 0)),
            ValueError, r"adaptive_avg_pool: output_size must be >= 1 in every dimension, got \(0, 0\)"),
        Row("F.max_unpool indices shape", lambda: (lambda x=f32(2, 7, 5, 3), i=i32(2, 7, 5, 2): F.max_unpool(x, i, 2)),
            ValueError, r"max_unpool: indices must have x's shape \(2, 7, 5, 3\), got shape \(2, 7, 5, 2\)"),
        Row("F.upsample unknown method", lambda: (lambda x=f32(2, 7, 5, 3): F.upsample(x, scale_factor=2, method="cubic")),
            ValueError, r"upsample: unknown method='cubic'; expected one of"),
        Row("F.upsample zero scale", lambda: (lambda x=f32(2, 7, 5, 3): F.upsample(x, scale_factor=0)),
            ValueError, r"upsample: scale_factor must be positive and finite, got \(0.0, 0.0\)"),
        Row("F.batch_norm wrong channel count",
            lambda: (lambda x=f32(2, 7, 5, 3), s=f32(4), b=f32(4): F.batch_norm(x, s, b, train=True)),
            ValueError, r"batch_norm: .*scale.*\(4,\).*3"),
        Row("F.group_norm groups not dividing", lambda: (lambda x=f32(2, 7, 5, 3): F.group_norm(x, 2)),
            ValueError, r"group_norm: num_groups=2 must divide the number of channels C=3"),
        Row("F.group_norm zero groups", lambda: (lambda x=f32(2, 7, 5, 3): F.group_norm(x, 0)),
            ValueError, r"group_norm: num_groups must be a positive int, got 0"),
        Row("F.layer_norm wrong shape", lambda: (lambda x=f32(2, 7, 5, 3), s=f32(4): F.layer_norm(x, s)),
            ValueError, r"layer_norm: normalized_shape=\(4,\) must be the trailing sizes of x, got x of shape \(2, 7, 5, 3\)"),
        Row("F.dense wrong feature count", lambda: (lambda x=f32(2, 5), w=f32(4, 3): F.dense(x, w)),
            ValueError, r"dense: x of shape \(2, 5\) has 5 input features but kernel of shape \(4, 3\) .* expects 4"),
        Row("F.dense scalar input", lambda: (lambda x=jnp.float32(1), w=f32(4, 3): F.dense(x, w)),
            ValueError, r"dense: x must have rank >= 1 .* got a scalar"),
        Row("F.dropout rate above 1", lambda: (lambda x=f32(2, 7, 5, 3), kk=key(): F.dropout(kk, x, 1.5)),
            ValueError, r"dropout: rate is the drop probability and must be in \[0, 1\], got 1.5"),
        Row("F.dropout negative rate", lambda: (lambda x=f32(2, 7, 5, 3), kk=key(): F.dropout(kk, x, -0.1)),
            ValueError, r"dropout: rate .* must be in \[0, 1\], got -0.1"),
        Row("F.dropout missing key", lambda: (lambda x=f32(2, 7, 5, 3): F.dropout(None, x, 0.5)),
            TypeError, r"dropout: a random key is required when deterministic=False and rate > 0"),
        Row("F.flatten axis out of range", lambda: (lambda x=f32(2, 7, 5, 3): F.flatten(x, 5)),
            ValueError, r"flatten: start_axis=5 is out of range for x of shape \(2, 7, 5, 3\)"),
        Row("F.leaky_relu slope of wrong type", lambda: (lambda x=f32(2, 3): F.leaky_relu(x, "a")),
            TypeError, r"leaky_relu: negative_slope must be a Python number, got str"),
        Row("F.softmax axis out of range", lambda: (lambda x=f32(2, 7, 5, 3): F.softmax(x, axis=7)),
            ValueError, r"softmax: axis=7 is out of range for x of shape \(2, 7, 5, 3\)"),
        Row("F.relu string input", lambda: (lambda: F.relu("abc")),
            TypeError, r"relu: x must be an array, got str"),
        Row("F.cross_entropy labels wrong shape", lambda: (lambda z=f32(4, 10), y=i32(5): F.cross_entropy(z, y)),
            ValueError, r"cross_entropy: integer labels must have the shape .* i.e. \(4,\); got labels of shape \(5,\)"),
        Row("F.cross_entropy integer logits", lambda: (lambda z=i32(4, 10), y=i32(4): F.cross_entropy(z, y)),
            TypeError, r"cross_entropy: logits must have a floating dtype, got int32"),
        Row("F.cross_entropy unknown reduction",
            lambda: (lambda z=f32(4, 10), y=i32(4): F.cross_entropy(z, y, reduction="avg")),
            ValueError, r"cross_entropy: unknown reduction='avg'; expected one of \('mean', 'sum', 'none'\)"),
        Row("F.cross_entropy label = num_classes",
            lambda: (lambda z=f32(4, 10), y=jnp.array([0, 10, 1, 2]): F.cross_entropy(z, y)),
            ValueError, r"cross_entropy: labels\[1\] = 10 is outside \[0, 10\)"),
        Row("F.cross_entropy label -1 that is not ignore_index",
            lambda: (lambda z=f32(4, 10), y=jnp.array([0, 1, -1, 2]): F.cross_entropy(z, y, ignore_index=255)),
            ValueError, r"cross_entropy: labels\[2\] = -1 is outside \[0, 10\) and is not ignore_index=255"),
        Row("F.nll_loss labels wrong shape", lambda: (lambda z=f32(4, 10), y=i32(3): F.nll_loss(z, y)),
            ValueError, r"nll_loss: integer labels must have the shape .* got labels of shape \(3,\)"),
        Row("F.binary_cross_entropy shapes", lambda: (lambda p=f32(4) * 0.5, t=f32(3): F.binary_cross_entropy(p, t)),
            ValueError, r"binary_cross_entropy: targets must have the shape of probs \(4,\), got \(3,\)"),
        Row("F.mse shapes", lambda: (lambda p=f32(4), t=f32(3): F.mse(p, t)),
            ValueError, r"mse: targets must have the shape of predictions \(4,\), got \(3,\)"),
        Row("F.dice_loss labels wrong shape", lambda: (lambda p=f32(2, 4, 4, 3), y=i32(2, 4, 5): F.dice_loss(p, y)),
            ValueError, r"dice_loss: integer labels must have the shape .* \(2, 4, 4\); got labels of shape \(2, 4, 5\)"),
        Row("F.accuracy labels wrong shape", lambda: (lambda z=f32(4, 10), y=i32(3): F.accuracy(z, y)),
            ValueError, r"accuracy: labels must have the shape .* \(4,\); got labels of shape \(3,\)"),
        Row("F.confusion_matrix zero classes", lambda: (lambda p=i32(4), y=i32(4): F.confusion_matrix(p, y, 0)),
            ValueError, r"confusion_matrix: num_classes must be a positive int, got 0"),
        Row("F.confusion_matrix label out of range",
            lambda: (lambda p=i32(4), y=jnp.array([0, 1, 2, 3]): F.confusion_matrix(p, y, 3)),
            ValueError, r"confusion_matrix: labels\[3\] = 3 is outside \[0, 3\)"),
        Row("F.mean_iou shapes", lambda: (lambda p=i32(4), y=i32(3): F.mean_iou(p, y, 3)),
            ValueError, r"predictions of shape \(4,\) and labels of shape \(3,\) must have the same shape"),
        Row("F.iou_from_confusion_matrix not square",
            lambda: (lambda cm=i32(3, 4): F.iou_from_confusion_matrix(cm)),
            ValueError, r"iou_from_confusion_matrix: cm must be a square \(K, K\) matrix, got shape \(3, 4\)"),
        Row("F.correlate2d unknown mode", lambda: (lambda x=f32(5, 5), h=f32(3, 3): F.correlate2d(x, h, mode="circ")),
            ValueError, r"correlate2d: unknown mode='circ'; expected one of \('full', 'same', 'valid'\)"),
        Row("F.convolve2d empty image", lambda: (lambda x=f32(0, 5), h=f32(3, 3): F.convolve2d(x, h)),
            ValueError, r"convolve2d: image is empty, shape \(0, 5\)"),
    ]


def rows_kernels_shapes() -> list[Row]:
    return [
        Row("kernels.laplacian neighbours", lambda: (lambda: K.laplacian(5)),
            ValueError, r"laplacian: neighbours must be 4 or 8, got 5"),
        Row("kernels.box_blur zero size", lambda: (lambda: K.box_blur(0)),
            ValueError, r"box_blur: n must be an odd positive int .* got 0"),
        Row("kernels.box_blur negative size", lambda: (lambda: K.box_blur(-3)),
            ValueError, r"box_blur: n must be an odd positive int .* got -3"),
        Row("kernels.gaussian zero sigma", lambda: (lambda: K.gaussian(3, 0.0)),
            ValueError, r"gaussian: sigma must be > 0 .* got 0.0"),
        Row("kernels.gaussian size of wrong type", lambda: (lambda: K.gaussian("3", 1.0)),
            TypeError, r"gaussian: size must be an odd positive int, got '3'"),
        Row("kernels.filter2d wrong rank", lambda: (lambda x=f32(5), h=K.sobel_x(): K.filter2d(x, h)),
            ValueError, r"filter2d: image must have rank 2 or 3 or 4 .* got shape \(5,\)"),
        Row("kernels.filter2d kernel rank", lambda: (lambda x=f32(5, 5), h=f32(3): K.filter2d(x, h)),
            ValueError, r"filter2d: kernel must have rank 2 .* got shape \(3,\)"),
        Row("kernels.filter2d padding mode", lambda: (lambda x=f32(5, 5), h=K.sobel_x(): K.filter2d(x, h, padding_mode="mirror")),
            ValueError, r"filter2d: unknown padding_mode='mirror'; expected one of"),
        Row("shapes.conv_output_size zero input", lambda: (lambda: S.conv_output_size(0, 3)),
            ValueError, r"conv_output_size: in_size must be positive, got 0", "host"),
        Row("shapes.conv_output_size negative input", lambda: (lambda: S.conv_output_size(-28, 3)),
            ValueError, r"conv_output_size: in_size must be positive, got -28", "host"),
        Row("shapes.conv_output_size kernel too large", lambda: (lambda: S.conv_output_size(2, 5)),
            ValueError, r"conv_output_size: output size would be -2 <= 0: kernel=5 .* in_size=2", "host"),
        Row("shapes.conv_output_size wrong type", lambda: (lambda: S.conv_output_size("28", 3)),
            TypeError, r"conv_output_size: in_size must be an int, got '28' \(str\)", "host"),
        Row("shapes.pool_output_size zero stride", lambda: (lambda: S.pool_output_size(28, 2, stride=0)),
            ValueError, r"pool_output_size: stride must be positive, got 0", "host"),
        Row("shapes.conv_transpose_output_size zero stride", lambda: (lambda: S.conv_transpose_output_size(4, 3, stride=0)),
            ValueError, r"conv_transpose_output_size: stride must be positive, got 0", "host"),
        Row("shapes.conv_params groups", lambda: (lambda: S.conv_params(3, 4, 3, groups=2)),
            ValueError, r"conv_params: groups=2 must divide c_in=3 and c_out=4", "host"),
        Row("shapes.dense_params negative", lambda: (lambda: S.dense_params(-1, 4)),
            ValueError, r"dense_params: in_features must be positive, got -1", "host"),
        Row("shapes.batch_norm_params zero", lambda: (lambda: S.batch_norm_params(0)),
            ValueError, r"batch_norm_params: channels must be positive, got 0", "host"),
        Row("shapes.receptive_fields wrong type", lambda: (lambda: S.receptive_fields([("c1", 3)])),
            TypeError, r"receptive_fields: specs\[0\] must be a LayerSpec, got \('c1', 3\)", "host"),
    ]


def rows_nn_models() -> list[Row]:
    def init(module, x):
        return lambda x=x, k=key(): module.init(k, x)

    return [
        Row("nn.Conv zero features", lambda: init(jnn.Conv(0, 3), f32(2, 7, 5, 3)),
            ValueError, r"Conv\(None\): features must be a positive int, got 0"),
        Row("nn.Conv zero kernel", lambda: init(jnn.Conv(4, 0), f32(2, 7, 5, 3)),
            ValueError, r"Conv\(None\): kernel_size must be >= 1 in every dimension, got \(0, 0\)"),
        Row("nn.Conv zero stride", lambda: init(jnn.Conv(4, 3, stride=0), f32(2, 7, 5, 3)),
            ValueError, r"Conv\(None\): stride must be >= 1 in every dimension, got \(0, 0\)"),
        Row("nn.Conv wrong rank", lambda: init(jnn.Conv(4, 3), f32(7, 5)),
            ValueError, r"Conv\(None\): x must have rank 3 or 4 or 5 .* got shape \(7, 5\)"),
        Row("nn.Conv wrong dtype", lambda: init(jnn.Conv(4, 3), i32(2, 7, 5, 3)),
            TypeError, r"Conv\(None\): x must have a floating dtype, got int32"),
        Row("nn.Conv groups", lambda: init(jnn.Conv(4, 3, groups=2), f32(2, 7, 5, 3)),
            ValueError, r"Conv\(None\): groups=2 must be a positive int dividing C_in=3"),
        Row("nn.ConvTranspose zero features", lambda: init(jnn.ConvTranspose(0, 3), f32(2, 7, 5, 3)),
            ValueError, r"ConvTranspose\(None\): features must be a positive int, got 0"),
        Row("nn.Dense zero features", lambda: init(jnn.Dense(0), f32(2, 5)),
            ValueError, r"Dense\(None\): features must be a positive int, got 0"),
        Row("nn.Dense scalar input", lambda: init(jnn.Dense(3), jnp.float32(1)),
            ValueError, r"Dense\(None\): x must have a feature axis, got shape \(\)"),
        Row("nn.BatchNorm momentum", lambda: init(jnn.BatchNorm(momentum=1.5), f32(2, 7, 5, 3)),
            ValueError, r"BatchNorm\(None\): momentum must be a number in \[0, 1\] .* got 1.5"),
        Row("nn.GroupNorm groups", lambda: init(jnn.GroupNorm(num_groups=2), f32(2, 7, 5, 3)),
            ValueError, r"GroupNorm\(None\): num_groups must be a positive int dividing the channels C=3, got 2"),
        Row("nn.Dropout rate", lambda: (lambda x=f32(2, 7, 5, 3), k=key(): jnn.Dropout(1.5).apply({}, x, train=True, rngs={"dropout": k})),
            ValueError, r"Dropout\(None\): rate is the drop probability and must be in \[0, 1\], got 1.5"),
        Row("nn.MaxPool zero window", lambda: init(jnn.MaxPool(0), f32(2, 7, 5, 3)),
            ValueError, r"max_pool: window must be >= 1 in every dimension, got \(0, 0\)"),
        Row("nn.Upsample zero scale", lambda: init(jnn.Upsample(scale_factor=0), f32(2, 7, 5, 3)),
            ValueError, r"upsample: scale_factor must be positive and finite, got \(0.0, 0.0\)"),
        Row("nn.Sequential non-callable layer", lambda: init(jnn.Sequential([jnn.Flatten(), 3]), f32(2, 7, 5, 3)),
            TypeError, r"Sequential: layers\[1\] must be a module or a function, got 3"),
        Row("get_model unknown name", lambda: (lambda: M.get_model("ResNet19")),
            ValueError, r"get_model: unknown model name='ResNet19'; expected one of \[.*'ResNet18'"),
        Row("get_model unknown keyword", lambda: (lambda: M.get_model("SimpleCNN", num_clases=10)),
            TypeError, r"get_model: bad arguments for SimpleCNN: .*unexpected keyword argument 'num_clases'"),
        Row("get_model SimpleCNN zero classes", lambda: (lambda: M.get_model("SimpleCNN", num_classes=0)),
            ValueError, r"SimpleCNN: num_classes must be a positive int, got 0"),
        Row("SimpleCNN negative classes", lambda: (lambda: M.SimpleCNN(num_classes=-1)),
            ValueError, r"SimpleCNN: num_classes must be a positive int, got -1"),
        Row("SimpleCNN classes of wrong type", lambda: (lambda: M.SimpleCNN(num_classes="10")),
            ValueError, r"SimpleCNN: num_classes must be a positive int, got '10'"),
        Row("SimpleCNN dropout rate", lambda: (lambda: M.SimpleCNN(dropout_rate=1.5)),
            ValueError, r"SimpleCNN: dropout_rate must be a number in \[0, 1\), got 1.5"),
        Row("SimpleCNN wrong rank", lambda: init(M.SimpleCNN(), f32(28, 28, 1)),
            ValueError, r"SimpleCNN: x must be \(N, H, W, C\), got shape \(28, 28, 1\)"),
        Row("SimpleCNN wrong dtype", lambda: init(M.SimpleCNN(), jnp.zeros((2, 28, 28, 1), jnp.uint8)),
            TypeError, r"SimpleCNN: x must have a floating dtype, got uint8"),
        Row("SimpleCNN empty batch", lambda: init(M.SimpleCNN(), f32(0, 28, 28, 1)),
            ValueError, r"SimpleCNN: x is empty, shape \(0, 28, 28, 1\)"),
        Row("LeNet5 activation", lambda: (lambda: M.get_model("LeNet5", activation="elu")),
            ValueError, r"LeNet5: activation must be 'relu' or 'tanh', got 'elu'"),
        Row("LeNet5 wrong rank", lambda: init(M.LeNet5(), f32(28, 28)),
            ValueError, r"LeNet5: x must be \(N, H, W, C\), got shape \(28, 28\)"),
        Row("ResNet18 zero classes", lambda: (lambda: M.get_model("ResNet18", num_classes=0)),
            ValueError, r"ResNet: num_classes must be a positive int, got 0"),
        Row("ResNet stage sizes", lambda: (lambda: M.ResNet(stage_sizes=(2, 0))),
            ValueError, r"ResNet: stage_sizes must be a sequence of at least 1 positive int\(s\), got \(2, 0\)"),
        Row("ResNet18 wrong rank", lambda: init(M.ResNet18(num_classes=10), f32(32, 32, 3)),
            ValueError, r"ResNet: x must be \(N, H, W, C\), got shape \(32, 32, 3\)"),
        Row("UNet zero classes", lambda: (lambda: M.get_model("UNet", num_classes=0)),
            ValueError, r"UNet: num_classes must be a positive int, got 0"),
        Row("UNet one level", lambda: (lambda: M.UNet(3, features=(8,))),
            ValueError, r"UNet: features must be a sequence of at least 2 positive int\(s\), got \(8,\)"),
        Row("UNet decoder", lambda: (lambda: M.UNet(3, decoder="bicubic")),
            ValueError, r"UNet: decoder must be 'transpose' or 'upsample', got 'bicubic'"),
        Row("FCN backbone", lambda: (lambda: M.get_model("FCN", num_classes=3, backbone="vgg")),
            ValueError, r"FCN: backbone must be .*'resnet18'.* got 'vgg'"),
        Row("SignalRegressor wrong rank", lambda: init(M.SignalRegressor(), f32(2, 28, 28, 1)),
            ValueError, r"SignalRegressor: x must be \(N, L, C\) signals, got shape \(2, 28, 28, 1\)"),
        Row("SignalRegressor zero outputs", lambda: (lambda: M.SignalRegressor(num_outputs=0)),
            ValueError, r"SignalRegressor: num_outputs must be a positive int, got 0"),
        Row("load_torch_resnet depth", lambda: (lambda: M.load_torch_resnet({}, 19)),
            ValueError, r"load_torch_resnet: model must be a jaxcnn ResNet, a depth in \[18, 34, 50, 101, 152\].* got 19"),
        Row("load_torch_resnet source type", lambda: (lambda: M.load_torch_resnet(123, 18)),
            TypeError, r"read_state_dict: source must be a path or a mapping of arrays, got int"),
    ]


def rows_data() -> list[Row]:
    def source():
        return ArraySource(np.zeros((10, 4, 4, 1), np.uint8), np.zeros(10, np.int32))

    def batch():
        return {"image": f32(2, 8, 8, 1), "label": i32(2)}

    return [
        Row("ArraySource wrong rank", lambda: (lambda: ArraySource(np.zeros((10,), np.uint8), np.zeros(10, np.int32))),
            ValueError, r"ArraySource: images must have shape \(N, H, W\) or \(N, H, W, C\), got shape \(10,\)", "host"),
        Row("ArraySource label count", lambda: (lambda: ArraySource(np.zeros((10, 4, 4, 1), np.uint8), np.zeros(9, np.int32))),
            ValueError, r"ArraySource: labels must have one entry per image: images shape \(10, 4, 4, 1\), labels shape \(9,\)", "host"),
        Row("ArraySource empty", lambda: (lambda: ArraySource(np.zeros((0, 4, 4, 1), np.uint8), np.zeros(0, np.int32))),
            ValueError, r"ArraySource: images is empty \(shape \(0, 4, 4, 1\)\)", "host"),
        Row("ArraySource wrong image dtype", lambda: (lambda: ArraySource(np.zeros((2, 4, 4), bool), np.zeros(2, np.int32))),
            TypeError, r"ArraySource: images must be integer or float, got dtype bool", "host"),
        Row("ArraySource labels out of range", lambda: (lambda: ArraySource(np.zeros((2, 4, 4), np.uint8), np.array([0, 7]), num_classes=3)),
            ValueError, r"ArraySource: labels must lie in \[0, num_classes=3\), got min 0 and max 7", "host"),
        Row("ArraySource.select empty slice", lambda: (lambda s=source(): s.select(slice(5, 5))),
            ValueError, r"ArraySource.select: slice\(5, 5, None\) selects none of the 10 examples", "host"),
        Row("BatchLoader zero batch", lambda: (lambda s=source(): BatchLoader(s, 0)),
            ValueError, r"BatchLoader: batch_size must be a positive int, got 0", "host"),
        Row("BatchLoader negative batch", lambda: (lambda s=source(): BatchLoader(s, -1)),
            ValueError, r"BatchLoader: batch_size must be a positive int, got -1", "host"),
        Row("BatchLoader batch of wrong type", lambda: (lambda s=source(): BatchLoader(s, "16")),
            TypeError, r"BatchLoader: batch_size must be an int, got '16' \(str\)", "host"),
        Row("BatchLoader batch larger than data", lambda: (lambda s=source(): BatchLoader(s, 16, last_batch="drop")),
            ValueError, r"BatchLoader: batch_size=16 exceeds the 10 examples", "host"),
        Row("BatchLoader last_batch", lambda: (lambda s=source(): BatchLoader(s, 2, last_batch="keep")),
            ValueError, r"BatchLoader: last_batch='keep' is not one of \('drop', 'pad', 'partial'\)", "host"),
        Row("BatchLoader negative seed", lambda: (lambda s=source(): BatchLoader(s, 2, seed=-1)),
            ValueError, r"BatchLoader: seed must be a non-negative int, got -1", "host"),
        Row("BatchLoader batch not divisible by shards", lambda: (lambda s=source(): BatchLoader(s, 3, shard_index=0, shard_count=2)),
            ValueError, r"BatchLoader: batch_size=3 \(global\) must be divisible by shard_count=2", "host"),
        Row("BatchLoader source of non-examples", lambda: (lambda: BatchLoader([1, 2, 3], 2)),
            TypeError, r"BatchLoader: source\[0\] must be an example, a dict with an 'image' entry, got int 1", "host"),
        Row("BatchLoader zero epochs", lambda: (lambda s=source(): BatchLoader(s, 2, num_epochs=0)),
            ValueError, r"BatchLoader: num_epochs must be a positive int, got 0", "host"),
        Row("load empty name", lambda: (lambda: load("", "train")),
            TypeError, r"load: name must be a non-empty string, got ''", "host"),
        Row("load unknown split", lambda: (lambda: load("mnist", "validation")),
            ValueError, r"load: split='validation' is not understood; expected one of \['test', 'train'\]", "host"),
        Row("load unknown source", lambda: (lambda: load("mnist", "train", source="hdf5")),
            ValueError, r"load: source='hdf5' is not one of \('auto', 'idx', 'tfds'\)", "host"),
        Row("load download of wrong type", lambda: (lambda: load("mnist", "train", download="yes")),
            TypeError, r"load: download must be True or False, got 'yes'", "host"),
        Row("augment.random_crop negative padding", lambda: (lambda b=batch(), kk=key(): A.random_crop(kk, b, padding=-1)),
            ValueError, r"random_crop: padding must be a non-negative int, got -1"),
        Row("augment.random_crop wrong rank", lambda: (lambda b={"image": f32(8, 8, 1)}, kk=key(): A.random_crop(kk, b)),
            ValueError, r"random_crop: batch\['image'\] must have shape \(N, H, W, C\), got shape \(8, 8, 1\)"),
        Row("augment.random_crop no image", lambda: (lambda b={"x": f32(2, 8, 8, 1)}, kk=key(): A.random_crop(kk, b)),
            TypeError, r"random_crop: batch must be a dict with an 'image' entry"),
        Row("augment.random_crop missing key", lambda: (lambda b=batch(): A.random_crop(None, b)),
            TypeError, r"random_crop: key must be a jax.random key, got None"),
        Row("augment.random_flip probability", lambda: (lambda b=batch(), kk=key(): A.random_flip(kk, b, probability=1.5)),
            ValueError, r"random_flip: probability must be in \[0, 1\], got 1.5"),
        Row("augment.random_affine negative rotation", lambda: (lambda b=batch(), kk=key(): A.random_affine(kk, b, max_rotation=-5)),
            ValueError, r"random_affine: max_rotation must be >= 0.0, got -5.0"),
        Row("augment.normalize zero std", lambda: (lambda b=batch(): A.normalize(None, b, std=0.0)),
            ValueError, r"normalize: std must be > 0, got 0.0"),
        Row("augment.resize zero size", lambda: (lambda b=batch(): A.resize(None, b, size=0)),
            ValueError, r"resize: size must be a positive int, got 0"),
        Row("augment.resize unknown method", lambda: (lambda b=batch(): A.resize(None, b, size=4, method="cubicx")),
            ValueError, r"resize: method='cubicx' is not a jax.image.resize method"),
        Row("augment.compose non-callable", lambda: (lambda: A.compose(1)),
            TypeError, r"compose: argument 0 must be callable, got int", "host"),
    ]


def _config(**fields: Any) -> ml_collections.ConfigDict:
    config = default_config()
    for path, value in fields.items():
        *parents, last = path.split("__")
        target = config
        for part in parents:
            target = target[part]
        with target.ignore_type():
            target[last] = value
    return config


def rows_config() -> list[Row]:
    def check(**fields):
        return lambda: (lambda c=_config(**fields): validate_config(c))

    def add(path, value):
        def make():
            config = default_config()
            *parents, last = path.split(".")
            target = config
            for part in parents:
                target = target[part]
            target[last] = value
            return lambda: validate_config(config)
        return make

    cfg = "config"
    return [
        Row(f"{cfg}: unknown top-level key", add("learning_rate", 0.1),
            ValueError, r"config.learning_rate is not a known field; the fields of config are \[.*'optimizer'", "config"),
        Row(f"{cfg}: unknown nested key", add("optimizer.lr", 0.1),
            ValueError, r"config.optimizer.lr is not a known field; the fields of config.optimizer are \[.*'learning_rate'", "config"),
        Row(f"{cfg}: unknown model field", add("model.num_clases", 10),
            ValueError, r"config.model has \['num_clases'\], which are not fields of SimpleCNN; its fields are", "config"),
        Row(f"{cfg}: batch_size zero", check(batch_size=0),
            ValueError, r"config.batch_size must be an int >= 1, got 0", "config"),
        Row(f"{cfg}: batch_size negative", check(batch_size=-8),
            ValueError, r"config.batch_size must be an int >= 1, got -8", "config"),
        Row(f"{cfg}: batch_size of wrong type", check(batch_size="128"),
            ValueError, r"config.batch_size must be an int >= 1, got '128'", "config"),
        Row(f"{cfg}: num_epochs negative", check(num_epochs=-1),
            ValueError, r"config.num_epochs must be an int >= 0, got -1", "config"),
        Row(f"{cfg}: learning rate zero", check(optimizer__learning_rate=0.0),
            ValueError, r"config.optimizer.learning_rate must be > 0, got 0.0", "config"),
        Row(f"{cfg}: momentum out of range", check(optimizer__momentum=1.5),
            ValueError, r"config.optimizer.momentum must be a number in \[0.0, 1.0\), got 1.5", "config"),
        Row(f"{cfg}: nesterov of wrong type", check(optimizer__nesterov="yes"),
            TypeError, r"config.optimizer.nesterov must be True or False, got 'yes'", "config"),
        Row(f"{cfg}: async_save of wrong type", check(checkpoint__async_save=1),
            TypeError, r"config.checkpoint.async_save must be True or False, got 1", "config"),
        Row(f"{cfg}: data_dir of wrong type", check(dataset__data_dir=5),
            TypeError, r"config.dataset.data_dir must be a string, got 5 \(int\)", "config"),
        Row(f"{cfg}: derived_train_examples negative", check(dataset__derived_train_examples=-4),
            ValueError, r"config.dataset.derived_train_examples must be an int >= 0, got -4", "config"),
        Row(f"{cfg}: dataset source", check(dataset__source="hdf5"),
            ValueError, r"config.dataset.source='hdf5' is not one of \('auto', 'idx', 'tfds'\)", "config"),
        Row(f"{cfg}: schedule name", check(schedule__name="exp"),
            ValueError, r"config.schedule.name='exp' is not one of", "config"),
        Row(f"{cfg}: schedule boundaries of wrong type", check(schedule__boundaries="0.5"),
            TypeError, r"config.schedule.boundaries must be a list of non-negative numbers, got '0.5'", "config"),
        Row(f"{cfg}: decay_factor negative", check(schedule__decay_factor=-0.1),
            ValueError, r"config.schedule.decay_factor must be a number >= 0.0, got -0.1", "config"),
        Row(f"{cfg}: ema_decay 1", check(ema_decay=1.0),
            ValueError, r"config.ema_decay must be a number in \[0.0, 1.0\), got 1.0", "config"),
        Row(f"{cfg}: freeze of wrong type", check(freeze="conv1"),
            TypeError, r"config.freeze must be a list of strings, got 'conv1'", "config"),
        Row(f"{cfg}: normalize std zero", check(normalize__std=0.0),
            ValueError, r"config.normalize.std must be > 0, got 0.0", "config"),
        Row(f"{cfg}: parallel mode", check(parallel="threads"),
            ValueError, r"config.parallel='threads' is not one of", "config"),
        Row(f"{cfg}: checkpoint keep zero", check(checkpoint__keep=0),
            ValueError, r"config.checkpoint.keep must be an int >= 1, got 0", "config"),
        Row(f"{cfg}: best_mode", check(checkpoint__best_mode="up"),
            ValueError, r"config.checkpoint.best_mode='up' is not one of \('max', 'min'\)", "config"),
        Row(f"{cfg}: task", check(task="detektion"),
            ValueError, r"config.task='detektion' is not one of", "config"),
        Row(f"{cfg}: a group replaced by a value", check(optimizer="adam"),
            TypeError, r"config.optimizer must be a group of fields \(a ConfigDict\), got 'adam'", "config"),
        Row(f"{cfg}: not a ConfigDict", lambda: (lambda: validate_config({"batch_size": 1})),
            TypeError, r"config must be an ml_collections.ConfigDict, got dict", "config"),
        Row("make_optimizer unknown optimizer", lambda: (lambda c=_config(optimizer__name="adamx"): make_optimizer(c, 10)),
            ValueError, r"unknown optimizer.name='adamx'; expected 'sgd', 'adam', 'adamw' or the name of an optax optimizer",
            "config"),
        Row("Checkpointer keep zero", lambda: (lambda: Checkpointer("/nonexistent/ckpt", keep=0)),
            ValueError, r"Checkpointer: checkpoint.keep must be an int >= 1, got 0", "config"),
        Row("Checkpointer best_mode", lambda: (lambda: Checkpointer("/nonexistent/ckpt", best_mode="largest")),
            ValueError, r"Checkpointer: checkpoint.best_mode must be one of \('max', 'min'\), got 'largest'", "config"),
    ]


CONFIG = str(KILL_CONFIG)


def rows_cli() -> list[Row]:
    def argv(*items):
        return lambda: (lambda: cli.main(list(items)))

    train = ("train", "--config", CONFIG, "--workdir", "/nonexistent/w")
    return [
        Row("cli: no command", argv(), SystemExit, r"the following arguments are required: command", "cli"),
        Row("cli: unknown command", argv("fit"), SystemExit, r"invalid choice: 'fit'", "cli"),
        Row("cli: train without --workdir", argv("train", "--config", CONFIG), SystemExit,
            r"the following arguments are required: --workdir", "cli"),
        Row("cli: missing config file", argv("train", "--config", "nope.py", "--workdir", "w"), SystemExit,
            r"config file 'nope.py' does not exist", "cli"),
        Row("cli: config file not .py", argv("train", "--config", str(ROOT / "README.md"), "--workdir", "w"), SystemExit,
            r"config file '.*README.md' must be a .py file with a get_config\(\) function", "cli"),
        Row("cli: unknown option", argv(*train, "--epochs=3"), SystemExit,
            r"unrecognized arguments: --epochs=3 \(overrides look like --config.field=value\)", "cli"),
        Row("cli: unknown config key", argv(*train, "--config.optimizer.lr=0.1"), SystemExit,
            r"--config.optimizer.lr: unknown field 'lr' in optimizer; known fields: \[", "cli"),
        Row("cli: int of wrong type", argv(*train, "--config.batch_size=big"), SystemExit,
            r"--config.batch_size='big': expected an int", "cli"),
        Row("cli: float of wrong type", argv(*train, "--config.optimizer.learning_rate=fast"), SystemExit,
            r"--config.optimizer.learning_rate='fast': expected a float", "cli"),
        Row("cli: bool of wrong type", argv(*train, "--config.checkpoint.async_save=maybe"), SystemExit,
            r"--config.checkpoint.async_save='maybe': expected a bool", "cli"),
        Row("cli: group set to a value", argv(*train, "--config.optimizer=adam"), SystemExit,
            r"--config.optimizer is a group of fields; set one of", "cli"),
        Row("cli: zero batch", argv(*train, "--config.batch_size=0"), SystemExit,
            r"config.batch_size must be an int >= 1, got 0", "cli"),
        Row("cli: negative steps", argv(*train, "--config.num_steps=-5"), SystemExit,
            r"config.num_steps must be an int >= 0, got -5", "cli"),
        Row("cli: bad choice", argv(*train, "--config.parallel=threads"), SystemExit,
            r"config.parallel='threads' is not one of", "cli"),
        Row("cli: too many devices", argv(*train, "--config.num_devices=64"), SystemExit,
            r"config.num_devices=64 but only 1 devices exist", "cli"),
        Row("cli: eval --checkpoint choice", argv("eval", "--workdir", "w", "--checkpoint", "worst"), SystemExit,
            r"argument --checkpoint: invalid choice: 'worst'", "cli"),
        Row("cli: eval of a non-workdir", argv("eval", "--workdir", "/nonexistent/run"), SystemExit,
            r"--workdir '/nonexistent/run' has no config.json", "cli"),
        Row("cli: summary --input-shape", argv("summary", "--config", CONFIG, "--input-shape", "1,28,x"), SystemExit,
            r"--input-shape='1,28,x' must be comma-separated ints", "cli"),
    ]


ROWS = rows_functional() + rows_kernels_shapes() + rows_nn_models() + rows_data() + rows_config() + rows_cli()


class _CompileCounter:
    """Counts XLA compilations of computations (not the host-to-device copies of inputs)."""

    def __init__(self):
        self.names: list[str] = []
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self)

    def __call__(self, event: str, duration: float, **kwargs: Any) -> None:
        if self.active and event == dispatch.BACKEND_COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            if name != "jit(stage)":  # jnp.asarray of a host value: a copy, not a computation
                self.names.append(name)


@pytest.fixture(scope="module")
def compiles():
    counter = _CompileCounter()
    yield counter
    counter.active = False


def test_the_table_covers_every_area():
    areas = {row.id.split(" ")[0].split(".")[0].rstrip(":") for row in ROWS}
    assert {"F", "kernels", "shapes", "nn", "get_model", "ArraySource", "BatchLoader", "load", "augment",
            "config", "cli"} <= areas
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_refused_clearly_before_compiling(row, compiles, capsys):
    call = row.make()
    if row.kind == "array":
        jax.clear_caches()
    capsys.readouterr()
    compiles.names.clear()
    compiles.active = True
    try:
        with pytest.raises(row.error) as raised:
            call()
    finally:
        compiles.active = False
    if row.kind == "cli":
        assert raised.value.code == 2, f"exit code {raised.value.code}"
        text = capsys.readouterr().err
    else:
        text = str(raised.value)
    assert raised.type is row.error or row.error is SystemExit, f"{raised.type.__name__}: {text}"
    assert re.search(row.message, text, re.S), f"message does not match {row.message!r}:\n{text}"
    assert not compiles.names, f"compiled {compiles.names} before refusing the input"
    record(f"bad input: {row.kind}", trials=1, detail=row.id, test="tests/reliability/test_bad_input.py")


_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    sys.path.insert(0, sys.argv[1])
    from fault_tools import tiny_config, tiny_model, tiny_sources
    from jaxcnn.data import ArraySource, BatchLoader, shard_batch
    from jaxcnn.train import DataParallel, train_and_evaluate
    from jaxcnn import cli
    results = {"devices": jax.device_count()}

    def attempt(name, fn):
        try:
            fn()
            results[name] = "no error"
        except SystemExit as err:
            results[name] = f"SystemExit({err.code})"
        except Exception as err:
            results[name] = f"{type(err).__name__}: {err}"

    train, test = tiny_sources()
    for mode in ("jit", "shard_map", "pmap"):
        config = tiny_config(batch_size=6, parallel=mode)
        attempt(f"train_and_evaluate parallel={mode}", lambda: train_and_evaluate(
            config, sys.argv[2] + "/" + mode, train_source=train, eval_source=test, model=tiny_model()))
    config = tiny_config(batch_size=8, eval_batch_size=10, parallel="jit")
    attempt("eval_batch_size", lambda: train_and_evaluate(
        config, sys.argv[2] + "/eval", train_source=train, eval_source=test, model=tiny_model()))
    attempt("DataParallel.check_batch_size", lambda: DataParallel("shard_map").check_batch_size(6, "batch_size"))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    attempt("shard_batch", lambda: shard_batch({"image": np.zeros((6, 4, 4, 1), np.float32)}, sharding))
    attempt("cli", lambda: cli.main(["train", "--config", sys.argv[3], "--workdir", sys.argv[2] + "/cli",
                                     "--config.batch_size=6"]))
    print("RESULTS " + json.dumps(results))
    """
)


def test_batch_not_divisible_by_the_device_count(tmp_path):
    env = child_env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    script = tmp_path / "devices.py"
    script.write_text(_DEVICE_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(ROOT / "tests" / "reliability"), str(tmp_path), CONFIG],
        env=env, capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert line, out.stderr[-3000:]
    results = json.loads(line[0][len("RESULTS "):])
    assert results.pop("devices") == 4
    expected = {
        "train_and_evaluate parallel=jit": r"ValueError: config.batch_size=6 is not divisible by the 4 devices of parallel='jit'",
        "train_and_evaluate parallel=shard_map": r"ValueError: config.batch_size=6 is not divisible by the 4 devices of parallel='shard_map'",
        "train_and_evaluate parallel=pmap": r"ValueError: config.batch_size=6 is not divisible by the 4 devices of parallel='pmap'",
        "eval_batch_size": r"ValueError: config.eval_batch_size=10 is not divisible by the 4 devices",
        "DataParallel.check_batch_size": r"ValueError: batch_size=6 is not divisible by the 4 devices of parallel='shard_map'",
        "shard_batch": r"ValueError: shard_batch: .*6.*4",
        "cli": r"SystemExit\(2\)",
    }
    failures = [f"{name}: {results.get(name)!r} does not match {pattern!r}" for name, pattern in expected.items()
                if not re.search(pattern, str(results.get(name)))]
    assert "is not divisible by the 4 devices" in out.stderr  # the CLI's usage error names it
    record("bad input: batch not divisible by the device count (4 simulated devices)", trials=len(expected),
           survived=len(expected) - len(failures), lost="nothing",
           detail="; ".join(f"{k}: {str(v)[:90]}" for k, v in results.items()),
           test="tests/reliability/test_bad_input.py")
    assert not failures, "\n".join(failures)
    # Nothing was trained or written by the refused runs.
    assert not any((tmp_path / mode / "checkpoints").exists() and any((tmp_path / mode / "checkpoints").iterdir())
                   for mode in ("jit", "shard_map", "pmap"))
