"""Pure, stateless CNN operations (jit / grad / vmap safe)."""
from jaxcnn.functional.conv import PADDING_MODES, conv, conv_transpose, pad_spatial
from jaxcnn.functional.signal import convolve2d, correlate2d
