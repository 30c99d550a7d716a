"""Training checkpoints on an orbax ``CheckpointManager``.

One checkpoint (``workdir/checkpoints/<step>/``) holds three items:

* ``state``: the :class:`TrainState` (params, batch stats, optimizer state, PRNG key, EMA),
  saved as global, unreplicated arrays, so it can be restored onto any number of devices;
* ``data``: the training data iterator's ``get_state()`` (JSON), so a resumed run reads the
  same batches the uninterrupted run would have;
* ``config``: the run's config (JSON), for the record.

Orbax writes each step into a temporary folder and renames it once complete, so a half-written
checkpoint (a crash during saving) is never listed nor restored; stale temporary folders are
deleted on the next start. Retention: the last ``keep`` checkpoints plus, when a
``best_metric`` is given, the best one by that metric.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxcnn.train.state import TrainState

PyTree = Any
BEST_MODES = ("max", "min")


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore` returns."""

    step: int
    state: TrainState
    data_state: dict[str, Any] | None
    config: dict[str, Any] | None


def abstract_like(tree: PyTree, sharding: jax.sharding.Sharding | None = None) -> PyTree:
    """``ShapeDtypeStruct`` leaves (with ``sharding`` if given): a restore target without memory."""

    def leaf(x):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


def _to_json(value: Any) -> Any:
    """A JSON-able copy (ConfigDicts, tuples and NumPy scalars included)."""
    if hasattr(value, "to_json_best_effort"):
        return json.loads(value.to_json_best_effort())
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


class Checkpointer:
    """Saves and restores training checkpoints in ``directory``.

    Args:
      directory: folder of the step sub-folders (created when missing).
      every_steps: :meth:`should_save` is true every that many steps (0: never, only forced saves).
      keep: number of most recent checkpoints kept (>= 1).
      best_metric: also keep the best checkpoint by ``metrics[best_metric]`` (given to :meth:`save`).
      best_mode: ``"max"`` or ``"min"`` for ``best_metric``.
      async_save: write in a background thread; training continues while files are written.
      read_only: only restore (never creates, cleans up or deletes anything in ``directory``).

    Example::

        ckpt = Checkpointer(workdir + "/checkpoints", every_steps=500, keep=3, best_metric="accuracy")
        ckpt.save(step, state, data_state=it.get_state(), config=config, metrics={"accuracy": 0.98})
        restored = ckpt.restore(target=state)       # latest; restored.state, restored.data_state
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every_steps: int = 0,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
        read_only: bool = False,
    ):
        op = "Checkpointer"
        if not isinstance(every_steps, int) or every_steps < 0:
            raise ValueError(f"{op}: checkpoint.every_steps must be an int >= 0, got {every_steps!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"{op}: checkpoint.keep must be an int >= 1, got {keep!r}")
        if best_mode not in BEST_MODES:
            raise ValueError(f"{op}: checkpoint.best_mode must be one of {BEST_MODES}, got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every_steps = every_steps
        self.best_metric = best_metric or None
        policies = [checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if self.best_metric:
            metric = self.best_metric
            # Checkpoints saved under another best_metric (a changed config) rank last.
            worst = float("-inf") if best_mode == "max" else float("inf")

            def best_fn(metrics: Mapping[str, float]) -> float:
                return float(metrics.get(metric, worst))

            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # best_fn alongside the policy makes orbax persist the metrics and answer best_step().
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
        )

    # -- queries -------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None``."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept checkpoint with the best ``best_metric`` (latest when there is no metric)."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return self.every_steps > 0 and step > 0 and step % self.every_steps == 0

    # -- saving --------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: TrainState,
        *,
        data_state: Mapping[str, Any] | None = None,
        config: Any = None,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Starts saving ``state`` (global arrays, no device axis) as checkpoint ``step``.

        Returns False when a checkpoint of that step already exists. With ``async_save`` the
        files are written in the background; :meth:`wait` blocks until they are complete.
        """
        step = int(step)
        if step in self._manager.all_steps():
            return False
        if self.best_metric and metrics is not None and self.best_metric not in metrics:
            raise ValueError(
                f"Checkpointer.save: metrics lack checkpoint.best_metric={self.best_metric!r}; "
                f"got {sorted(metrics)}"
            )
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(_to_json(dict(data_state)))
        if config is not None:
            items["config"] = ocp.args.JsonSave(_to_json(config))
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        if self.best_metric and metrics is None:
            # An empty record ranks last for "best" (and keeps orbax from warning on every save).
            metrics = {}
        # force: the decision to save is ours (every_steps, end of run, preemption).
        return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- restoring -----------------------------------------------------------------------------
    def restore(
        self,
        target: TrainState,
        step: int | None = None,
        *,
        sharding: jax.sharding.Sharding | None = None,
    ) -> Restored:
        """Restores checkpoint ``step`` (default: latest) into the structure of ``target``.

        Args:
          target: a state (or ``abstract_like`` of one) with the run's structure; only shapes
            and dtypes are used.
          step: which checkpoint; default the latest.
          sharding: where to put the arrays, e.g. ``NamedSharding(mesh, P())`` for a state
            replicated on this run's devices (any number of them); default the first device.

        Raises:
          FileNotFoundError: no checkpoint (or not that step) in the directory.
        """
        step = self._resolve_step(step)
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = abstract_like(target, sharding)
        args = {"state": ocp.args.StandardRestore(abstract)}
        step_dir = os.path.join(self.directory, str(step))
        present = [k for k in ("data", "config") if os.path.isdir(os.path.join(step_dir, k))]
        for name in present:
            args[name] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return Restored(
            step=step,
            state=restored["state"],
            data_state=restored["data"] if "data" in present else None,
            config=restored["config"] if "config" in present else None,
        )

    def restore_variables(self, step: int | None = None) -> dict[str, PyTree]:
        """``{"params", "batch_stats", "ema_params"}`` of a checkpoint as host NumPy arrays.

        Needs no target: the structure is read from the checkpoint, so the optimizer, the number
        of devices and the settings of the saving run do not matter. ``ema_params`` is ``None``
        when that run kept no EMA.
        """
        step = self._resolve_step(step)
        metadata = self._manager.item_metadata(step)["state"]
        tree = metadata.tree if hasattr(metadata, "tree") else metadata
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        # Orbax restores whole trees; the optimizer state costs a read of small files only.
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]

        def to_host(tree):
            return None if tree is None else jax.tree.map(np.asarray, tree)

        return {
            "params": to_host(restored["params"]),
            "batch_stats": to_host(restored.get("batch_stats") or {}),
            "ema_params": to_host(restored.get("ema_params")),
        }

    def restore_params(self, step: int | None = None) -> tuple[PyTree, PyTree]:
        """``(params, batch_stats)`` of a checkpoint, as host NumPy arrays (for fine-tuning)."""
        variables = self.restore_variables(step)
        return variables["params"], variables["batch_stats"]

    def _resolve_step(self, step: int | None) -> int:
        steps = self._manager.all_steps()
        if step is None:
            step = self._manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory}; have {sorted(steps)}")
        return int(step)


def drop_matching(tree: PyTree, patterns: tuple[str, ...]) -> dict:
    """A nested dict of ``tree``'s leaves whose ``/``-joined path matches none of the globs."""
    import fnmatch

    from jaxcnn.train.optimizers import param_path

    kept: dict = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = param_path(path)
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        node = kept
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = leaf
    return kept


def merge_matching(target: PyTree, source: PyTree) -> tuple[PyTree, list[str], list[str]]:
    """``target`` with every leaf replaced by ``source``'s leaf of the same path and shape.

    For fine-tuning: a new head (other ``num_classes``) keeps its fresh initialisation while the
    backbone takes the checkpoint's weights.

    Returns:
      ``(merged, taken, kept)``: the merged tree and the ``/``-joined paths taken from
      ``source`` and kept from ``target``.
    """
    from jaxcnn.train.optimizers import param_path

    flat_source = {param_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
    taken, kept = [], []

    def pick(path, leaf):
        name = param_path(path)
        other = flat_source.get(name)
        if other is not None and np.shape(other) == np.shape(leaf):
            taken.append(name)
            return jax.numpy.asarray(other, dtype=leaf.dtype)
        kept.append(name)
        return leaf

    merged = jax.tree_util.tree_map_with_path(pick, target)
    return merged, taken, kept


def load_params(directory: str | os.PathLike, step: int | None = None) -> tuple[PyTree, PyTree]:
    """``(params, batch_stats)`` from the checkpoints in ``directory`` (latest or ``step``).

    For fine-tuning: build a fresh state for the new task/optimizer, then replace the matching
    parts of its params with these.
    """
    with Checkpointer(directory, async_save=False, read_only=True) as checkpointer:
        return checkpointer.restore_params(step)
