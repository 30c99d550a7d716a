"""Pictures to look at: image grids, filters, numbers on a grid, training curves, sliding windows.

Made for notebooks and for inspecting a model interactively. Every function draws with
matplotlib and returns the :class:`matplotlib.figure.Figure`. A function that takes ``ax``
draws into that axes; otherwise a new figure comes from ``matplotlib.pyplot``, so Jupyter
shows it inline. Nothing here selects or changes the matplotlib backend (importing this
module does not even import matplotlib).

Example::

    from jaxcnn import plotting
    plotting.show_images(batch["image"][:16], titles=[str(l) for l in batch["label"][:16]])
    plotting.show_filters(variables["params"]["conv1"]["kernel"])      # (kh, kw, C_in, C_out)
    plotting.show_matrix(np.arange(9).reshape(3, 3), highlight=(0, 0, 2, 2))
    plotting.plot_history(jaxcnn.train.read_metrics(workdir), ["loss", "accuracy"])
    plotting.show_conv_window(7, 3, stride=2, padding=1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxcnn import shapes

__all__ = ["conv_window_taps", "plot_history", "show_conv_window", "show_filters", "show_images", "show_matrix"]

# Colours of the sliding-window picture: the taps of the chosen output, of its right neighbour.
_TAP_COLOUR = "tab:orange"
_NEXT_COLOUR = "tab:blue"


def _pyplot():
    import matplotlib.pyplot as plt  # The caller's backend (inline in Jupyter), never set here.

    return plt


def _as_image(value: Any, index: int, op: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)`` NumPy array; ``(H, W, 1)`` is squeezed."""
    image = np.asarray(value)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(
            f"{op}: image {index} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}"
        )
    if image.size == 0:
        raise ValueError(f"{op}: image {index} is empty (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
        raise TypeError(f"{op}: image {index} must be numeric, got dtype {image.dtype}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    if image.ndim == 3 and np.issubdtype(image.dtype, np.floating):
        image = np.clip(image, 0.0, 1.0)  # matplotlib's own rule for float RGB, without its warning
    return image


def _per_image(value: Any, n: int, name: str, op: str) -> list:
    """One value per image: a single value is repeated; a list must have ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{op}: {name} has {len(value)} entries for {n} images")
        return list(value)
    return [value] * n


def _grid(n: int, ncols: int, size: float, op: str):
    if isinstance(ncols, bool) or not isinstance(ncols, numbers.Integral) or ncols < 1:
        raise ValueError(f"{op}: ncols must be a positive int, got {ncols!r}")
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0:
        raise ValueError(f"{op}: size must be a positive number (inches per image), got {size!r}")
    cols = min(int(ncols), n)
    rows = math.ceil(n / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def show_images(
    images: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cmap: str | Sequence[str] = "gray",
    vmin: float | Sequence[float | None] | None = None,
    vmax: float | Sequence[float | None] | None = None,
    symmetric: bool | Sequence[bool] = False,
    colorbar: bool = False,
    size: float = 1.5,
    suptitle: str | None = None,
):
    """A grid of images, ``ncols`` per row, without axes ticks.

    Args:
      images: an array ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)`` (channels last, as
        the datasets give them), or a list of ``(H, W[, C])`` arrays of any sizes. Grayscale
        images use ``cmap``; RGB images are shown as colour (uint8 in ``[0, 255]``, floats
        clipped to ``[0, 1]``).
      titles: one title per image.
      ncols: images per row.
      cmap: a colormap name, or one per image (grayscale images only).
      vmin, vmax: colour range, one value or one per image; None: each image's min / max.
      symmetric: the colour range of each grayscale image is ``[-m, m]`` with
        ``m = max |image|``, so 0 is always the colormap's middle (signed filter responses;
        use a diverging map such as ``cmap="RdBu_r"``); one bool or one per image. Ignored
        where ``vmin``/``vmax`` is given.
      colorbar: a colour bar beside every grayscale image.
      size: inches per image.
      suptitle: a title above the grid.

    Returns:
      the figure.
    """
    op = "show_images"
    if isinstance(images, (list, tuple)):
        items = [_as_image(im, i, op) for i, im in enumerate(images)]
    else:
        array = np.asarray(images)
        if array.ndim not in (3, 4):
            raise ValueError(
                f"{op}: images must be (N, H, W), (N, H, W, C) or a list of images, got shape {array.shape}"
            )
        items = [_as_image(im, i, op) for i, im in enumerate(array)]
    n = len(items)
    if n == 0:
        raise ValueError(f"{op}: images is empty")
    titles = _per_image(titles, n, "titles", op)
    cmaps = _per_image(cmap, n, "cmap", op)
    vmins = _per_image(vmin, n, "vmin", op)
    vmaxs = _per_image(vmax, n, "vmax", op)
    symmetrics = _per_image(symmetric, n, "symmetric", op)
    fig, axes = _grid(n, ncols, size, op)
    for ax, image, title, cm, lo, hi, sym in zip(axes, items, titles, cmaps, vmins, vmaxs, symmetrics):
        if image.ndim == 2:
            if sym and lo is None and hi is None:
                m = float(np.max(np.abs(image))) or 1.0
                lo, hi = -m, m
            shown = ax.imshow(image, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
            if colorbar:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if title is not None:
            ax.set_title(str(title), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_filters(
    kernel: Any,
    *,
    in_channel: int | None = None,
    layout: str = "NHWC",
    ncols: int = 8,
    size: float = 1.0,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
):
    """The filters of a 2D convolution kernel, one picture per output channel.

    Args:
      kernel: ``(kh, kw, C_in, C_out)`` for ``layout="NHWC"`` (jaxcnn's and Flax's layout),
        ``(C_out, C_in, kh, kw)`` for ``"NCHW"`` (PyTorch's), or a single ``(kh, kw)`` filter.
      in_channel: which input channel to show. None: the only one when ``C_in == 1``; all
        three as a colour picture when ``C_in == 3`` (each filter scaled to ``[0, 1]``, as in
        the classic pictures of first-layer filters); any other ``C_in`` needs a choice.
      layout, ncols, size, titles, suptitle: as the names say (see :func:`show_images`).

    Single-channel filters use a diverging colormap centred on 0: red weights add the pixel,
    blue ones subtract it.

    Returns:
      the figure.
    """
    op = "show_filters"
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 2:
        k = k[:, :, None, None]
    elif k.ndim == 4:
        if layout == "NCHW":
            k = np.transpose(k, (2, 3, 1, 0))
        elif layout != "NHWC":
            raise ValueError(f"{op}: layout must be 'NHWC' or 'NCHW', got {layout!r}")
    else:
        raise ValueError(
            f"{op}: kernel must be (kh, kw) or a 2D conv kernel (kh, kw, C_in, C_out), got shape {k.shape}"
        )
    c_in, c_out = k.shape[2], k.shape[3]
    if in_channel is None:
        if c_in == 3:
            lo = k.min(axis=(0, 1, 2), keepdims=True)
            span = k.max(axis=(0, 1, 2), keepdims=True) - lo
            rgb = (k - lo) / np.where(span > 0, span, 1.0)
            return show_images(
                [rgb[:, :, :, o] for o in range(c_out)], titles=titles, ncols=ncols, size=size, suptitle=suptitle
            )
        if c_in != 1:
            raise ValueError(
                f"{op}: the kernel has C_in={c_in} input channels; pass in_channel=0..{c_in - 1} to pick one"
            )
        in_channel = 0
    if isinstance(in_channel, bool) or not isinstance(in_channel, numbers.Integral) or not 0 <= in_channel < c_in:
        raise ValueError(f"{op}: in_channel must be an int in [0, {c_in}), got {in_channel!r}")
    filters = [k[:, :, in_channel, o] for o in range(c_out)]
    return show_images(
        filters, titles=titles, ncols=ncols, size=size, cmap="RdBu_r", symmetric=True, suptitle=suptitle
    )


def _format(values: np.ndarray, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if finite.size == 0 or np.all(np.equal(np.mod(finite, 1), 0)):
        return ".0f"
    return ".2f"


def show_matrix(
    values: Any,
    *,
    ax: Any = None,
    fmt: str | None = None,
    cmap: str = "Greys",
    vmin: float | None = None,
    vmax: float | None = None,
    highlight: Any = None,
    fontsize: float | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
):
    """A 2D array as a coloured grid with each number written in its cell.

    For small arrays you want to read: an image patch, a filter, a convolution worked by hand,
    a confusion matrix (rows: true class, columns: predicted; pass the class names as tick
    labels).

    Args:
      values: ``(rows, cols)``, or ``(rows, cols, 1)``.
      ax: the matplotlib axes to draw in; None for a new figure (about 0.45 inch per cell).
      fmt: a format spec for the numbers, e.g. ``".1f"``; None: ``".0f"`` when all values are
        whole numbers, else ``".2f"``. ``""`` writes no numbers.
      cmap, vmin, vmax: colours (None: the array's min / max).
      highlight: a rectangle ``(row, col, height, width)`` outlined in red, or a list of them
        (e.g. the window of a convolution step). Rectangles may reach outside the array.
      fontsize: of the numbers; None picks one that fits the cells.
      title, xlabel, ylabel: text around the grid.
      xticklabels, yticklabels: a label per column / row; None: no ticks.

    Returns:
      the figure.
    """
    op = "show_matrix"
    array = np.asarray(values)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{op}: values must be a non-empty 2D array (rows, cols), got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{op}: values must be numeric, got dtype {array.dtype}")
    rows, cols = array.shape
    if ax is None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(1.5, 0.45 * cols + 0.8), max(1.5, 0.45 * rows + 0.6)))
    else:
        fig = ax.figure
    import matplotlib.colors
    import matplotlib.patches

    shown = array.astype(np.float64)
    lo = float(np.nanmin(shown)) if vmin is None else float(vmin)
    hi = float(np.nanmax(shown)) if vmax is None else float(vmax)
    if hi == lo:
        hi = lo + 1.0
    ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    spec = _format(array, fmt)
    if spec != "":
        colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
        norm = matplotlib.colors.Normalize(lo, hi)
        size = fontsize or max(4.0, min(11.0, 90.0 / max(rows, cols)))
        for r in range(rows):
            for c in range(cols):
                v = array[r, c]
                red, green, blue, _ = colormap(norm(float(v)))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, format(v, spec), ha="center", va="center", fontsize=size,
                        color="white" if dark else "black")
    if highlight is not None:
        boxes = [highlight] if np.ndim(highlight) == 1 else list(highlight)
        for box in boxes:
            if len(box) != 4:
                raise ValueError(f"{op}: highlight must be (row, col, height, width) or a list of them, got {box!r}")
            r, c, h, w = (float(b) for b in box)
            ax.add_patch(matplotlib.patches.Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="red",
                                                      linewidth=2.5, clip_on=False))
    ax.set_xticks(range(cols), list(xticklabels) if xticklabels is not None else [""] * cols)
    ax.set_yticks(range(rows), list(yticklabels) if yticklabels is not None else [""] * rows)
    if xticklabels is None and yticklabels is None:
        ax.tick_params(length=0)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return fig


_NOT_METRICS = ("step", "epoch", "split", "finite")


def plot_history(
    records: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    *,
    size: tuple[float, float] = (4.5, 3.2),
):
    """Training curves: one panel per metric against the step, one line per split.

    Args:
      records: dicts with ``"step"``, ``"split"`` (``"train"``, ``"test"``...) and metric
        values -- the records of :func:`jaxcnn.train.read_metrics`, or ones a hand-written loop
        collects, e.g. ``{"step": 10, "split": "train", "loss": 0.3}``.
      metrics: the metrics to draw, e.g. ``["loss", "accuracy"]``; None: every numeric field
        but ``step``, ``epoch``, ``split`` and ``finite``.
      size: inches per panel.

    Returns:
      the figure.
    """
    op = "plot_history"
    records = list(records)
    if not records:
        raise ValueError(f"{op}: records is empty")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or "step" not in r or "split" not in r:
            raise ValueError(f"{op}: records[{i}] must be a dict with 'step' and 'split', got {r!r}")
    present = sorted({k for r in records for k, v in r.items()
                      if k not in _NOT_METRICS and isinstance(v, numbers.Real) and not isinstance(v, bool)})
    if metrics is None:
        metrics = present
    elif isinstance(metrics, str):
        raise TypeError(f"{op}: metrics must be a list of names, got the string {metrics!r}")
    missing = [m for m in metrics if m not in present]
    if missing:
        raise ValueError(f"{op}: no record has {missing}; the records have {present}")
    if not metrics:
        raise ValueError(f"{op}: the records hold no numeric metric")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(size[0] * len(metrics), size[1]), squeeze=False)
    splits = list(dict.fromkeys(r["split"] for r in records))
    for ax, name in zip(axes[0], metrics):
        for split in splits:
            points = sorted((r["step"], r[name]) for r in records if r["split"] == split and name in r)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=split)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def _pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum
                              for v in items):
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def conv_window_taps(
    in_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    output_index: tuple[int, int] = (0, 0),
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> list[tuple[int, int]]:
    """Input pixels ``(row, col)`` that output ``output_index`` of a 2D convolution reads.

    Coordinates are in the unpadded input: negative or ``>= in_size`` means padding. Output
    ``(i, j)`` reads rows ``i * stride - padding + a * dilation`` for ``a < kernel`` (and the same
    for columns), in row-major order of the kernel taps.
    """
    op = "conv_window_taps"
    height, width = _pair(in_size, "in_size", op, 1)
    kh, kw = _pair(kernel, "kernel", op, 1)
    sh, sw = _pair(stride, "stride", op, 1)
    ph, pw = _pair(padding, "padding", op, 0)
    dh, dw = _pair(dilation, "dilation", op, 1)
    out_h, out_w = shapes.conv_output_size((height, width), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    i, j = _pair(output_index, "output_index", op, 0)
    if i >= out_h or j >= out_w:
        raise ValueError(f"{op}: output_index={(i, j)} is outside the {out_h}x{out_w} output")
    return [(i * sh - ph + a * dh, j * sw - pw + b * dw) for a in range(kh) for b in range(kw)]


def show_conv_window(
    in_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    output_index: tuple[int, int] = (0, 0),
    ax: Any = None,
):
    """Where a 2D convolution's window lands: the padded input grid with the taps of one output.

    Grey cells are the input, white dashed cells the padding. Orange cells are the kernel taps
    of output ``output_index``; blue outlines those of its right-hand neighbour (so the
    distance between them is the stride, the gaps inside a window the dilation). The title
    gives the output size from :func:`jaxcnn.shapes.conv_output_size`.

    Args:
      in_size, kernel, stride, padding, dilation: an int (both axes) or a ``(rows, cols)``
        pair; ``padding`` is symmetric (the same number of pixels on both sides of an axis).
      output_index: the output ``(row, col)`` to show.
      ax: the axes to draw in; None for a new figure.

    Returns:
      the figure.
    """
    op = "show_conv_window"
    height, width = _pair(in_size, "in_size", op, 1)
    ph, pw = _pair(padding, "padding", op, 0)
    geometry = {"stride": stride, "padding": padding, "dilation": dilation}
    taps = conv_window_taps(in_size, kernel, output_index, **geometry)
    out_h, out_w = shapes.conv_output_size(
        (height, width), _pair(kernel, "kernel", op, 1), _pair(stride, "stride", op, 1), (ph, pw),
        _pair(dilation, "dilation", op, 1),
    )
    i, j = _pair(output_index, "output_index", op, 0)
    neighbour = conv_window_taps(in_size, kernel, (i, j + 1), **geometry) if j + 1 < out_w else []

    import matplotlib.patches

    if ax is None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(0.4 * (width + 2 * pw) + 1.0, 0.4 * (height + 2 * ph) + 1.0))
    else:
        fig = ax.figure
    for r in range(-ph, height + ph):
        for c in range(-pw, width + pw):
            inside = 0 <= r < height and 0 <= c < width
            ax.add_patch(matplotlib.patches.Rectangle(
                (c, r), 1, 1, facecolor="0.85" if inside else "white", edgecolor="0.5",
                linestyle="-" if inside else "--", linewidth=0.8))
    for r, c in taps:
        ax.add_patch(matplotlib.patches.Rectangle((c, r), 1, 1, facecolor=_TAP_COLOUR, edgecolor="0.3",
                                                  linewidth=0.8, alpha=0.9))
    for r, c in neighbour:
        ax.add_patch(matplotlib.patches.Rectangle((c + 0.1, r + 0.1), 0.8, 0.8, fill=False,
                                                  edgecolor=_NEXT_COLOUR, linewidth=2.0))
    ax.set_xlim(-pw - 0.2, width + pw + 0.2)
    ax.set_ylim(height + ph + 0.2, -ph - 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    k = _pair(kernel, "kernel", op, 1)
    fmt = lambda p: str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"  # noqa: E731
    ax.set_title(
        f"in {height}x{width}, kernel {fmt(k)}, stride {fmt(_pair(stride, 'stride', op, 1))}, "
        f"pad {fmt((ph, pw))}, dilation {fmt(_pair(dilation, 'dilation', op, 1))}\n-> out {out_h}x{out_w}",
        fontsize=9,
    )
    return fig
