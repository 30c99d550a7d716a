"""The train metrics of one log interval, kept on the device until the loop asks for them.

A training step returns its metrics as device scalars; copying them to the host after every
step would make the host wait for the device each step. :class:`MetricWindow` keeps the
steps' device arrays and fetches all of them with one ``jax.device_get`` when the loop logs,
evaluates or checkpoints; the host then sums them in float64, in step order, so the logged
means do not depend on when the fetches happened (a resumed run logs the same numbers).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax


class MetricWindow:
    """Per-step metrics (``{name: ()}`` device arrays, ``"finite"`` among them) of one interval.

    Args:
      saved: :meth:`state` of a checkpointed window (host sums and ``"count"``), to resume it.
    """

    def __init__(self, saved: Mapping[str, float] | None = None):
        self._sums: dict[str, float] = {k: float(v) for k, v in (saved or {}).items()}
        self._pending: list[tuple[int, Mapping[str, jax.Array]]] = []

    def add(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        """Keeps the metrics of ``step`` (1-based) on the device; no transfer."""
        self._pending.append((step, metrics))

    def fetch(self) -> tuple[int, dict[str, float]] | None:
        """One host transfer of every pending step; adds the finite ones to the sums.

        Returns ``(step, metrics)`` of the first step whose ``finite`` metric is 0 (its update
        was discarded in the step; the caller stops), else ``None``.
        """
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        fetched = jax.device_get([metrics for _, metrics in pending])
        for (step, _), metrics in zip(pending, fetched):
            metrics = {name: float(value) for name, value in metrics.items()}
            if metrics.get("finite", 1.0) < 1.0:
                return step, metrics
            for name, value in metrics.items():
                if name != "finite":
                    self._sums[name] = self._sums.get(name, 0.0) + value
            self._sums["count"] = self._sums.get("count", 0.0) + 1.0
        return None

    def take(self) -> dict[str, float]:
        """The means over the interval (fetch first) and a fresh interval."""
        if self._pending:
            raise RuntimeError("MetricWindow.take: fetch the pending steps first")
        sums, self._sums = self._sums, {}
        count = sums.pop("count", 0.0)
        return {name: value / count for name, value in sums.items()} if count else {}

    def state(self) -> dict[str, float]:
        """The host sums (with ``"count"``) of a partial interval, for a checkpoint (fetch first)."""
        if self._pending:
            raise RuntimeError("MetricWindow.state: fetch the pending steps first")
        return dict(self._sums)
