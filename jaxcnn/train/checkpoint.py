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

Integrity: each checkpoint also holds ``integrity`` (JSON): the path, shape, dtype and CRC-32
of every state array and the CRC-32 of the ``data`` and ``config`` items. A restore checks
them, so a flipped byte, a truncated or a deleted file is reported (:class:`CorruptCheckpointError`,
naming the step and the problem) instead of resuming from silently different values. Restoring
the latest checkpoint falls back to the newest earlier one that reads back intact, with a
warning; the unreadable newer ones are moved aside to ``<step>.corrupt`` so the run writes
them again. A failed write (disk full, read-only folder) raises :class:`CheckpointWriteError`
naming the step and the checkpoints still intact.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import sys
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxcnn.train.state import TrainState

PyTree = Any
BEST_MODES = ("max", "min")
RANKING_FILE = "ranking.json"
INTEGRITY_VERSION = 1
logger = logging.getLogger("jaxcnn.train")


class CorruptCheckpointError(ValueError):
    """A checkpoint does not read back as it was written; the message names the step and the problem."""


class CheckpointRemovedError(FileNotFoundError):
    """A checkpoint was deleted while being read (retention of a run still writing the folder)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder ...); earlier ones are intact."""


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore` returns.

    ``skipped``: ``(step, problem)`` of newer checkpoints that did not read back intact (a
    restore of the latest checkpoint then falls back to this older ``step``).
    """

    step: int
    state: TrainState
    data_state: dict[str, Any] | None
    config: dict[str, Any] | None
    skipped: tuple[tuple[int, str], ...] = ()


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


def _json_crc(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True).encode())


def _host_bytes(x: Any) -> np.ndarray | None:
    """The bytes of an array leaf as a flat uint8 host array (``None`` when not readable here)."""
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if not x.is_fully_addressable:
            if not x.is_fully_replicated:
                return None
            x = x.addressable_data(0)
    array = np.ascontiguousarray(np.asarray(x))
    return array.reshape(-1).view(np.uint8)


def _leaf_records(tree: PyTree, with_crc: bool) -> dict[str, list]:
    """``{key path: [shape, dtype, crc32 or None]}`` of the array leaves of ``tree``."""
    from jaxcnn.train.optimizers import param_path

    records = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        crc = None
        if with_crc:
            data = _host_bytes(leaf)
            crc = None if data is None else zlib.crc32(data)
        records[param_path(path)] = [list(np.shape(leaf)), str(leaf.dtype), crc]
    return records


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:limit]}"


@contextlib.contextmanager
def _quiet_failed_reads():
    """On a failed read, drops the tracebacks of the asyncio tasks orbax leaves behind.

    A damaged checkpoint fails many concurrent array reads; each abandoned task would print its
    own traceback (hundreds of lines) and bury the one-line warning that says what happened.
    """
    try:
        yield
    except Exception:
        hook, asyncio_logger = sys.unraisablehook, logging.getLogger("asyncio")
        level = asyncio_logger.level
        sys.unraisablehook = lambda unraisable: None
        asyncio_logger.setLevel(logging.CRITICAL)
        try:
            gc.collect()
        finally:
            sys.unraisablehook = hook
            asyncio_logger.setLevel(level)
        raise


class _DropReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Given directory is read only")


_READ_ONLY_NOTICE_FILTER = _DropReadOnlyNotice()


def _quiet_read_only_notice() -> None:
    """Drops orbax's warning that a read-only manager's folder is read only: reading is all we asked for."""
    absl_logger = logging.getLogger("absl")
    if _READ_ONLY_NOTICE_FILTER not in absl_logger.filters:
        absl_logger.addFilter(_READ_ONLY_NOTICE_FILTER)


def _errno_of(err: BaseException) -> int | None:
    """The OS error number of ``err`` or its causes (orbax wraps tensorstore's in ValueError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err.errno
        text = str(err)
        for code, needle in ((errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only file system"),
                             (errno.EACCES, "Permission denied"), (errno.EDQUOT, "quota exceeded")):
            if needle in text:
                return code
        err = err.__cause__ or err.__context__
    return None


class Checkpointer:
    """Saves and restores training checkpoints in ``directory``.

    Args:
      directory: folder of the step sub-folders (created when missing).
      every_steps: :meth:`Checkpointer.should_save` is true every that many steps (0: never, only forced saves).
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
        self.best_mode = best_mode
        self.read_only = read_only
        if read_only and not self.best_metric:
            # Rank as the writing run ranked: its best_metric/best_mode, recorded in the folder.
            ranking = read_ranking(self.directory)
            if ranking is not None:
                self.best_metric, best_mode = ranking["best_metric"], ranking["best_mode"]
                self.best_mode = best_mode
        self._pending: int | None = None  # step of an asynchronous save not yet waited for
        self._ranking_written = False
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
        if read_only:
            _quiet_read_only_notice()
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
        try:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={
                    "state": ocp.StandardCheckpointHandler(),
                    "data": ocp.JsonCheckpointHandler(),
                    "config": ocp.JsonCheckpointHandler(),
                    "integrity": ocp.JsonCheckpointHandler(),
                },
            )
        except OSError as err:
            raise CheckpointWriteError(
                err.errno, f"Checkpointer: cannot use the checkpoint folder {self.directory}: {err.strerror or err}"
            ) from err

    def _write_ranking(self) -> None:
        """``<directory>/ranking.json``: how the best checkpoint is chosen, for readers without the config."""
        if jax.process_index() != 0:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, RANKING_FILE)
            text = json.dumps({"best_metric": self.best_metric, "best_mode": self.best_mode}) + "\n"
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
            self._ranking_written = True
        except OSError as err:
            raise CheckpointWriteError(
                err.errno, f"Checkpointer: cannot write {os.path.join(self.directory, RANKING_FILE)}: "
                f"{err.strerror or err}"
            ) from err

    # -- queries -------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None``."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept checkpoint with the best ``best_metric`` (latest when there is no metric).

        A read-only reader without ``best_metric`` ranks by the metric and mode the writing run
        recorded in ``ranking.json``.
        """
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints in the folder, ascending."""
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Whether ``step`` is on the ``every_steps`` cadence (never step 0, never when it is 0)."""
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
        integrity = {"version": INTEGRITY_VERSION, "state": _leaf_records(state, with_crc=True)}
        if data_state is not None:
            data_json = _to_json(dict(data_state))
            items["data"] = ocp.args.JsonSave(data_json)
            integrity["data"] = _json_crc(data_json)
        if config is not None:
            config_json = _to_json(config)
            items["config"] = ocp.args.JsonSave(config_json)
            integrity["config"] = _json_crc(config_json)
        integrity["self"] = _json_crc(integrity)
        items["integrity"] = ocp.args.JsonSave(integrity)
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        if self.best_metric and metrics is None:
            # An empty record ranks last for "best" (and keeps orbax from warning on every save).
            metrics = {}
        # force: the decision to save is ours (every_steps, end of run, preemption).
        # The previous asynchronous save must be complete first (orbax would wait for it anyway);
        # waiting here attributes its failure to its own step.
        self.wait()
        if self.best_metric and not self._ranking_written:
            self._write_ranking()  # at the first save: a run that fails before it leaves no file
        try:
            saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        except Exception as err:
            raise self._write_error(step, err) from err
        self._pending = step
        return saved

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk.

        Raises:
          CheckpointWriteError: the pending save failed (disk full, folder not writable ...).
        """
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            failed, self._pending = self._pending, None
            raise self._write_error(failed, err) from err
        self._pending = None

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the checkpoint manager."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def _write_error(self, step: int | None, err: BaseException) -> CheckpointWriteError:
        """A :class:`CheckpointWriteError` naming the step, the cause and what is still intact."""
        try:
            self._manager.reload()
            intact = self.all_steps()
        except Exception:  # only for the message
            intact = sorted(
                int(d) for d in os.listdir(self.directory) if d.isdigit()
            ) if os.path.isdir(self.directory) else []
        code = _errno_of(err)
        reason = os.strerror(code) if code else _first_line(err)
        what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
        return CheckpointWriteError(
            code or errno.EIO,
            f"Checkpointer: could not write {what} to {self.directory}: {reason}. "
            f"Earlier checkpoints are intact: steps {intact}; the half-written one is never read (and is "
            f"deleted on the next start). "
            f"Free space or make the folder writable, then run the same command again to resume"
            + (f" from step {intact[-1]}." if intact else "."),
        )

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

        Every array is checked against the CRC-32 recorded when it was saved. Without ``step``,
        a latest checkpoint that does not read back intact is skipped with a warning naming its
        step and the problem, and the newest earlier one that does is restored (the skipped ones
        are listed in ``Restored.skipped`` and, unless ``read_only``, moved to ``<step>.corrupt``).

        Args:
          target: a state (or ``abstract_like`` of one) with the run's structure; only shapes
            and dtypes are used.
          step: which checkpoint; default the latest.
          sharding: where to put the arrays, e.g. ``NamedSharding(mesh, P())`` for a state
            replicated on this run's devices (any number of them); default the first device.

        Raises:
          FileNotFoundError: no checkpoint (or not that step) in the directory.
          CorruptCheckpointError: that step (or, without ``step``, every checkpoint) is corrupt.
          ValueError: the checkpoint holds a state of another structure (another model or optimizer).
        """
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = abstract_like(target, sharding)
        return self._with_fallback(step, lambda s: self._restore_step(s, abstract))

    def restore_variables(self, step: int | None = None) -> dict[str, PyTree]:
        """``{"params", "batch_stats", "ema_params"}`` of a checkpoint as host NumPy arrays.

        Needs no target: the structure is read from the checkpoint, so the optimizer, the number
        of devices and the settings of the saving run do not matter. ``ema_params`` is ``None``
        when that run kept no EMA. Checked and, without ``step``, falling back like :meth:`restore`.
        """
        restored = self._with_fallback(step, self._restore_variables_step)

        def to_host(tree):
            return None if tree is None else jax.tree.map(np.asarray, tree)

        variables = restored.state
        return {
            "params": to_host(variables["params"]),
            "batch_stats": to_host(variables.get("batch_stats") or {}),
            "ema_params": to_host(variables.get("ema_params")),
        }

    def restore_params(self, step: int | None = None) -> tuple[PyTree, PyTree]:
        """``(params, batch_stats)`` of a checkpoint, as host NumPy arrays (for fine-tuning)."""
        variables = self.restore_variables(step)
        return variables["params"], variables["batch_stats"]

    def read_config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config saved with checkpoint ``step`` (default: latest), checked against its CRC-32.

        ``None`` when that checkpoint holds no config (saved without one).
        """
        step = self._resolve_step(step)
        record = self._read_integrity(step)
        args = {k: v for k, v in self._json_args(step, record).items() if k == "config"}
        if not args:
            return None
        restored = self._restore_items(step, args)
        if record is not None and "config" in record and _json_crc(restored["config"]) != record["config"]:
            raise self._corrupt(step, "its 'config' item differs from what was saved (CRC-32 mismatch)")
        return dict(restored["config"])

    def verify(self, step: int | None = None) -> None:
        """Reads checkpoint ``step`` (default: latest) back and checks it against its record.

        Raises:
          CorruptCheckpointError: naming the step and the problem.
        """
        self._restore_variables_step(self._resolve_step(step))

    def _with_fallback(self, step: int | None, restore_step) -> Restored:
        if step is not None:
            return restore_step(self._resolve_step(step))
        self._resolve_step(None)  # FileNotFoundError when there is none
        skipped: list[tuple[int, str]] = []
        for candidate in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = restore_step(int(candidate))
            except CheckpointRemovedError:
                continue  # retention of the writing run removed it meanwhile: not a problem
            except CorruptCheckpointError as err:
                skipped.append((int(candidate), str(err)))
                logger.warning("%s; trying the previous checkpoint", err)
                continue
            if skipped and not self.read_only:
                self._move_aside([s for s, _ in skipped])
            return restored._replace(skipped=tuple(skipped))
        raise CorruptCheckpointError(
            f"Checkpointer: no checkpoint in {self.directory} reads back intact:\n"
            + "\n".join(f"  - {problem}" for _, problem in skipped)
            + "\nMove the folder away to start the run from scratch."
        )

    def _move_aside(self, steps: list[int]) -> None:
        """Renames unreadable step folders to ``<step>.corrupt`` (kept for inspection; never listed)."""
        if jax.process_index() == 0:
            for step in steps:
                source = os.path.join(self.directory, str(step))
                target, n = f"{source}.corrupt", 1
                while os.path.exists(target):
                    target, n = f"{source}.corrupt-{n}", n + 1
                try:
                    os.rename(source, target)
                    logger.warning("Moved the unreadable checkpoint of step %d to %s", step, target)
                except OSError as err:
                    logger.warning("Could not move the unreadable checkpoint %s aside: %s", source, err)
        if jax.process_count() > 1:
            from orbax.checkpoint import multihost

            multihost.sync_global_processes("jaxcnn_checkpoint_move_aside")
        self._manager.reload()

    def _removed(self, step: int) -> CheckpointRemovedError:
        return CheckpointRemovedError(
            f"the checkpoint of step {step} in {self.directory} was removed while being read (the run "
            f"writing this folder keeps only its last checkpoint.keep ones and the best); read another step"
        )

    def _check_present(self, step: int, err: BaseException | None = None) -> None:
        """Raises :class:`CheckpointRemovedError` when the step's folder no longer exists."""
        if not os.path.isdir(os.path.join(self.directory, str(step))):
            raise self._removed(step) from err

    def _corrupt(self, step: int, problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"checkpoint of step {step} in {self.directory} is corrupt: {problem}"
        )

    def _read_integrity(self, step: int) -> dict[str, Any] | None:
        """The step's integrity record, checked against its own CRC (``None``: written without one)."""
        step_dir = os.path.join(self.directory, str(step))
        self._check_present(step)
        if not os.path.isdir(os.path.join(step_dir, "integrity")):
            if not os.path.isdir(os.path.join(step_dir, "state")):
                raise self._corrupt(step, "its 'state' folder is missing")
            return None  # a checkpoint of an older jaxcnn: restored unverified
        try:
            record = self._manager.restore(step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore()))
            record = dict(record["integrity"])
            claimed = record.pop("self")
            if record.get("version") != INTEGRITY_VERSION or _json_crc(record) != claimed:
                raise ValueError("its CRC-32 does not match")
        except Exception as err:
            self._check_present(step, err)
            raise self._corrupt(step, f"its integrity record is unreadable ({_first_line(err)})") from err
        return record

    def _check_items(self, step: int, record: dict[str, Any] | None, restored: Mapping[str, Any]) -> None:
        """The restored state arrays and JSON items against the record's CRC-32s."""
        if record is None:
            return
        saved = record["state"]
        got = _leaf_records(restored["state"], with_crc=True)
        missing = sorted(set(saved) - set(got))
        if missing:
            raise self._corrupt(step, f"arrays {missing[:5]} of its integrity record were not restored")
        bad = [
            path for path, (shape, dtype, crc) in saved.items()
            if crc is not None and got[path][2] is not None
            and got[path][1] == dtype and got[path][2] != crc
        ]
        if bad:
            raise self._corrupt(
                step, f"{len(bad)} array(s) differ from what was saved (CRC-32 mismatch): {bad[:5]}"
            )
        for name in ("data", "config"):
            if name in record:
                if name not in restored:
                    raise self._corrupt(step, f"its '{name}' item is missing")
                if _json_crc(restored[name]) != record[name]:
                    raise self._corrupt(step, f"its '{name}' item differs from what was saved (CRC-32 mismatch)")

    def _check_structure(self, step: int, record: dict[str, Any] | None, abstract: PyTree) -> None:
        """A checkpoint of another state (other model/optimizer) is a usage error, not corruption."""
        if record is None:
            return
        saved = {path: (tuple(shape), dtype) for path, (shape, dtype, _) in record["state"].items()}
        wanted = {path: (tuple(shape), dtype) for path, (shape, dtype, _) in _leaf_records(abstract, False).items()}
        if set(saved) != set(wanted) or any(saved[p][0] != wanted[p][0] for p in saved):
            missing = sorted(set(wanted) - set(saved))[:5]
            extra = sorted(set(saved) - set(wanted))[:5]
            shapes = [f"{p}: saved {saved[p][0]}, wanted {wanted[p][0]}" for p in sorted(set(saved) & set(wanted))
                      if saved[p][0] != wanted[p][0]][:5]
            raise ValueError(
                f"Checkpointer.restore: the checkpoint of step {step} in {self.directory} holds a state of "
                f"another structure than this run's (another model, optimizer or EMA setting?): arrays "
                f"missing from it {missing}, extra in it {extra}, other shapes {shapes}"
            )

    def _restore_items(self, step: int, args: dict[str, Any]) -> Mapping[str, Any]:
        try:
            with _quiet_failed_reads():
                return self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as err:
            self._check_present(step, err)
            raise self._corrupt(step, f"it does not read back ({_first_line(err)})") from err

    def _json_args(self, step: int, record: dict[str, Any] | None) -> dict[str, Any]:
        step_dir = os.path.join(self.directory, str(step))
        names = [k for k in ("data", "config") if os.path.isdir(os.path.join(step_dir, k))]
        if record is not None:
            missing = [k for k in ("data", "config") if k in record and k not in names]
            if missing:
                raise self._corrupt(step, f"its {missing} item folder(s) are missing")
        return {name: ocp.args.JsonRestore() for name in names}

    def _restore_step(self, step: int, abstract: PyTree) -> Restored:
        record = self._read_integrity(step)
        self._check_structure(step, record, abstract)
        args = {"state": ocp.args.StandardRestore(abstract), **self._json_args(step, record)}
        restored = self._restore_items(step, args)
        self._check_items(step, record, restored)
        return Restored(
            step=step,
            state=restored["state"],
            data_state=restored["data"] if "data" in args else None,
            config=restored["config"] if "config" in args else None,
        )

    def _restore_variables_step(self, step: int) -> Restored:
        record = self._read_integrity(step)
        try:
            metadata = self._manager.item_metadata(step)["state"]
            tree = metadata.tree if hasattr(metadata, "tree") else metadata
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        except Exception as err:
            self._check_present(step, err)
            raise self._corrupt(step, f"its metadata does not read back ({_first_line(err)})") from err
        # Orbax restores whole trees; the optimizer state costs a read of small files only.
        restored = self._restore_items(step, {"state": ocp.args.StandardRestore(abstract)})
        if record is not None:
            self._check_items(step, {"state": record["state"]}, restored)
        return Restored(step=step, state=restored["state"], data_state=None, config=None)

    def _resolve_step(self, step: int | None) -> int:
        steps = self._manager.all_steps()
        if step is None:
            step = self._manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory}; have {sorted(steps)}")
        return int(step)


def read_ranking(directory: str | os.PathLike) -> dict[str, str] | None:
    """``{"best_metric", "best_mode"}`` recorded in a checkpoint folder by its writer (``None``: none)."""
    path = os.path.join(os.fspath(directory), RANKING_FILE)
    try:
        with open(path) as f:
            ranking = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{path} is unreadable ({_first_line(err)}); delete it to rank by the "
                                     f"latest step, or rerun the training to write it again") from err
    if not isinstance(ranking, dict) or not ranking.get("best_metric") or ranking.get("best_mode") not in BEST_MODES:
        raise CorruptCheckpointError(f"{path} does not hold a best_metric and a best_mode: {ranking!r}")
    return {"best_metric": str(ranking["best_metric"]), "best_mode": ranking["best_mode"]}


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
