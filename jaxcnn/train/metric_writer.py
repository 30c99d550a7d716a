"""Where training metrics go: ``metrics.jsonl``, ``timings.jsonl`` and TensorBoard events.

``metrics.jsonl`` holds only values that follow from the config and seed (step, epoch, split,
loss, accuracy, learning rate ...), one JSON object per line, so two runs with the same config
and seed write identical files. Wall-clock values (seconds, images/s) go to ``timings.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

METRICS_FILE = "metrics.jsonl"
TIMINGS_FILE = "timings.jsonl"


def _clean(value: Any) -> Any:
    value = float(value) if hasattr(value, "dtype") or isinstance(value, float) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep the line parseable.
    return value


def _append(path: str, text: str) -> None:
    """Appends a line; an OS error (disk full, read-only folder) names the file."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as err:
        raise type(err)(err.errno, f"MetricWriter: could not append to {path}: {err.strerror}") from err


def _step_of(line: str) -> float:
    """The step of a record line; a damaged line counts as after every step (it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``workdir/metrics.jsonl`` (``[]`` when there is none)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
    """Appends records to ``metrics.jsonl``/``timings.jsonl`` and TensorBoard (tensorboardX).

    Args:
      workdir: output folder.
      tensorboard: also write event files under ``workdir/tensorboard``.
      enabled: False on non-primary processes of a multi-host run (writes nothing).
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True, enabled: bool = True):
        self.workdir = os.fspath(workdir)
        self.enabled = enabled
        self._tb = None
        # Opened at the first write, so truncate_after cleans the event files of a killed run first.
        self._tb_dir = os.path.join(self.workdir, "tensorboard") if enabled and tensorboard else None

    @property
    def _events(self):
        if self._tb is None and self._tb_dir is not None:
            from tensorboardX import SummaryWriter  # Imported lazily: only needed when writing events.

            self._tb = SummaryWriter(self._tb_dir)
        return self._tb

    def truncate_after(self, step: int) -> None:
        """Drops records after ``step`` (a resumed run rewrites them, identically), TensorBoard
        events included (:mod:`jaxcnn.train.event_files`).

        A last line cut short by a killed process is dropped too. The file is replaced
        atomically, so a kill during the truncation loses nothing.
        """
        if not self.enabled:
            return
        for name in (METRICS_FILE, TIMINGS_FILE):
            path = os.path.join(self.workdir, name)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                lines = [line for line in f if line.endswith("\n") and _step_of(line) <= step]
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.writelines(lines)
            os.replace(tmp, path)
        if self._tb_dir is not None and self._tb is None:
            from jaxcnn.train.event_files import truncate_events_after

            truncate_events_after(self._tb_dir, step)

    def write(self, step: int, split: str, metrics: Mapping[str, Any], *, epoch: float) -> dict[str, Any]:
        """One ``metrics.jsonl`` line ``{"step", "epoch", "split", **metrics}``; returns it."""
        record = {"step": int(step), "epoch": round(float(epoch), 4), "split": split}
        record.update({k: _clean(v) for k, v in sorted(metrics.items())})
        if self.enabled:
            _append(os.path.join(self.workdir, METRICS_FILE), json.dumps(record) + "\n")
            if self._events is not None:
                for name, value in metrics.items():
                    if isinstance(_clean(value), (int, float)):
                        self._events.add_scalar(f"{split}/{name}", float(value), int(step))
        return record

    def write_timing(self, step: int, timings: Mapping[str, Any]) -> None:
        """One ``timings.jsonl`` line (wall-clock values, not reproducible)."""
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), **{k: _clean(v) for k, v in timings.items()}}) + "\n"
        _append(os.path.join(self.workdir, TIMINGS_FILE), line)
        if self._events is not None:
            for name, value in timings.items():
                self._events.add_scalar(f"timing/{name}", float(value), int(step))

    def flush(self) -> None:
        """Writes buffered TensorBoard events to disk."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer (the JSONL files are written line by line)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
