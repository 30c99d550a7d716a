"""What a ``kill -9`` must not leave behind: orphaned data workers, a doubled TensorBoard history.

Each trial appends its outcome to the reliability results (see ``fault_tools.record``).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter

import fault_tools
import pytest
from fault_tools import child_env, run_tiny, tiny_config

TEST = "tests/reliability/test_kill_leftovers.py"


def record(fault: str, **details):
    """Records a trial of this file (see ``fault_tools.record``)."""
    return fault_tools.record(fault, test=TEST, **details)


WORKERS_SCRIPT = """
import sys, time
import numpy as np
from jaxcnn.data import ArraySource, BatchLoader
source = ArraySource(np.zeros((64, 4, 4, 1), np.uint8), np.zeros(64, np.int32), num_classes=2)
it = iter(BatchLoader(source, 8, seed=0, num_epochs=None, worker_count=2))
next(it)
print("ready", flush=True)
time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_data_workers_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_SCRIPT], env=child_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        children = _children(parent.pid)  # the two workers and multiprocessing's resource tracker
        workers = [p for p in children if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
        assert len(workers) == 2, workers
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
    deadline = time.monotonic() + 30  # a worker may still be importing on a loaded machine
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in children if _alive(p)]
    for p in left:  # do not leak them into the rest of the suite
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes {left} (of workers {workers}) outlived their killed parent"
    record("data workers after kill -9 of their parent (dataset.worker_count=2)", detail="both grain workers exited with their parent")


def _events(folder) -> tuple[list[tuple[str, int]], int]:
    """``([(tag, step) of every scalar], number of cut-short tails)`` over all event files (TFRecord spec)."""
    from tensorboardX.proto import event_pb2

    scalars, cut = [], 0
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        offset = 0
        while offset < len(data):
            if offset + 12 > len(data):
                cut += 1
                break
            length = struct.unpack("<Q", data[offset:offset + 8])[0]
            if offset + 12 + length + 4 > len(data):
                cut += 1
                break
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            scalars += [(value.tag, event.step) for value in event.summary.value]
            offset += 12 + length + 4
    return scalars, cut


@pytest.mark.slow
def test_a_resumed_run_leaves_one_consistent_tensorboard_history(tmp_path):
    import shutil

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    config = tiny_config(tensorboard=True, num_steps=8)
    run_tiny(straight, config)
    run_tiny(killed, config)
    # As if killed after step 8 with its last complete checkpoint at step 4: the events of steps
    # 5-8 are on disk, the checkpoints 6 and 8 are not, and the last event record is cut short.
    for step in (6, 8):
        shutil.rmtree(killed / "checkpoints" / str(step))
    (event_file,) = os.listdir(killed / "tensorboard")
    with open(killed / "tensorboard" / event_file, "ab") as f:
        f.write(struct.pack("<Q", 50) + b"\0" * 20)
    run_tiny(killed, config)
    scalars, cut = _events(killed / "tensorboard")
    expected, _ = _events(straight / "tensorboard")
    doubled = [key for key, n in Counter(scalars).items() if n > 1]
    assert cut == 0 and not doubled, (cut, doubled[:10])
    assert sorted(scalars) == sorted(expected)
    record("TensorBoard history after kill -9 past the last checkpoint and resume",
           detail="one history: no step doubled, no cut-short record, same tags and steps as an uninterrupted run")
