"""Shared tools of the fault-injection tests: result records, synthetic data, child runs.

Every fault test appends what it tried and what survived to a JSON-lines results file
(``$JAXCNN_RELIABILITY_RESULTS``; nothing is written when it is unset), which
``python -m tests.reliability.report`` renders into ``RELIABILITY.md``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS_ENV = "JAXCNN_RELIABILITY_RESULTS"
KILL_CONFIG = HERE / "kill_config.py"


# ----------------------------------------------------------------------------- results


def record(fault: str, *, trials: int = 1, survived: int | None = None, lost: str = "nothing",
           detail: str = "", **extra: Any) -> dict[str, Any]:
    """Appends one result record (a fault, how many trials, how many survived, what was lost)."""
    entry = {
        "fault": fault,
        "trials": int(trials),
        "survived": int(trials if survived is None else survived),
        "lost": lost,
        "detail": detail,
        **extra,
    }
    path = os.environ.get(RESULTS_ENV)
    if path:
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        # One write of one line with O_APPEND: safe across pytest-xdist workers.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return entry


# ----------------------------------------------------------------------------- data


def synthetic_digits(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(n, size, size)`` with a bright bar whose row encodes the label (0-9)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = int(label) * (size - 4) // 9
        images[i, row : row + 4, 2 : size - 2] = 220
    return images, labels


def write_synthetic_mnist(data_dir: Path, n_train: int = 192, n_test: int = 48, size: int = 16) -> Path:
    """Writes ``data_dir/mnist/`` as the four gzipped IDX files of a tiny synthetic MNIST."""
    from jaxcnn.data import write_idx

    folder = Path(data_dir) / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, size, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return Path(data_dir)


# ----------------------------------------------------------------------------- child processes


def child_env(cache_dir: Path | None = None) -> dict[str, str]:
    """Environment of a child run: this checkout first on the path, CPU, a persistent compile cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    if cache_dir is not None:
        # Start-up, not compilation, is what the kill trials are about: reuse compiled steps.
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def train_command(workdir: Path, data_dir: Path, *overrides: str) -> list[str]:
    """The ``jaxcnn train`` command of the kill trials (the same command every time)."""
    return [
        sys.executable, "-m", "jaxcnn.cli", "train", "--config", str(KILL_CONFIG), "--workdir", str(workdir),
        f"--config.dataset.data_dir={data_dir}", *overrides,
    ]


class Child:
    """A child process with stdout/stderr in files (no pipe to fill up while we poll)."""

    def __init__(self, command: list[str], env: dict[str, str], log_dir: Path, name: str):
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self._out = open(self.out_path, "w")
        self._err = open(self.err_path, "w")
        self.started = time.monotonic()
        self.started_ns = time.time_ns()
        self.process = subprocess.Popen(command, env=env, cwd=str(ROOT), stdout=self._out, stderr=self._err)

    def poll(self) -> int | None:
        return self.process.poll()

    def send(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout: float = 300) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self._out.close()
            self._err.close()
        return code

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


def kill_signal(name: str) -> int:
    return {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}[name]


# ----------------------------------------------------------------------------- workdir inspection


def checkpoint_dirs(workdir: Path) -> tuple[list[int], list[str]]:
    """``(complete steps, temporary (half-written) folder names)`` in ``workdir/checkpoints``."""
    folder = Path(workdir) / "checkpoints"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return [], []
    steps = sorted(int(n) for n in names if n.isdigit())
    tmp = sorted(n for n in names if "orbax-checkpoint-tmp" in n)
    return steps, tmp


def written_since(path: Path, since_ns: int) -> bool:
    """Whether ``path`` exists and was modified at or after ``since_ns`` (``time.time_ns()``)."""
    try:
        return os.stat(path).st_mtime_ns >= since_ns
    except FileNotFoundError:
        return False


def last_logged_step(workdir: Path) -> int:
    """The step of the last complete line of ``metrics.jsonl`` (0 when none)."""
    try:
        with open(Path(workdir) / "metrics.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 400))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return 0
    lines = [line for line in tail.split("\n")[:-1] if line.strip()]
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def final_state(workdir: Path) -> dict[str, Any]:
    """Every array of the latest checkpoint (params, batch stats, EMA) as host arrays, verified."""
    from jaxcnn.train import Checkpointer

    with Checkpointer(Path(workdir) / "checkpoints", read_only=True, async_save=False) as ckpt:
        return {"step": ckpt.latest_step(), **ckpt.restore_variables()}


def trees_equal(a: Any, b: Any) -> bool:
    import jax

    # Leaves and their paths, not the tree structures: a TrainState's static fields (apply_fn,
    # tx) are not state, and two equal states built separately hold different function objects.
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    return len(la) == len(lb) and all(
        pa == pb and np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for (pa, x), (pb, y) in zip(la, lb)
    )


def last_json(text: str) -> dict[str, Any]:
    """The JSON object the ``jaxcnn train`` command prints last."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.index("{"):])


# ----------------------------------------------------------------------------- file systems


def try_mount_tmpfs(path: Path, size: str) -> bool:
    """Mounts a tmpfs of ``size`` at ``path`` (root only); False when this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def remount(path: Path, options: str, attempts: int = 200) -> bool:
    """Remounts with ``options``; retries while a file is open for writing ("busy")."""
    for _ in range(attempts):
        result = subprocess.run(["mount", "-o", f"remount,{options}", str(path)], capture_output=True, timeout=20)
        if result.returncode == 0:
            return True
        time.sleep(0.01)
    return False


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def is_writable(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (root ignores permission bits)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return False
        raise


# ----------------------------------------------------------------------------- in-process tiny runs


def tiny_config(**overrides: Any):
    """8 steps of batch 16 on :func:`tiny_sources`, a checkpoint every 2 steps (all kept)."""
    from jaxcnn.train import default_config

    config = default_config()
    config.batch_size = 16
    config.num_epochs = 0
    config.num_steps = 8
    config.log_every_steps = 1
    config.eval_every_steps = 4
    config.checkpoint.every_steps = 2
    config.checkpoint.keep = 10
    config.checkpoint.async_save = True
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-2
    config.progress_bar = False
    config.tensorboard = False
    config.plots = False
    config.update_from_flattened_dict(overrides)
    return config


def tiny_sources(n_train: int = 64, n_test: int = 32, size: int = 8, images: np.ndarray | None = None):
    """``(train, test)`` ``ArraySource``s of :func:`synthetic_digits` (10 classes)."""
    from jaxcnn.data import ArraySource

    x, y = synthetic_digits(n_train + n_test, size)
    x = x[..., None]
    if images is not None:
        x = images
    return (
        ArraySource(x[:n_train], y[:n_train], num_classes=10, split="train"),
        ArraySource(x[n_train:], y[n_train:], num_classes=10, split="test"),
    )


def tiny_model(num_classes: int = 10):
    """Conv(4, 3x3) + ReLU, global mean, Dense: a model that compiles in about a second."""
    import flax.linen as nn
    import jax.numpy as jnp

    class TinyNet(nn.Module):
        num_classes: int = 10
        axis_name: Any = None
        dtype: Any = None

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))

    return TinyNet(num_classes=num_classes)


def run_tiny(workdir: Path, config=None, *, train=None, test=None, model=None) -> dict[str, Any]:
    """``train_and_evaluate`` of the tiny model and data (in this process)."""
    from jaxcnn.train import train_and_evaluate

    if train is None:
        train, test = tiny_sources()
    return train_and_evaluate(
        config if config is not None else tiny_config(), str(workdir), train_source=train,
        eval_source=test, model=model if model is not None else tiny_model(),
    )


class FaultSource:
    """Wraps a source; calls ``fault()`` once, at the first read after ``when()`` became true."""

    def __init__(self, source: Any, when, fault):
        self.source, self.when, self.fault = source, when, fault
        self.info = getattr(source, "info", None)
        self.fired = False

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        if not self.fired and self.when():
            self.fired = True
            self.fault()
        return self.source[index]


def has_checkpoint(workdir: Path, step: int):
    """A ``when`` for :class:`FaultSource`: checkpoint ``step`` is complete."""
    return lambda: (Path(workdir) / "checkpoints" / str(step)).is_dir()
