"""What a workdir says about the run that wrote it, and whether a new run may resume it.

The authority is the latest checkpoint itself: each one holds the config it was written with
(CRC-checked), so deleting or editing ``config.json`` cannot turn the resume check off.
``config.json`` is the human-readable copy; it is rewritten from the checkpoint when missing,
and a damaged one is reported by name.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from flax.traverse_util import flatten_dict

from jaxcnn.train.config import default_config

# Fields a resumed run may change: where files come from and how the run is shown or placed,
# never what a step computes (restoring onto another device count is supported).
RESUMABLE_CHANGES = (
    "progress_bar", "tensorboard", "plots", "parallel", "num_devices", "xla_options", "cpu_kernels", "checkpoint.async_save",
    "checkpoint.keep", "dataset.data_dir", "dataset.download", "dataset.source", "dataset.worker_count",
)


class WorkdirFileError(ValueError):
    """A file of a workdir (``config.json`` ...) is missing or unreadable; the message names it."""


def read_config_json(workdir: str | os.PathLike) -> dict[str, Any]:
    """``workdir/config.json`` as a dict; :class:`WorkdirFileError` naming the file when unreadable."""
    path = os.path.join(os.fspath(workdir), "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise WorkdirFileError(f"{path} does not exist; is {os.fspath(workdir)!r} a jaxcnn train workdir?") from None
    except (OSError, ValueError) as err:
        raise WorkdirFileError(
            f"{path} is unreadable ({type(err).__name__}: {err}); it is only a copy of the config saved in every "
            f"checkpoint: delete it and `jaxcnn train` with the same --workdir writes it again"
        ) from err
    if not isinstance(saved, dict):
        raise WorkdirFileError(f"{path} must hold a JSON object (the run's config), got {type(saved).__name__}")
    return saved


def checkpoint_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The config saved in ``workdir``'s latest checkpoint (``None``: no checkpoint, or none saved with it)."""
    from jaxcnn.train.checkpoint import Checkpointer

    folder = os.path.join(os.fspath(workdir), "checkpoints")
    if not os.path.isdir(folder) or not any(name.isdigit() for name in os.listdir(folder)):
        return None
    from jaxcnn.train.checkpoint import CorruptCheckpointError

    with Checkpointer(folder, read_only=True, async_save=False) as ckpt:
        # Newest first, as a resume restores: a damaged latest checkpoint is skipped there too.
        for step in reversed(ckpt.all_steps()):
            try:
                return ckpt.read_config(step)
            except (CorruptCheckpointError, FileNotFoundError):
                continue
    return None


def write_config_json(workdir: str | os.PathLike, config: Any) -> None:
    """Writes ``workdir/config.json`` atomically (a ConfigDict or a plain dict)."""
    path = os.path.join(os.fspath(workdir), "config.json")
    if isinstance(config, ml_collections.ConfigDict):
        text = config.to_json_best_effort(indent=2, sort_keys=True)
    else:
        text = json.dumps(config, indent=2, sort_keys=True)
    with open(f"{path}.tmp", "w") as f:
        f.write(text + "\n")
    os.replace(f"{path}.tmp", path)


def restore_config_json(workdir: str | os.PathLike) -> bool:
    """Rewrites a missing ``config.json`` from the latest checkpoint's config; True when it did."""
    path = os.path.join(os.fspath(workdir), "config.json")
    if os.path.exists(path):
        return False
    saved = checkpoint_config(workdir)
    if saved is None:
        return False
    write_config_json(workdir, saved)
    print(f"Rewrote {path} from the config saved in the latest checkpoint", flush=True)
    return True


def check_resume_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Raises ``ValueError`` when ``workdir`` holds checkpoints of a run whose config differs from
    ``config`` in a field other than :data:`RESUMABLE_CHANGES` (a resume would mix two runs).

    The saved config is the one in the latest checkpoint (``config.json`` when the checkpoints
    predate configs in checkpoints); the message lists each differing field with both values.
    A damaged ``config.json`` raises :class:`WorkdirFileError` naming it.
    """
    workdir = os.fspath(workdir)
    if os.path.isfile(os.path.join(workdir, "config.json")):
        read_config_json(workdir)  # a damaged copy is reported, by name, before anything else
    saved_config = checkpoint_config(workdir)
    if saved_config is None:
        checkpoints = os.path.join(workdir, "checkpoints")
        if not os.path.isdir(checkpoints) or not any(n.isdigit() for n in os.listdir(checkpoints)):
            return  # nothing to resume: the run starts afresh
        if not os.path.isfile(os.path.join(workdir, "config.json")):
            return
        saved_config = read_config_json(workdir)
    saved = flatten_dict(saved_config, sep=".")
    now = flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    # A field the saved config predates (or this one lacks) counts with its default value.
    defaults = flatten_dict(json.loads(default_config().to_json_best_effort()), sep=".")

    def value(fields: dict[str, Any], key: str) -> Any:
        found = fields.get(key, defaults.get(key, "(absent)"))
        return list(found) if isinstance(found, tuple) else found

    differ = sorted(k for k in set(saved) | set(now)
                    if value(saved, k) != value(now, k) and k not in RESUMABLE_CHANGES)
    if differ:
        details = ", ".join(f"{k}: {value(saved, k)!r} there, {value(now, k)!r} now" for k in differ)
        raise ValueError(
            f"workdir {workdir!r} holds checkpoints of a run with another config, so this run cannot resume "
            f"it ({details}). Rerun with that run's config (its config.json), or start a new --workdir "
            f"(config.init_from_checkpoint can take the params of this one)."
        )
