"""``python -m experiments.accelerator --out DIR``: tests, benchmarks and fashion_resnet18 on one GPU, in a time budget.

    python -m experiments.accelerator --out DIR [--budget-s 420] [--pack] [--dry-run]

Runs the phases of :mod:`experiments.accelerator` one after the other, each in its own
process, and writes ``DIR/summary.json`` after each. The whole stays within ``--budget-s``:
``tests`` and ``bench`` have their own caps (``--tests-s``, ``--bench-s``), ``train`` gets what
is left less ``--reserve-s`` for packing. A phase that runs out of time is stopped cleanly
(pytest by SIGINT, which still writes the JUnit XML; training by SIGTERM, which checkpoints
and writes ``run.json`` with ``status: preempted``), and what finished is kept.

``train`` first starts the full config. Once the step rate is steady, it projects the finish;
if the run cannot end in the time left, it stops it and starts again with the number of
epochs that fits (the schedule then spans those epochs), and the summary says so.

Outputs in ``DIR``: ``summary.json``, ``tests.xml``, ``tests.log``, ``bench.json``,
``bench.md``, ``bench.log``, ``train.log``; with ``--pack`` also ``fashion_resnet18.tar.gz``:
the training workdir without checkpoints, 8 files in all. The workdir itself is
``runs/fashion_resnet18`` in the repository root (``--workdir``), as the config's docstring
runs it, so that run.json records the command to rerun. ``--dry-run``: tiny shapes, two
tests, the config's ``:smoke`` variant, a minute on a CPU (tests/test_accelerator.py runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "experiments/configs/fashion_resnet18.py"
RUN_NAME = "fashion_resnet18"
TRAIN_EXAMPLES = 60000  # Fashion-MNIST's training split
# Seconds of steady stepping (after the first logged interval, which compiles) before projecting the finish.
OBSERVE_S = 20.0
SCHEMA = "jaxcnn-accelerator/1"

# The platform-independent tests run on the GPU: the models, the train steps and the functional
# parity grid against PyTorch (582 tests). In order of importance: when the phase's time runs
# out, pytest is stopped and the tests that ran are kept (the summary names the cut).
GPU_TESTS = (
    "tests/models/test_models.py",
    "tests/train/test_steps.py",
    "tests/functional/test_conv.py",
    "tests/functional/test_normalization.py",
    "tests/functional/test_layers.py",
    "tests/functional/test_losses.py",
    "tests/functional/test_pooling.py",
    "tests/functional/test_fusion.py",
    "tests/functional/test_resize.py",
)
DRY_TESTS = (
    "tests/functional/test_conv.py::test_conv_constant_padding_with_ones_matches_torch_pad",
    "tests/functional/test_losses.py::test_cross_entropy_segmentation_nhwc_and_nchw_match_torch",
)


class Budget:
    """Seconds left of a fixed allowance that started when it was made."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _run_with_deadline(cmd: list[str], log_path: Path, timeout: float, stop_signal: int, env: dict[str, str],
                       monitor=None) -> dict[str, Any]:
    """Runs ``cmd`` with output to ``log_path``; past ``timeout`` sends ``stop_signal``, then kills.

    ``monitor(elapsed)``, if given, is called about every 2 s and may return a reason to stop early.
    """
    start = time.monotonic()
    stopped = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            reason = "time budget" if elapsed > timeout else (monitor(elapsed) if monitor else None)
            if reason and stopped is None:
                stopped = reason
                proc.send_signal(stop_signal)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(0.5 if elapsed < 10 else 2.0)
    return {"returncode": proc.returncode, "seconds": round(time.monotonic() - start, 1), "stopped": stopped}


def junit_counts(path: Path) -> dict[str, int] | None:
    """Tests, failures, errors and skips of a pytest JUnit XML file (``None`` if absent)."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}


def run_tests(out: Path, timeout: float, dry: bool, selection: list[str] | None, torch_device: str) -> dict[str, Any]:
    """pytest on the chosen tests; PyTorch's references on CUDA when it has one (see tests/conftest.py)."""
    extra = {
        # The parity grid checks formulas at float32 tolerances: no TF32 in JAX's float32 dots and convs.
        "JAX_DEFAULT_MATMUL_PRECISION": "highest",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "JAXCNN_TEST_TORCH_DEVICE": os.environ.get("JAXCNN_TEST_TORCH_DEVICE") or torch_device,
    }
    tests = selection or list(DRY_TESTS if dry else GPU_TESTS)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rfE",
           f"--junitxml={out / 'tests.xml'}", *tests]
    result = _run_with_deadline(cmd, out / "tests.log", timeout, signal.SIGINT, _env(extra))
    return {**result, "selection": tests, "settings": extra, "counts": junit_counts(out / "tests.xml")}


PREFLIGHT = """
import json, jax, flax, optax, orbax.checkpoint, torch
print(json.dumps({"jax_backend": jax.default_backend(), "jax_device": jax.devices()[0].device_kind,
                  "torch_cuda": torch.cuda.is_available(), "jax": jax.__version__, "flax": flax.__version__,
                  "optax": optax.__version__, "orbax_checkpoint": orbax.checkpoint.__version__,
                  "torch": torch.__version__}))
"""


def preflight() -> dict[str, Any]:
    """What JAX and PyTorch see on this machine, and the versions (asked in a child process)."""
    probe = subprocess.run([sys.executable, "-c", PREFLIGHT], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=180)
    if probe.returncode:
        raise RuntimeError(f"the preflight import of jax, flax, optax, orbax and torch failed:\n{probe.stderr[-2000:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def run_bench(out: Path, timeout: float, dry: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "experiments.accelerator.bench", "--out", str(out), "--budget-s", str(timeout - 20)]
    if dry:
        cmd.append("--dry-run")
    result = _run_with_deadline(cmd, out / "bench.log", timeout, signal.SIGTERM, _env())
    path = out / "bench.json"
    if path.exists():
        data = json.loads(path.read_text())
        r50 = data.get("resnet50") or {}
        result["device"] = data.get("device")
        result["resnet50"] = {k: r50.get(k) for k in ("batch", "jaxcnn_vs_torch", "skipped", "error") if k in r50}
        result["resnet50"]["images_per_s"] = {k: v.get("images_per_s_best") for k, v in r50.get("frameworks", {}).items()}
    return result


@dataclass
class Progress:
    """The step a training run reached, seen at a wall-clock time (seconds since its start)."""

    seconds: float
    step: int


def plan_epochs(samples: list[Progress], *, total_steps: int, steps_per_epoch: int, epochs: int, left_s: float,
                restart_s: float, margin: float = 0.15) -> int | None:
    """How many epochs to run, from the progress of the full run so far; ``None``: it fits as it is.

    The rate is taken between the first and the last sample (after compilation); the full run
    fits if its projected finish, with ``margin`` for evaluations and slack, is within ``left_s``.
    Otherwise a restart costs ``restart_s`` (start-up and compilation, as seen) and the answer
    is the whole epochs that fit in the rest (0 when not even one does).
    """
    if len(samples) < 2 or samples[-1].step <= samples[0].step:
        raise ValueError(f"plan_epochs: need two samples with progress, got {samples}")
    first, last = samples[0], samples[-1]
    rate = (last.step - first.step) / (last.seconds - first.seconds)
    finish = (total_steps - last.step) / rate * (1 + margin)
    if finish <= left_s:
        return None
    epoch_s = steps_per_epoch / rate * (1 + margin)
    return max(0, min(epochs - 1, math.floor((left_s - restart_s) / epoch_s)))


def _timings_steps(path: Path) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    steps = [json.loads(line)["step"] for line in lines if line.strip().endswith("}")]
    return steps[-1] if steps else None


def _train_command(workdir: Path, dry: bool, epochs: int | None) -> list[str]:
    # Run as the ``jaxcnn`` command, from the repository root: run.json records this command line,
    # the one to rerun (the data folder comes from $JAXCNN_DATA_DIR).
    launcher = "import sys; sys.argv[0] = 'jaxcnn'; from jaxcnn.cli import main; sys.exit(main())"
    shown = os.path.relpath(workdir, ROOT) if workdir.is_relative_to(ROOT) else str(workdir)
    cmd = [sys.executable, "-c", launcher, "train", "--config", CONFIG + (":smoke" if dry else ""),
           "--workdir", shown, "--config.progress_bar=False"]
    if epochs is not None:
        cmd.append(f"--config.num_epochs={epochs}")
    return cmd


def _config_numbers(dry: bool) -> tuple[int, int, int]:
    """(epochs, steps per epoch, total steps) of the config, for the projection."""
    probe = ("import json; from jaxcnn.launch import load_config_file as f; c = f(%r); "
             "print(json.dumps([c.num_epochs, c.num_steps, c.batch_size]))") % (CONFIG + (":smoke" if dry else ""))
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    epochs, steps, batch = json.loads(proc.stdout.strip().splitlines()[-1])
    per_epoch = math.ceil(TRAIN_EXAMPLES / batch) if not dry else max(1, steps)
    return epochs, per_epoch, steps if steps > 0 else epochs * per_epoch


def run_train(out: Path, workdir: Path, timeout: float, dry: bool, data_dir: Path) -> dict[str, Any]:
    if not (data_dir / "fashion_mnist").is_dir():
        return {"skipped": f"no Fashion-MNIST IDX files under {data_dir}/fashion_mnist (see docs/accelerators.md)"}
    if workdir.exists():
        # jaxcnn train would resume it; this command measures a fresh run and deletes nothing it did not make.
        return {"error": f"the workdir {workdir} exists; remove it or pass another --workdir"}
    # The projection needs the config's length; the dry run (seconds long) never restarts.
    epochs, per_epoch, total = _config_numbers(dry) if not dry else (0, 1, 1)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    env = _env({"JAXCNN_DATA_DIR": str(data_dir)})
    samples: list[Progress] = []
    decision: dict[str, Any] = {}
    start = time.monotonic()

    def monitor(elapsed: float) -> str | None:
        step = _timings_steps(workdir / "timings.jsonl")
        if step is None or dry:
            return None
        if not samples or step > samples[-1].step:
            samples.append(Progress(elapsed, step))
        if len(samples) >= 3 and samples[-1].seconds - samples[1].seconds >= OBSERVE_S and "epochs" not in decision:
            fit = plan_epochs(samples[1:], total_steps=total, steps_per_epoch=per_epoch, epochs=epochs,
                              left_s=timeout - elapsed, restart_s=samples[0].seconds)
            decision.update(epochs=fit, at_s=round(elapsed, 1), step=step,
                            steps_per_s=(samples[-1].step - samples[1].step) / (samples[-1].seconds - samples[1].seconds))
            if fit is not None:
                return f"the full {epochs} epochs would not end in the budget; restarting with {fit}"
        return None

    first = _run_with_deadline(_train_command(workdir, dry, None), out / "train.log", timeout, signal.SIGTERM, env,
                               monitor)
    result: dict[str, Any] = {"config": CONFIG, "config_epochs": epochs, "first_run": first, "projection": decision}
    if decision.get("epochs") is not None:
        fit = decision["epochs"]
        shutil.rmtree(workdir, ignore_errors=True)
        if fit < 1:
            result["trained"] = "nothing: not one epoch fits the time left"
            return result
        left = timeout - (time.monotonic() - start)
        second = _run_with_deadline(_train_command(workdir, dry, fit), out / "train.log.reduced", left,
                                    signal.SIGTERM, env)
        # One log file comes back: the reduced run's after the first's.
        with open(out / "train.log", "a") as log:
            log.write(f"\n===== restarted with --config.num_epochs={fit} =====\n")
            log.write((out / "train.log.reduced").read_text())
        (out / "train.log.reduced").unlink()
        result["second_run"] = second
        result["epochs"] = fit
        result["trained"] = f"{fit} of the config's {epochs} epochs (what fit the budget)"
    else:
        result["epochs"] = epochs
        result["trained"] = f"the full config ({epochs} epochs)" if not dry else "the :smoke config"
    run_json = workdir / "run.json"
    if run_json.exists():
        record = json.loads(run_json.read_text())
        result["final_metrics"] = record.get("final_metrics")
        result["wall_time_s"] = record.get("wall_time_s")
        result["command"] = record.get("command")
        if record.get("final_metrics", {}).get("status") == "preempted":
            result["trained"] += "; stopped by the budget before the end (status preempted)"
    else:
        result["trained"] += "; no run.json written"
    return result


def pack(workdir: Path, target: Path) -> Path:
    """``target`` (.tar.gz) holding ``workdir`` as ``<name>/...``, without checkpoints."""
    with tarfile.open(target, "w:gz") as tar:
        tar.add(workdir, arcname=workdir.name, filter=lambda info: None if "/checkpoints" in info.name else info)
    return target


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m experiments.accelerator", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for everything (default 420)")
    parser.add_argument("--tests-s", type=float, default=120.0, help="cap of the tests phase (default 120)")
    parser.add_argument("--bench-s", type=float, default=150.0, help="cap of the bench phase (default 150)")
    parser.add_argument("--reserve-s", type=float, default=10.0, help="kept back for packing (default 10)")
    parser.add_argument("--phases", default="tests,bench,train", help="comma-separated subset of tests,bench,train")
    parser.add_argument("--tests", nargs="*", help="pytest selection instead of the default subset")
    parser.add_argument("--data-dir", help="folder with fashion_mnist/ (default $JAXCNN_DATA_DIR, else ./.data)")
    parser.add_argument("--workdir", default=f"runs/{RUN_NAME}",
                        help=f"the training run's workdir, relative to the repository root (default runs/{RUN_NAME}); "
                        "must not exist")
    parser.add_argument("--pack", action="store_true", help="also tar the workdir (no checkpoints) into DIR")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes, two tests, the :smoke config")
    parser.add_argument("--allow-cpu", action="store_true", help="run full sizes even when JAX sees no GPU")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - {"tests", "bench", "train"})
    if unknown:
        parser.error(f"--phases: unknown {unknown}; expected some of tests,bench,train")
    budget = Budget(args.budget_s)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir or os.environ.get("JAXCNN_DATA_DIR") or ROOT / ".data").resolve()
    workdir = (ROOT / args.workdir).resolve()
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "command": " ".join(["python -m experiments.accelerator", *(argv if argv is not None else sys.argv[1:])]),
        "dry_run": args.dry_run,
        "budget_s": args.budget_s,
        "git_commit": os.environ.get("JAXCNN_GIT_COMMIT"),
        "phases": {},
    }

    def save():
        summary["elapsed_s"] = round(budget.elapsed(), 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"[{budget.elapsed():6.1f} s] summary written", flush=True)

    try:
        summary["preflight"] = preflight()
    except (RuntimeError, subprocess.SubprocessError, ValueError) as err:
        summary["error"] = str(err)
        save()
        raise SystemExit(summary["error"]) from None
    save()
    if summary["preflight"]["jax_backend"] not in ("gpu", "cuda", "rocm") and not (args.dry_run or args.allow_cpu):
        # Full-size steps on a CPU would spend the whole budget compiling: stop here, say why.
        summary["error"] = f"JAX sees no GPU (backend {summary['preflight']['jax_backend']!r}); nothing run"
        save()
        raise SystemExit(summary["error"])
    torch_device = "cuda" if summary["preflight"]["torch_cuda"] else "cpu"
    for phase in phases:
        left = budget.left() - args.reserve_s
        if left < (5 if args.dry_run else 30):
            summary["phases"][phase] = {"skipped": f"{left:.0f} s left"}
            save()
            continue
        print(f"[{budget.elapsed():6.1f} s] {phase} ({left:.0f} s left)", flush=True)
        try:
            if phase == "tests":
                summary["phases"]["tests"] = run_tests(out, min(args.tests_s, left), args.dry_run, args.tests, torch_device)
            elif phase == "bench":
                summary["phases"]["bench"] = run_bench(out, min(args.bench_s, left), args.dry_run)
            else:
                summary["phases"]["train"] = run_train(out, workdir, left, args.dry_run, data_dir)
        except Exception as err:  # noqa: BLE001 - keep the other phases
            summary["phases"][phase] = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(summary["phases"][phase], indent=1), flush=True)
        save()
    if args.pack and (workdir / "run.json").exists():
        summary["packed"] = pack(workdir, out / f"{workdir.name}.tar.gz").name
        save()
    return summary


if __name__ == "__main__":
    main()
