"""Experiment launches: config files, command-line overrides and the run record.

A config file is a Python file with ``get_config(arg="")`` returning an
``ml_collections.ConfigDict`` (``path.py:smoke`` passes ``"smoke"`` as ``arg``, which every
shipped config uses to shrink itself to a seconds-long run). Overrides such as
``--config.optimizer.learning_rate=0.01`` are checked against the config: an unknown key
or a value of the wrong type raises :class:`ConfigError`, which the CLI turns into exit
code 2.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from jaxcnn.backends.cpu import host_memory
from jaxcnn.backends.cpu.options import compiler_options


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which and why."""


def load_config_module(path: str | os.PathLike) -> Any:
    """The Python module of a config file, loaded from its path (config files are not a package).

    A config can build on a sibling's shared settings this way::

        base = load_config_module(Path(__file__).with_name("mnist_det_faster_rcnn.py"))
    """
    file = Path(path)
    module_spec = importlib.util.spec_from_file_location(f"jaxcnn_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path.py`` or ``path.py:arg`` and returns ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    if file.suffix != ".py":
        raise ConfigError(f"config file {path!r} must be a .py file with a get_config() function")
    try:
        module = load_config_module(file)
    except Exception as err:  # the user's file: report any failure as a config error
        raise ConfigError(f"config file {path!r} failed to load: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config() function")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, got {type(config).__name__}")
    if arg:
        _check_config_arg(module, path, arg, config)
    return config


def _known_config_args(module: Any) -> list[str]:
    """The arguments ``module.get_config`` knows: its ``CONFIG_ARGS``, else the strings its code compares."""
    declared = getattr(module, "CONFIG_ARGS", None)
    if declared is not None:
        return list(declared)
    import inspect

    try:
        tree = ast.parse(inspect.getsource(module.get_config))
    except (OSError, TypeError, SyntaxError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
    return sorted(set(found) - {""})


def _check_config_arg(module: Any, path: str, arg: str, config: ml_collections.ConfigDict) -> None:
    """``path.py:arg`` with an argument the config does not know (``:smok``) is an error, not the full run.

    Known: listed in the module's ``CONFIG_ARGS``; without that list, an argument that is not
    ``get_config``'s default and changes nothing is taken for a typo.
    """
    import inspect

    known = _known_config_args(module)
    if getattr(module, "CONFIG_ARGS", None) is not None:
        if arg not in known:
            raise ConfigError(f"config argument {path}:{arg} is unknown; {path} takes {known}")
        return
    params = list(inspect.signature(module.get_config).parameters.values())
    default = params[0].default if params and params[0].default is not inspect.Parameter.empty else None
    if arg == default:
        return
    if config.to_json_best_effort(sort_keys=True) == module.get_config().to_json_best_effort(sort_keys=True):
        raise ConfigError(
            f"config argument {path}:{arg} changes nothing in the config, so it is not one {path} knows "
            f"(a typo?); known arguments: {known or 'none found'}"
        )


def _parse_value(key: str, text: str, current: Any) -> Any:
    """Converts ``text`` to the type of the field's current value."""
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"--config.{key} is a group of fields; set one of {sorted(current.keys())}")
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected a bool (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected an int") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected a float") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part for part in text.split(",") if part)
        if isinstance(value, (str, int, float)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"--config.{key}={text!r}: expected a sequence, e.g. 'a,b' or '(1, 2)'")
        return type(current)(value)
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ConfigError(f"--config.{key}: cannot set a field of type {type(current).__name__} from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``["--config.a.b=value", ...]`` (or ``"a.b=value"``) to ``config`` in place."""
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if not text.startswith("config.") or "=" not in text:
            raise ConfigError(f"override {item!r} must look like --config.field=value")
        key, _, raw = text[len("config.") :].partition("=")
        parent = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
                where = ".".join(parts[:depth]) or "config"
                known = sorted(parent.keys()) if isinstance(parent, ml_collections.ConfigDict) else []
                raise ConfigError(f"--config.{key}: unknown field {part!r} in {where}; known fields: {known}")
            if depth < len(parts) - 1:
                parent = parent[part]
        current = parent[parts[-1]]
        value = _parse_value(key, raw, current)
        with parent.ignore_type():
            parent[parts[-1]] = value
    return config


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The git commit of the jaxcnn source and whether its tree had uncommitted changes.

    Where the source is a copy without its git history (a tree sent to another machine),
    ``$JAXCNN_GIT_COMMIT`` names the commit it was copied from; whether it was clean is then unknown.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None and os.environ.get("JAXCNN_GIT_COMMIT"):
        return {"git_commit": os.environ["JAXCNN_GIT_COMMIT"], "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def environment() -> dict[str, Any]:
    """Library versions, Python, platform and the devices of this run."""
    import flax
    import jax
    import optax
    import orbax.checkpoint

    import jaxcnn

    devices = jax.devices()
    return {
        "jaxcnn": jaxcnn.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax_checkpoint": orbax.checkpoint.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "cpu_count": os.cpu_count(),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one per non-empty line; ``[]`` if it is missing."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_run_record(workdir: str | os.PathLike, config: ml_collections.ConfigDict, final: dict[str, Any],
                     wall_time_s: float, command: Sequence[str], config_name: str | None = None,
                     code: dict[str, Any] | None = None) -> Path:
    """Writes ``workdir/run.json``: versions, code version, devices, seed, timing, final metrics.

    ``code``: :func:`code_version` taken when the run started (default: now).
    """
    workdir = Path(workdir)
    timings = read_jsonl(workdir / "timings.jsonl")
    rates = [t["images_per_second"] for t in timings if isinstance(t.get("images_per_second"), (int, float))]
    record = {
        "command": " ".join(command),
        "config_name": config_name,
        "seed": config.seed,
        "wall_time_s": round(wall_time_s, 2),
        # Median over the logged intervals: robust to the first (compiling) interval.
        "images_per_sec": sorted(rates)[len(rates) // 2] if rates else None,
        "final_metrics": {k: v for k, v in final.items()
                          if (isinstance(v, (int, float, str, bool)) or v is None) and k != "data_folder"},
        # The folder the data was actually read from ($JAXCNN_DATA_DIR when config.dataset.data_dir is '').
        "data_folder": final.get("data_folder"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # What the steps were compiled with (jax.pmap takes no compiler options).
        "xla_compiler_options": None if config.get("parallel") == "pmap"
        else compiler_options(config.get("xla_options", "auto")),
        "host_memory": host_memory.state(),
        "cpu_kernels": bool(config.get("cpu_kernels", True)),
        **(code if code is not None else code_version()),
        **environment(),
    }
    path = workdir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def command_line() -> list[str]:
    """This process's command line as typed (program name without its folder), for ``run.json``."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def shrink_to_smoke(config: ml_collections.ConfigDict, *, train_examples: int = 256, eval_examples: int = 128,
                    steps: int = 6) -> ml_collections.ConfigDict:
    """Shrinks a training config in place to a seconds-long run on slices of its splits.

    Every shipped experiment config calls this for ``get_config("smoke")``; the CI runs each
    config that way, through the real command.
    """
    config.dataset.train_split = f"{config.dataset.train_split.split('[')[0]}[:{train_examples}]"
    config.dataset.eval_split = f"{config.dataset.eval_split.split('[')[0]}[:{eval_examples}]"
    if config.dataset.get("derived_train_examples", 0):
        # Still several examples per digit, as the full config has, but from the sliced digits.
        config.dataset.derived_train_examples = 2 * train_examples
    config.batch_size = min(config.batch_size, 32)
    config.eval_batch_size = 0
    config.num_epochs = 0
    config.num_steps = steps
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, 2)
    config.eval_every_steps = steps // 2
    config.log_every_steps = 2
    config.checkpoint.every_steps = steps // 2
    config.progress_bar = False
    return config
