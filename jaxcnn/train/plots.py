"""PNG plots of a run: loss/accuracy curves from ``metrics.jsonl`` and a confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # Files only; never needs a display.
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | os.PathLike) -> str:
    """Lays out ``fig``, writes it to ``path`` (creating the folder) and closes it."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.fspath(path)


def plot_curves(records: Sequence[Mapping[str, Any]], directory: str | os.PathLike) -> list[str]:
    """One PNG per metric (``loss.png``, ``accuracy.png`` ...), train and eval splits overlaid.

    Args:
      records: ``metrics.jsonl`` records (``step``, ``split`` and metric values).
      directory: output folder (created).

    Returns:
      the written paths.
    """
    os.makedirs(directory, exist_ok=True)
    plt = _pyplot()
    skip = {"step", "epoch", "split", "finite"}
    names = sorted(
        {k for r in records for k, v in r.items() if k not in skip and isinstance(v, (int, float))}
    )
    paths = []
    for name in names:
        fig, ax = plt.subplots(figsize=(6, 4))
        for split in sorted({r["split"] for r in records}):
            points = [
                (r["step"], r[name])
                for r in records
                if r["split"] == split and isinstance(r.get(name), (int, float))
            ]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(plt, fig, os.path.join(directory, f"{name}.png")))
    return paths


def plot_confusion_matrix(
    matrix: np.ndarray, path: str | os.PathLike, *, class_names: Sequence[str] | None = None, title: str = ""
) -> str:
    """Saves ``matrix`` ``(K, K)`` (rows: true class, columns: predicted) as a PNG heat map."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"plot_confusion_matrix: matrix must be (K, K), got shape {matrix.shape}")
    k = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    plt = _pyplot()
    size = min(max(4.0, 0.5 * k + 2), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        limit = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > limit else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return _save(plt, fig, path)


def plot_segmentation_examples(
    images: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    path: str | os.PathLike,
    *,
    num_classes: int,
    title: str = "",
) -> str:
    """Saves one row per example: the image, the true mask and the predicted mask.

    ``images`` ``(N, H, W)`` or ``(N, H, W, C)``; ``truth`` and ``predicted`` ``(N, H, W)`` class
    ids in ``[0, num_classes)`` (drawn with one fixed colour per class, so the two masks compare).
    """
    images, truth, predicted = np.asarray(images), np.asarray(truth), np.asarray(predicted)
    if truth.ndim != 3 or predicted.shape != truth.shape or images.shape[:3] != truth.shape:
        raise ValueError(
            "plot_segmentation_examples: images (N, H, W[, C]), truth and predicted (N, H, W) must agree, got "
            f"shapes {images.shape}, {truth.shape}, {predicted.shape}"
        )
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n = truth.shape[0]
    plt = _pyplot()
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    cmap = plt.get_cmap("tab20", max(num_classes, 2))
    for i in range(n):
        columns = (
            (images[i], "image", {"cmap": "gray"}),
            (truth[i], "true mask", {"cmap": cmap, "vmin": 0, "vmax": num_classes - 1, "interpolation": "nearest"}),
            (predicted[i], "predicted", {"cmap": cmap, "vmin": 0, "vmax": num_classes - 1, "interpolation": "nearest"}),
        )
        for ax, (picture, name, style) in zip(axes[i], columns):
            ax.imshow(picture, **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)
