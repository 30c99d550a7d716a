"""Pure, stateless CNN operations (jit / grad / vmap safe)."""
from jaxcnn.functional.conv import PADDING_MODES, conv, conv_transpose, pad_spatial
