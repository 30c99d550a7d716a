"""Datasets derived from digit images: segmentation, detection and rotation regression.

All are random-access sources built on a digits source (e.g. ``load("mnist", "train")``):
example ``i`` is a pure function of ``(seed, digits split, i)``, so they are deterministic,
need no storage, and work with :class:`jaxcnn.data.BatchLoader` like any other source. A
train split only ever uses train digits (the digits source decides).

Canvases (:class:`SegmentationCanvases`, :class:`DetectionCanvases`, same images for the same
arguments): ``num_digits`` digits pasted at uniform random positions on a black
``canvas_size x canvas_size`` canvas; digits may overlap. The image is the pixel-wise maximum of
the pasted digits. A pixel belongs to a digit when that digit's value there is above
``threshold``; where several digits are, it belongs to the brightest one (the one visible in
the maximum), ties to the digit pasted last. So ``label > 0`` exactly where ``image > threshold``.

Two options make harder canvases (both off by default, leaving the layouts above unchanged):
``min_digits``/``max_digits`` draw the number of digits per canvas uniformly in that range
(detection outputs stay ``max_digits`` long, padded, with a ``box_valid`` mask), and
``digit_scale=(lo, hi)`` resizes each digit by a factor drawn log-uniformly in ``[lo, hi]``
(bilinear, half-pixel centres), e.g. ``canvas_size=96, digit_scale=(0.5, 2.0)`` for digits of
14 to 56 pixels, so that anchors of several sizes matter.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from jaxcnn.data._arguments import check_float, check_int
from jaxcnn.data.sources import DatasetInfo, Example, RandomAccessSource, check_index


def _split_salt(digits: Any) -> int:
    info = getattr(digits, "info", None)
    split = getattr(info, "split", "") or ""
    return zlib.crc32(split.encode())


def _rng(seed: int, salt: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, salt, index])))


def _digit(digits: Any, index: int) -> tuple[np.ndarray, int]:
    example = digits[index]
    image = np.asarray(example["image"])
    if image.ndim == 3:
        image = image[..., 0]
    return image, int(example["label"])


def _resize_bilinear(patch: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 ``(h, w)`` -> uint8 ``(out_h, out_w)``, bilinear with half-pixel centres (no antialias)."""

    def weights(size: int, out: int) -> np.ndarray:
        src = np.clip((np.arange(out) + 0.5) * (size / out) - 0.5, 0.0, size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, size - 1)
        frac = src - low
        matrix = np.zeros((out, size))
        np.add.at(matrix, (np.arange(out), low), 1.0 - frac)
        np.add.at(matrix, (np.arange(out), high), frac)
        return matrix

    h, w = patch.shape
    resized = weights(h, out_h) @ patch.astype(np.float64) @ weights(w, out_w).T
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def _check_digits(digits: Any, fn: str) -> tuple[int, int]:
    if not hasattr(digits, "__len__") or len(digits) == 0:
        raise ValueError(f"{fn}: digits must be a non-empty source of {{'image', 'label'}} examples")
    image = np.asarray(digits[0]["image"])
    if image.ndim == 3 and image.shape[-1] != 1 or image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"{fn}: digits must have uint8 grayscale images (H, W) or (H, W, 1), got {image.dtype} {image.shape}"
        )
    return image.shape[0], image.shape[1]


class DigitCanvases(RandomAccessSource):
    """Base of the canvas datasets; :meth:`canvas` gives everything about canvas ``i``.

    Args:
      digits: source of ``{"image": uint8 (h, w, 1), "label": int}`` (MNIST-like).
      num_examples: number of canvases.
      canvas_size: side of the square canvas (>= the digit size).
      num_digits: digits per canvas (K), when ``min_digits``/``max_digits`` are not given.
      threshold: uint8 level above which a digit pixel counts as the digit.
      seed: seed of the layouts.
      min_digits, max_digits: give both for a number of digits drawn uniformly in
        ``[min_digits, max_digits]`` per canvas (``min_digits`` may be 0); then
        ``K = max_digits`` and ``num_digits`` is ignored.
      digit_scale: ``(lo, hi)``: each digit is resized by a factor drawn log-uniformly in
        that range (``round(factor * side)`` pixels); ``None`` keeps the digits' size.
    """

    def __init__(self, digits: Any, num_examples: int, *, canvas_size: int = 64, num_digits: int = 3,
                 threshold: int = 127, seed: int = 0, min_digits: int | None = None,
                 max_digits: int | None = None, digit_scale: tuple[float, float] | None = None):
        fn = type(self).__name__
        self.digit_shape = _check_digits(digits, fn)
        self.num_examples = check_int(num_examples, "num_examples", fn, minimum=1)
        self.canvas_size = check_int(canvas_size, "canvas_size", fn, minimum=1)
        if (min_digits is None) != (max_digits is None):
            raise ValueError(f"{fn}: give both min_digits and max_digits or neither, got {min_digits}, {max_digits}")
        if min_digits is None:
            self.num_digits = check_int(num_digits, "num_digits", fn, minimum=1)
            self.min_digits = self.max_digits = None
        else:
            self.min_digits = check_int(min_digits, "min_digits", fn, minimum=0)
            self.max_digits = check_int(max_digits, "max_digits", fn, minimum=max(self.min_digits, 1))
            self.num_digits = self.max_digits
        self.threshold = check_int(threshold, "threshold", fn, minimum=0)
        if self.threshold > 254:
            raise ValueError(f"{fn}: threshold must be in [0, 254] for uint8 digits, got {threshold}")
        self.seed = check_int(seed, "seed", fn, minimum=0)
        largest = max(self.digit_shape)
        if digit_scale is not None:
            if not isinstance(digit_scale, (tuple, list)) or len(digit_scale) != 2:
                raise ValueError(f"{fn}: digit_scale must be a pair (lo, hi), got {digit_scale!r}")
            lo = check_float(digit_scale[0], "digit_scale[0]", fn, minimum=1e-3)
            hi = check_float(digit_scale[1], "digit_scale[1]", fn, minimum=lo)
            digit_scale = (lo, hi)
            largest = max(round(hi * side) for side in self.digit_shape)
        self.digit_scale = digit_scale
        if self.canvas_size < largest:
            raise ValueError(
                f"{fn}: canvas_size={canvas_size} is smaller than the digits (largest {largest} px: digits "
                f"{self.digit_shape}, digit_scale={digit_scale})"
            )
        self.digits = digits
        self._salt = _split_salt(digits)
        self.base_info = getattr(digits, "info", None)

    def __len__(self) -> int:
        return self.num_examples

    def _info(self, name: str, num_classes: int | None, class_names, spec) -> DatasetInfo:
        base = self.base_info
        return DatasetInfo(
            name=f"{getattr(base, 'name', 'digits')}_{name}", split=getattr(base, "split", "train"),
            num_examples=self.num_examples, image_shape=(self.canvas_size, self.canvas_size, 1),
            num_classes=num_classes, class_names=class_names, source="derived",
            location=getattr(base, "location", None), element_spec=spec,
        )

    def canvas(self, index: int) -> dict[str, np.ndarray]:
        """Canvas ``index``: ``image`` uint8 (S, S, 1), ``label`` int32 (S, S) (0 background,
        1 + digit), ``boxes`` float32 (K, 4) ``(x0, y0, x1, y1)`` tight around each digit's pixels
        above threshold (x1, y1 exclusive; the whole patch if none), ``classes`` int32 (K,),
        ``box_valid`` bool (K,) (rows past the canvas's digits are padding: boxes 0, classes -1),
        and for the ``n`` pasted digits ``digit_indices`` int64 (n,) into ``digits``,
        ``positions`` int64 (n, 2) top-left ``(row, col)``, ``sizes`` int64 (n, 2) ``(h, w)``."""
        index = check_index(index, self.num_examples, type(self).__name__)
        rng = _rng(self.seed, self._salt, index)
        h, w = self.digit_shape
        size, k = self.canvas_size, self.num_digits
        # The extra draws come only with the options, so default canvases keep their layouts.
        n = k if self.min_digits is None else int(rng.integers(self.min_digits, self.max_digits + 1))
        digit_indices = rng.integers(0, len(self.digits), size=n)
        if self.digit_scale is None:
            sizes = np.tile(np.array([[h, w]], np.int64), (n, 1))
        else:
            lo, hi = self.digit_scale
            factors = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
            sizes = np.maximum(np.round(factors[:, None] * np.array([[h, w]])), 1).astype(np.int64)
        if self.digit_scale is None:
            positions = np.stack([rng.integers(0, size - h + 1, size=n), rng.integers(0, size - w + 1, size=n)],
                                 axis=1)
        else:
            positions = np.stack([rng.integers(0, size - sizes[:, 0] + 1), rng.integers(0, size - sizes[:, 1] + 1)],
                                 axis=1).astype(np.int64)
        image = np.zeros((size, size), np.uint8)
        owner = np.full((size, size), -1, np.int64)
        boxes = np.zeros((k, 4), np.float32)
        classes = np.full((k,), -1, np.int32)
        for j, (di, (r, c), (ph, pw)) in enumerate(zip(digit_indices, positions, sizes)):
            patch, cls = _digit(self.digits, int(di))
            if (ph, pw) != patch.shape:
                patch = _resize_bilinear(patch, int(ph), int(pw))
            classes[j] = cls
            region = image[r : r + ph, c : c + pw]
            # Ownership: above threshold and at least as bright as what is already there.
            owns = (patch > self.threshold) & (patch >= region)
            owner[r : r + ph, c : c + pw][owns] = j
            np.maximum(region, patch, out=region)
            ys, xs = np.nonzero(patch > self.threshold)
            if ys.size:
                boxes[j] = (c + xs.min(), r + ys.min(), c + xs.max() + 1, r + ys.max() + 1)
            else:
                boxes[j] = (c, r, c + pw, r + ph)
        label = np.where(owner >= 0, 1 + classes[np.maximum(owner, 0)], 0).astype(np.int32)
        return {"image": image[..., None], "label": label, "boxes": boxes, "classes": classes,
                "box_valid": np.arange(k) < n, "digit_indices": digit_indices, "positions": positions,
                "sizes": sizes}


class SegmentationCanvases(DigitCanvases):
    """``[i] -> {"image": uint8 (S, S, 1), "label": int32 (S, S)}``; label 0 is background, ``1 + d``
    marks pixels of digit ``d`` (11 classes). See the module docstring for the overlap rule.

    Example::

        seg = SegmentationCanvases(load("mnist", "train"), num_examples=10_000, seed=0)
    """

    def __init__(self, digits: Any, num_examples: int, *, canvas_size: int = 64, num_digits: int = 3,
                 threshold: int = 127, seed: int = 0, min_digits: int | None = None,
                 max_digits: int | None = None, digit_scale: tuple[float, float] | None = None):
        super().__init__(digits, num_examples, canvas_size=canvas_size, num_digits=num_digits,
                         threshold=threshold, seed=seed, min_digits=min_digits, max_digits=max_digits,
                         digit_scale=digit_scale)
        s = self.canvas_size
        self.info = self._info("segmentation", 11, ("background", *(str(d) for d in range(10))),
                               {"image": ((s, s, 1), "uint8"), "label": ((s, s), "int32")})

    def __getitem__(self, index: int) -> Example:
        canvas = self.canvas(index)
        return {"image": canvas["image"], "label": canvas["label"]}


class DetectionCanvases(DigitCanvases):
    """``[i] -> {"image": uint8 (S, S, 1), "boxes": float32 (K, 4), "classes": int32 (K,), "box_valid": bool (K,)}``.

    Same canvases as :class:`SegmentationCanvases` with the same arguments; one box
    ``(x0, y0, x1, y1)`` (pixels, x1/y1 exclusive) and class per digit, in pasting order.
    With ``min_digits``/``max_digits`` the rows past a canvas's digits are padding
    (``box_valid`` False, boxes 0, classes -1); otherwise ``box_valid`` is all True.

    Example::

        det = DetectionCanvases(load("mnist", "train"), 10_000, canvas_size=96, min_digits=1,
                                max_digits=5, digit_scale=(0.5, 2.0))
    """

    def __init__(self, digits: Any, num_examples: int, *, canvas_size: int = 64, num_digits: int = 3,
                 threshold: int = 127, seed: int = 0, min_digits: int | None = None,
                 max_digits: int | None = None, digit_scale: tuple[float, float] | None = None):
        super().__init__(digits, num_examples, canvas_size=canvas_size, num_digits=num_digits,
                         threshold=threshold, seed=seed, min_digits=min_digits, max_digits=max_digits,
                         digit_scale=digit_scale)
        s, k = self.canvas_size, self.num_digits
        self.info = self._info("detection", 10, tuple(str(d) for d in range(10)),
                               {"image": ((s, s, 1), "uint8"), "boxes": ((k, 4), "float32"),
                                "classes": ((k,), "int32"), "box_valid": ((k,), "bool")})

    def __getitem__(self, index: int) -> Example:
        canvas = self.canvas(index)
        return {"image": canvas["image"], "boxes": canvas["boxes"], "classes": canvas["classes"],
                "box_valid": canvas["box_valid"]}


def rotate_image(image: np.ndarray, angle: float, fill: float = 0.0) -> np.ndarray:
    """Rotates ``image`` (H, W) or (H, W, C) by ``angle`` degrees counter-clockwise (as displayed)
    about its centre, bilinear, ``fill`` outside; same convention as :func:`jaxcnn.data.augment.affine`.
    Integer images are rounded and clipped back to their dtype."""
    image = np.asarray(image)
    squeeze = image.ndim == 2
    x = image[..., None] if squeeze else image
    if x.ndim != 3:
        raise ValueError(f"rotate_image: image must have shape (H, W) or (H, W, C), got {image.shape}")
    h, w = x.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    theta = np.deg2rad(float(angle))
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    qy, qx = rows - cy, cols - cx
    py = np.sin(theta) * qx + np.cos(theta) * qy + cy
    px = np.cos(theta) * qx - np.sin(theta) * qy + cx
    y0, x0 = np.floor(py).astype(np.int64), np.floor(px).astype(np.int64)
    fy, fx = py - y0, px - x0
    src = x.astype(np.float64)
    out = np.zeros((h, w, x.shape[2]), np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            values = np.where(inside[..., None], src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], fill)
            out += (wy * wx)[..., None] * values
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    out = out.astype(image.dtype)
    return out[..., 0] if squeeze else out


class RotatedDigits(RandomAccessSource):
    """Rotation regression: ``[i] -> {"image": uint8 (H, W, 1), "label": float32 (), "digit": int32 ()}``.

    Example ``i`` is digit ``i % len(digits)`` rotated by ``label`` degrees (counter-clockwise,
    uniform in ``[-max_angle, max_angle]``, drawn from ``(seed, split, i)``). With
    ``num_examples = k * len(digits)`` every digit appears at ``k`` angles (more training data
    from the same digits); the first ``len(digits)`` examples do not depend on ``num_examples``.

    Example::

        rot = RotatedDigits(load("mnist", "train"), max_angle=45.0, seed=0)
        four_angles = RotatedDigits(load("mnist", "train"), 240_000)   # 4 angles per digit
    """

    def __init__(self, digits: Any, num_examples: int | None = None, *, max_angle: float = 45.0,
                 seed: int = 0):
        fn = "RotatedDigits"
        h, w = _check_digits(digits, fn)
        self.num_examples = len(digits) if num_examples is None else check_int(
            num_examples, "num_examples", fn, minimum=1)
        self.max_angle = check_float(max_angle, "max_angle", fn, minimum=0.0)
        if self.max_angle > 180:
            raise ValueError(f"{fn}: max_angle must be <= 180 degrees, got {max_angle}")
        self.seed = check_int(seed, "seed", fn, minimum=0)
        self.digits = digits
        self._salt = _split_salt(digits)
        base = getattr(digits, "info", None)
        self.info = DatasetInfo(
            name=f"{getattr(base, 'name', 'digits')}_rotation", split=getattr(base, "split", "train"),
            num_examples=self.num_examples, image_shape=(h, w, 1), num_classes=None, source="derived",
            location=getattr(base, "location", None),
            element_spec={"image": ((h, w, 1), "uint8"), "label": ((), "float32"), "digit": ((), "int32")},
        )

    def __len__(self) -> int:
        return self.num_examples

    def angle(self, index: int) -> float:
        """The rotation of example ``index`` in degrees."""
        index = check_index(index, len(self), "RotatedDigits")
        return float(_rng(self.seed, self._salt, index).uniform(-self.max_angle, self.max_angle))

    def __getitem__(self, index: int) -> Example:
        index = check_index(index, len(self), "RotatedDigits")
        angle = np.float32(self.angle(index))
        image, digit = _digit(self.digits, index % len(self.digits))
        rotated = rotate_image(image, float(angle))
        return {"image": rotated[..., None], "label": angle, "digit": np.int32(digit)}
