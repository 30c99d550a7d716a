"""Pure, stateless CNN operations (jit / grad / vmap safe).

Each op is its plain ``lax`` program on every platform, and this package imports jax and numpy
only. Faster CPU kernels are a separate, explicitly switched backend: :mod:`jaxcnn.backends.cpu`.
"""

from jaxcnn.functional.conv import PADDING_MODES, conv, conv_transpose, pad_spatial
from jaxcnn.functional.signal import convolve2d, correlate2d
from jaxcnn.functional.normalization import batch_norm, group_norm, layer_norm
from jaxcnn.functional.layers import dense, dropout, flatten
from jaxcnn.functional.activations import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from jaxcnn.functional.losses import (
    REDUCTIONS,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    dice_loss,
    mse,
    nll_loss,
)
from jaxcnn.functional.metrics import accuracy, confusion_matrix, iou, iou_from_confusion_matrix, mean_iou
from jaxcnn.functional.pooling import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    max_pool_with_indices,
    max_unpool,
    min_pool,
)
from jaxcnn.functional.resize import upsample
from jaxcnn.functional import init  # initialisers: F.init.kaiming_uniform(key, shape) ...
from jaxcnn.functional.boxes import (
    BBOX_XFORM_CLIP,
    BOX_FORMATS,
    anchors_for_feature_maps,
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    cell_anchors,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
    grid_anchors,
    nms,
    roi_align,
    roi_pool,
)

__all__ = [
    "PADDING_MODES",
    "conv",
    "conv_transpose",
    "pad_spatial",
    "convolve2d",
    "correlate2d",
    "batch_norm",
    "group_norm",
    "layer_norm",
    "dense",
    "dropout",
    "flatten",
    "gelu",
    "leaky_relu",
    "log_softmax",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
    "REDUCTIONS",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dice_loss",
    "mse",
    "nll_loss",
    "accuracy",
    "confusion_matrix",
    "iou",
    "iou_from_confusion_matrix",
    "mean_iou",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "global_avg_pool",
    "global_max_pool",
    "max_pool",
    "max_pool_with_indices",
    "max_unpool",
    "min_pool",
    "upsample",
    "init",
    "BBOX_XFORM_CLIP",
    "BOX_FORMATS",
    "anchors_for_feature_maps",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "cell_anchors",
    "clip_boxes_to_image",
    "decode_boxes",
    "encode_boxes",
    "generalized_box_iou",
    "grid_anchors",
    "nms",
    "roi_align",
    "roi_pool",
]
