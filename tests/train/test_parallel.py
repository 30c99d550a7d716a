"""The same step on 1..8 devices (jit sharding, shard_map, pmap) and on 2 processes.

The simulated CPU device count is fixed by ``XLA_FLAGS`` before JAX is imported, so the runs
happen in subprocesses (``distributed_worker.py``); the 8-device runs share one process. The
reference is the single-device run of the same global batches; BatchNorm running statistics
(synchronised across devices) are part of the comparison.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "distributed_worker.py")
LOOP_WORKER = os.path.join(HERE, "loop_worker.py")
MODES = ("jit", "shard_map", "pmap")


def _env(device_count: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={device_count}"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_worker(args: dict, device_count: int, timeout: float = 300, **env: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, WORKER, json.dumps(args)],
        env=_env(device_count, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(args["out"]) as f:
        return json.load(f)


def _assert_same_run(result: dict, reference: dict) -> None:
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(result["eval_loss_sum"], reference["eval_loss_sum"], rtol=2e-5)
    assert result["eval_count"] == reference["eval_count"]
    for got, want in zip(result["params"], reference["params"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(result["batch_stats"], reference["batch_stats"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    """One 8-device process: the 1-device reference, each mode on 8, save on 8 / restore on 2
    and 1, and a 4-device run (the reference of the two-process test)."""
    tmp = tmp_path_factory.mktemp("parallel")
    ckpt = str(tmp / "ckpt")
    runs = [{"mode": "none", "steps": 3}]
    runs += [{"mode": mode, "devices": 8, "steps": 3} for mode in MODES]
    runs += [
        {"mode": "jit", "devices": 8, "steps": 3, "save_dir": ckpt},
        {"mode": "shard_map", "devices": 2, "steps": 2, "restore_dir": ckpt},
        {"mode": "none", "steps": 2, "restore_dir": ckpt},
        {"mode": "jit", "devices": 4, "steps": 3},
    ]
    # AllConvNet with dropout (rate 0.5): the masks come from the global example index.
    dropout_ckpt = str(tmp / "dropout_ckpt")
    allconv = {"model": "allconv", "devices": 8, "evaluate": False}
    runs += [{**allconv, "mode": mode, "steps": 3} for mode in ("none", "jit", "shard_map")]
    runs += [
        {**allconv, "mode": "pmap", "steps": 2, "save_dir": dropout_ckpt},
        {**allconv, "mode": "shard_map", "devices": 2, "steps": 1, "restore_dir": dropout_ckpt},
    ]
    results = _run_worker({"out": str(tmp / "out.json"), "runs": runs}, device_count=8, timeout=600)
    names = ["reference", *MODES, "saved", "restored_on_2", "restored_on_1", "one_process_4"]
    names += ["dropout_reference", "dropout_jit", "dropout_shard_map", "dropout_pmap", "dropout_resumed"]
    return dict(zip(names, results, strict=True))


@pytest.mark.parametrize("mode", MODES)
def test_eight_devices_match_one(mode, eight_devices):
    result = eight_devices[mode]
    assert result["num_devices"] == 8 and result["mode"] == mode
    _assert_same_run(result, eight_devices["reference"])


@pytest.mark.parametrize("mode", MODES)
def test_dropout_masks_agree_in_every_mode(mode, eight_devices):
    """AllConvNet with dropout (rate 0.5): 8 devices in each mode give the losses of one device
    (pmap ran 2 of the 3 steps, then saved)."""
    result, reference = eight_devices[f"dropout_{mode}"], eight_devices["dropout_reference"]
    assert result["num_devices"] == 8 and result["mode"] == mode and reference["num_devices"] == 1
    np.testing.assert_allclose(result["losses"], reference["losses"][: len(result["losses"])], rtol=2e-5, atol=1e-6)
    if mode != "pmap":
        for got, want in zip(result["params"] + result["batch_stats"], reference["params"] + reference["batch_stats"],
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_dropout_resume_on_another_device_count_is_exact(eight_devices):
    """2 steps on 8 devices (pmap), saved, then 1 step on 2 devices (shard_map) == 3 steps on 1."""
    saved, resumed = eight_devices["dropout_pmap"], eight_devices["dropout_resumed"]
    reference = eight_devices["dropout_reference"]
    assert saved["step"] == 2 and resumed["step"] == 3 and resumed["num_devices"] == 2
    np.testing.assert_allclose(saved["losses"] + resumed["losses"], reference["losses"], rtol=2e-5, atol=1e-6)
    for got, want in zip(resumed["params"], reference["params"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_restore_on_another_device_count(eight_devices):
    """Saved after 3 steps on 8 devices (jit); restored on 2 devices (shard_map) and on 1."""
    on_two, on_one = eight_devices["restored_on_2"], eight_devices["restored_on_1"]
    assert eight_devices["saved"]["step"] == 3
    assert on_two["step"] == on_one["step"] == 5 and on_two["num_devices"] == 2
    _assert_same_run(on_two, on_one)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_two_processes(script: str, spec: dict) -> list[str]:
    """Runs ``script`` as processes 0 and 1 of a jax.distributed run (2 CPU devices each)."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, script, json.dumps({**spec, "process_id": i, "num_processes": 2, "port": port})],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


@pytest.mark.slow
def test_two_processes_match_one_process(eight_devices, tmp_path):
    """2 processes x 2 CPU devices (jax.distributed + gloo) == 1 process x 4 devices."""
    out = str(tmp_path / "multi.json")
    _launch_two_processes(
        WORKER, {"runs": [{"mode": "jit", "steps": 3}, {"mode": "shard_map", "steps": 3}], "out": out}
    )
    with open(out) as f:
        results = json.load(f)
    reference = eight_devices["one_process_4"]
    assert reference["num_devices"] == 4
    for result in results:
        assert result["num_devices"] == 4
        _assert_same_run(result, reference)


@pytest.mark.slow
def test_train_and_evaluate_on_two_processes(tmp_path):
    """The whole loop (per-process data shards, orbax checkpoints, metrics from process 0) on
    2 processes x 2 devices matches the same config on this test's single device."""
    sys.path.insert(0, HERE)
    import loop_worker

    reference = loop_worker.run(str(tmp_path / "single"))
    outputs = _launch_two_processes(LOOP_WORKER, {"workdir": str(tmp_path / "multi"), "parallel": "jit"})
    results = [json.loads(out.strip().splitlines()[-1].removeprefix("RESULT ")) for out in outputs]
    assert results[0] == results[1]  # every process returns the same final metrics
    for key, value in reference.items():
        if isinstance(value, float):
            np.testing.assert_allclose(results[0][key], value, rtol=1e-5, err_msg=key)
        else:
            assert results[0][key] == value, key
    with open(tmp_path / "single" / "metrics.jsonl") as f1, open(tmp_path / "multi" / "metrics.jsonl") as f2:
        single, multi = [json.loads(x) for x in f1], [json.loads(x) for x in f2]
    assert [(r["step"], r["split"]) for r in multi] == [(r["step"], r["split"]) for r in single]
    np.testing.assert_allclose([r["loss"] for r in multi], [r["loss"] for r in single], rtol=1e-5)
    assert sorted(int(d) for d in os.listdir(tmp_path / "multi" / "checkpoints") if d.isdigit()) == [3, 4, 6]
