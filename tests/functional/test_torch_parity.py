"""Argument spellings PyTorch accepts, accepted alike (found by running PyTorch's own sample inputs).

PyTorch's pooling and convolutions read a one-element tuple (``padding=(1,)``) as that int on
every spatial axis; ``output_size`` and ``interpolate(size=...)`` do not, and neither do we.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxcnn.functional as jf

RNG = np.random.default_rng(0)
X2 = RNG.standard_normal((2, 3, 7, 6)).astype(np.float32)
X3 = RNG.standard_normal((1, 2, 5, 4, 5)).astype(np.float32)
W2 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
W3 = RNG.standard_normal((2, 2, 3, 3, 3)).astype(np.float32)
WT2 = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)

# (name, ours, PyTorch's): every call spells at least one argument as a one-element tuple.
CASES = [
    ("avg_pool2d padding=(1,)",
     lambda: jf.avg_pool(X2, (3, 3), stride=(1, 1), padding=(1,), layout="NCHW"),
     lambda: F.avg_pool2d(torch.from_numpy(X2), (3, 3), stride=(1, 1), padding=(1,))),
    ("avg_pool2d all one-element",
     lambda: jf.avg_pool(X2, (3,), stride=(2,), padding=(1,), ceil_mode=True, layout="NCHW"),
     lambda: F.avg_pool2d(torch.from_numpy(X2), (3,), stride=(2,), padding=(1,), ceil_mode=True)),
    ("max_pool2d dilation=(2,)",
     lambda: jf.max_pool(X2, (3,), stride=(2,), padding=(1,), dilation=(2,), layout="NCHW"),
     lambda: F.max_pool2d(torch.from_numpy(X2), (3,), stride=(2,), padding=(1,), dilation=(2,))),
    ("avg_pool3d",
     lambda: jf.avg_pool(X3, (3,), stride=(1,), padding=(1,), layout="NCHW"),
     lambda: F.avg_pool3d(torch.from_numpy(X3), (3,), stride=(1,), padding=(1,))),
    ("conv2d stride/padding/dilation",
     lambda: jf.conv(X2, W2, stride=(1,), padding=(2,), dilation=(2,), layout="NCHW"),
     lambda: F.conv2d(torch.from_numpy(X2), torch.from_numpy(W2), stride=(1,), padding=(2,), dilation=(2,))),
    ("conv3d",
     lambda: jf.conv(X3, W3, stride=(2,), padding=(1,), layout="NCHW"),
     lambda: F.conv3d(torch.from_numpy(X3), torch.from_numpy(W3), stride=(2,), padding=(1,))),
    ("conv_transpose2d output_padding=(1,)",
     lambda: jf.conv_transpose(X2, WT2, stride=(2,), padding=(1,), output_padding=(1,), layout="NCHW"),
     lambda: F.conv_transpose2d(torch.from_numpy(X2), torch.from_numpy(WT2), stride=(2,), padding=(1,),
                                output_padding=(1,))),
]


@pytest.mark.parametrize("name, ours, theirs", CASES, ids=[c[0] for c in CASES])
def test_one_element_tuples_broadcast_like_torch(name, ours, theirs):
    expected = theirs().numpy()
    got = np.asarray(ours())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_sizes_are_not_broadcast_like_torch():
    with pytest.raises(RuntimeError):
        F.adaptive_avg_pool2d(torch.from_numpy(X2), (3,))
    with pytest.raises(ValueError, match=r"output_size=\(3,\) has 1 entries"):
        jf.adaptive_avg_pool(jnp.asarray(X2), (3,), layout="NCHW")
    with pytest.raises(ValueError, match=r"size=\(8,\) has 1 entries"):
        jf.upsample(jnp.asarray(X2), size=(8,), layout="NCHW")


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: jf.conv(np.zeros((8, 8, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32)),
         r"conv: x must have a batch axis: got \(8, 8, 3\), read as one example \(H, W, C\) \(layout NHWC\), "
         r"for the 2D kernel of shape \(3, 3, 3, 4\); expected \(N, H, W, C\), e.g. x\[None\]"),
        (lambda: jf.conv(np.zeros((3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32), layout="NCHW"),
         r"conv: x must have a batch axis: got \(3, 8, 8\), read as one example \(C, H, W\)"),
        (lambda: jf.conv(np.zeros((8, 3), np.float32), np.zeros((3, 3, 4), np.float32)),
         r"conv: x must have a batch axis: got \(8, 3\), read as one example \(W, C\)"),
        (lambda: jf.conv_transpose(np.zeros((4, 5, 5, 5, 2), np.float32)[0], np.zeros((3, 3, 3, 2, 1), np.float32)),
         r"conv_transpose: x must have a batch axis: got \(5, 5, 5, 2\), read as one example \(D, H, W, C\)"),
    ],
)
def test_single_image_without_batch_axis_is_named(call, expected):
    """PyTorch accepts an unbatched (C, H, W); jaxcnn asks for the batch axis, saying so."""
    with pytest.raises(ValueError, match=expected):
        call()
