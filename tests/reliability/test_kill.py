"""kill -9, SIGTERM and SIGINT at random moments of ``jaxcnn train``; rerunning loses nothing.

One tiny config (``kill_config.py``: LeNet-5 on a synthetic 16x16 MNIST of 192 images, 24
steps, an asynchronous checkpoint every 2 steps, 3 kept) runs once uninterrupted: the
reference. Then chains of runs of the *same command* on one workdir are interrupted at
moments drawn from a seeded RNG:

* ``startup``: SIGKILL at a random time before training starts (imports, data, restore,
  compilation);
* ``step``: SIGKILL a random few milliseconds after a random step was logged;
* ``save``: SIGKILL as soon as orbax's temporary folder of a checkpoint appears (a kill
  *during* a save; the test checks the half-written folder is still there after the kill);
* ``SIGTERM`` / ``SIGINT`` after a random step: the run must save a checkpoint of that step,
  say so and exit with code 0.

After each interruption the next run of the chain must resume from the newest *complete*
checkpoint present at the kill (never from a half-written one, never skipping a corrupt one),
and the last run of each chain, left to finish, must end with exactly the reference's state:
``metrics.jsonl`` byte for byte, every array of the final checkpoint bit for bit, the same
final metrics, the checkpoints kept that retention implies, and every kept checkpoint reading
back intact. (A SIGTERM/SIGINT saves a checkpoint off the every-2-steps cadence, e.g. at step
21; retention keeps the newest 3 of all saves, so such a stop near the end is still among them
where the uninterrupted run kept step 20 instead.)
"""

from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import kill_config
import pytest
from jaxcnn.cli import EXIT_PREEMPTED
from fault_tools import (
    Child,
    checkpoint_dirs,
    child_env,
    final_state,
    kill_signal,
    last_json,
    last_logged_step,
    record,
    train_command,
    trees_equal,
    write_synthetic_mnist,
    written_since,
)

SEED = 20240609
_RUN = kill_config.get_config()  # the command's config: its length and checkpoint cadence
TOTAL_STEPS = _RUN.num_steps
EVERY_STEPS, KEEP = _RUN.checkpoint.every_steps, _RUN.checkpoint.keep
# Four chains of six interruptions: 20 x SIGKILL (4 at start-up, 8 during saves, 8 after a
# step), 2 x SIGTERM, 2 x SIGINT.
CHAIN_PLANS = [
    ["startup", "save", "step", "save", "SIGTERM", "step"],
    ["save", "step", "startup", "save", "step", "SIGINT"],
    ["step", "startup", "save", "SIGINT", "save", "step"],
    ["save", "SIGTERM", "step", "save", "startup", "step"],
]
RESUMED = re.compile(r"Resuming from the checkpoint of step (\d+)")


def _resumed_from(text: str) -> int | None:
    found = RESUMED.findall(text)
    return int(found[-1]) if found else None


def _expected_kept(stops: set[int]) -> list[int]:
    """The steps retention keeps: the newest KEEP of the cadence saves and the stop-signal saves."""
    return sorted(set(range(EVERY_STEPS, TOTAL_STEPS + 1, EVERY_STEPS)) | stops)[-KEEP:]


def _check_resume(previous: dict | None, child: Child, problem) -> None:
    """The run after an interruption resumed from the newest complete checkpoint left by it."""
    if previous is None or "complete_steps" not in previous:
        return
    text = child.stdout
    expected = max(previous["complete_steps"], default=None)
    resumed = _resumed_from(text)
    if "Skipped the newer checkpoint" in text:
        problem(previous, f"after {previous}: a checkpoint did not read back intact:\n{text[-2000:]}")
    if resumed is not None and resumed != expected:
        problem(previous, f"after {previous}: the next run resumed from {resumed}, expected {expected}")
    elif resumed is not None:
        previous["next_run_resumed_from"] = resumed


def _interrupt(kind: str, child: Child, workdir: Path, rng: random.Random, resume_step: int,
               startup_seconds: float, left: int) -> dict:
    """Runs ``child`` until the trigger of ``kind`` fires, then interrupts it; returns what happened."""
    remaining = TOTAL_STEPS - resume_step
    signal_kind = kind in ("SIGTERM", "SIGINT")
    # Spread the chain's interruptions over what is left of the run; a stop signal keeps a few
    # steps of margin so that it lands before the run's last step.
    cap = remaining - (3 if signal_kind else 1)
    target = resume_step + max(1, min(cap, rng.randint(1, max(1, 2 * remaining // (left + 1)))))
    delay = 0.0 if signal_kind else rng.uniform(0.0, 0.04)
    skip_saves = rng.randint(0, 1)
    kill_at = rng.uniform(0.2, max(0.3, 0.9 * startup_seconds))
    sig = kill_signal("SIGKILL" if kind in ("startup", "step", "save") else kind)
    metrics = workdir / "metrics.jsonl"
    # What the previous (killed) run left behind must not fire a trigger: its records after the
    # last checkpoint (until this run truncates them) and its half-written checkpoint folders
    # (until this run deletes them; the same name may then be written again by this run).
    stale = set(checkpoint_dirs(workdir)[1])
    seen_tmp: set[str] = set()
    info = {"kind": kind, "resume_step": resume_step}
    deadline = time.monotonic() + 300
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.send(kill_signal("SIGKILL"))
            raise AssertionError(f"{kind}: the run did not reach its trigger in 300 s")
        now = time.monotonic() - child.started
        started_training = written_since(metrics, child.started_ns)
        if kind == "startup":
            if now >= kill_at or started_training:
                info["at_seconds"] = round(now, 3)
                break
        elif kind == "save":
            _, tmp = checkpoint_dirs(workdir)
            stale &= set(tmp)  # a stale folder that disappeared was cleaned up
            fresh = [t for t in tmp if t not in stale and int(t.split(".")[0]) > resume_step]
            seen_tmp.update(fresh)
            if fresh and len(seen_tmp) > skip_saves:
                info["during_save_of"] = fresh[-1]
                break
        else:  # "step", "SIGTERM", "SIGINT"
            if started_training:
                logged = last_logged_step(workdir)
                if logged >= target:
                    time.sleep(delay)
                    info["after_step"] = logged
                    break
        time.sleep(0.001)
    if child.poll() is not None:
        info["finished_before_trigger"] = True
        child.wait()
        return info
    child.send(sig)
    info["returncode"] = child.wait(timeout=300)
    steps, tmp = checkpoint_dirs(workdir)
    info["complete_steps"], info["half_written"] = steps, tmp
    return info


@pytest.mark.slow
def test_interrupted_runs_resume_and_end_exactly_like_an_uninterrupted_run(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data")
    env = child_env(tmp_path / "jax_cache")
    logs = tmp_path / "logs"
    logs.mkdir()

    # The reference: the same command, uninterrupted (also fills the compilation cache).
    reference = tmp_path / "reference"
    child = Child(train_command(reference, data), env, logs, "reference")
    assert child.wait(600) == 0, child.stderr[-3000:]
    reference_result = last_json(child.stdout)
    assert reference_result["status"] == "completed" and reference_result["step"] == TOTAL_STEPS
    reference_metrics = (reference / "metrics.jsonl").read_bytes()
    reference_state = final_state(reference)
    reference_steps, _ = checkpoint_dirs(reference)
    assert reference_steps == _expected_kept(set()), reference_steps
    # Time to the first logged step of a warm start: the window of the start-up kills.
    probe = Child(train_command(tmp_path / "probe", data), env, logs, "probe")
    while probe.poll() is None and last_logged_step(tmp_path / "probe") == 0:
        time.sleep(0.005)
    startup_seconds = time.monotonic() - probe.started
    probe.send(kill_signal("SIGKILL"))
    probe.wait()

    rng = random.Random(SEED)
    trials: list[dict] = []
    problems: list[str] = []

    def problem(trial: dict | None, text: str) -> None:
        problems.append(text)
        if trial is not None:
            trial["problem"] = text

    for chain, plan in enumerate(CHAIN_PLANS):
        workdir = tmp_path / f"chain{chain}"
        chain_trials: list[dict] = []
        previous: dict | None = None  # the interruption before this run
        for i, kind in enumerate(plan):
            resume_step = max(checkpoint_dirs(workdir)[0], default=0)
            child = Child(train_command(workdir, data), env, logs, f"chain{chain}-{i}-{kind}")
            info = _interrupt(kind, child, workdir, rng, resume_step, startup_seconds, len(plan) - i)
            info.update(chain=chain, index=i)
            _check_resume(previous, child, problem)
            if info.get("finished_before_trigger"):
                info["note"] = "finished before its interruption (not counted)"
                trials.append(info)
                previous = None
                break
            if kind in ("SIGTERM", "SIGINT") and info["returncode"] == 0 and '"status": "completed"' in child.stdout:
                info["note"] = "the run finished before the signal arrived (not counted)"
                trials.append(info)
                previous = None
                break
            if kind in ("SIGTERM", "SIGINT"):
                text = child.stdout
                stopped = re.search(rf"Received {kind} at step (\d+): saved a checkpoint", text)
                if info["returncode"] != EXIT_PREEMPTED or stopped is None or int(stopped.group(1)) not in info["complete_steps"]:
                    problem(info, f"{info}: no clean stop with a checkpoint:\n{text[-1500:]}\n{child.stderr[-1500:]}")
                else:
                    info["stopped_at"] = int(stopped.group(1))
                    if last_json(text)["status"] != "preempted":
                        problem(info, f"{info}: status is not 'preempted'")
            elif info["returncode"] != -9:
                problem(info, f"{info}: expected death by SIGKILL, got {info['returncode']}")
            if kind == "save" and info["during_save_of"] not in info["half_written"]:
                info["note"] = "the save completed between the trigger and the kill"
            trials.append(info)
            chain_trials.append(info)
            previous = info
        # Let the chain finish: the same command, run to completion.
        child = Child(train_command(workdir, data), env, logs, f"chain{chain}-final")
        code = child.wait(600)
        _check_resume(previous, child, problem)
        if code != 0:
            problem(None, f"chain {chain}: the final run failed ({code}):\n{child.stderr[-3000:]}")
            for trial in chain_trials:
                trial.setdefault("problem", "its chain did not finish")
            continue
        result = {k: v for k, v in last_json(child.stdout).items() if k not in ("workdir", "run_record")}
        expected = {k: v for k, v in reference_result.items() if k not in ("workdir", "run_record")}
        same = {
            "final result": result == expected,
            "metrics.jsonl": (workdir / "metrics.jsonl").read_bytes() == reference_metrics,
            "final checkpoint": trees_equal(final_state(workdir), reference_state),
            "kept checkpoints": checkpoint_dirs(workdir)[0]
            == _expected_kept({t["stopped_at"] for t in chain_trials if "stopped_at" in t}),
            "no half-written folder left": not checkpoint_dirs(workdir)[1],
        }
        from jaxcnn.train import Checkpointer, CorruptCheckpointError

        with Checkpointer(workdir / "checkpoints", read_only=True, async_save=False) as ckpt:
            for step in ckpt.all_steps():
                try:
                    ckpt.verify(step)
                except CorruptCheckpointError:
                    same[f"checkpoint {step} reads back intact"] = False
        differ = [name for name, ok in same.items() if not ok]
        if differ:
            problem(None, f"chain {chain}: {differ} differ from the uninterrupted run")
            for trial in chain_trials:
                trial.setdefault("problem", f"its chain ended different: {differ}")

    kills = [t for t in trials if t["kind"] in ("startup", "step", "save") and "returncode" in t]
    during_save = [t for t in kills if t["kind"] == "save" and t["during_save_of"] in t["half_written"]]
    signals = [t for t in trials if t["kind"] in ("SIGTERM", "SIGINT") and "returncode" in t and "note" not in t]
    lost = "nothing" if not problems else "; ".join(p.splitlines()[0] for p in problems)
    record(
        "kill -9 of `jaxcnn train` at random moments, then the same command again",
        trials=len(kills),
        survived=len([t for t in kills if "problem" not in t]),
        lost=lost,
        detail=(
            f"{len([t for t in kills if t['kind'] == 'startup'])} during start-up, "
            f"{len([t for t in kills if t['kind'] == 'step'])} after a random step, "
            f"{len(during_save)} during an asynchronous checkpoint save (half-written folder left "
            f"behind, never read); {len(CHAIN_PLANS)} chains each finished with metrics.jsonl, final "
            f"checkpoint and result identical to the uninterrupted run (seed {SEED})"
        ),
        test="tests/reliability/test_kill.py",
        trial_log=trials,
    )
    record(
        "SIGTERM / SIGINT during `jaxcnn train`",
        trials=len(signals),
        survived=len([t for t in signals if "problem" not in t]),
        lost=lost,
        detail="exit code 0, 'Received SIG... at step N: saved a checkpoint' printed, checkpoint N "
               "present, the next run resumed from N and the chain ended identical to the reference",
        test="tests/reliability/test_kill.py",
    )
    assert not problems, "\n\n".join(problems)
    assert len(kills) >= 20, f"only {len(kills)} kill -9 trials ran: {trials}"
    assert len(during_save) >= 3, f"only {len(during_save)} kills landed during a save: {trials}"
    assert len(signals) >= 3, trials
    shutil.rmtree(tmp_path / "jax_cache", ignore_errors=True)
