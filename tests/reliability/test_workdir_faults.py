"""Workdir faults: two writers on one workdir, a dead holder's lock, a deleted or damaged config.json.

Each trial appends its outcome to the reliability results (see ``fault_tools.record``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import fault_tools
import pytest
from fault_tools import child_env, run_tiny, tiny_config

from jaxcnn.train.resume_checks import WorkdirFileError, check_resume_config, read_config_json
from jaxcnn.train.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLockedError

TEST = "tests/reliability/test_workdir_faults.py"


def record(fault: str, **details):
    """Records a trial of this file (see ``fault_tools.record``)."""
    return fault_tools.record(fault, test=TEST, **details)


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    run_tiny(workdir, tiny_config(num_steps=2))
    before = (workdir / "metrics.jsonl").read_bytes()
    with WorkdirLock(workdir):  # the first writer, still running
        started = time.monotonic()
        with pytest.raises(WorkdirLockedError, match=rf"process {os.getpid()} on host {socket.gethostname()}"):
            run_tiny(workdir, tiny_config(num_steps=4))
        waited = time.monotonic() - started
    assert (workdir / "metrics.jsonl").read_bytes() == before  # nothing of the first run touched
    assert waited < 5.0
    record("second train on a live workdir", detail=f"refused in {waited:.1f} s naming the holder's pid and host; "
           "metrics.jsonl untouched")


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jaxcnn.train.workdir_lock import WorkdirLock\n"
         "with WorkdirLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)", str(workdir)],
        env=child_env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError, match=rf"process {holder.pid} "):
            WorkdirLock(workdir).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == holder.pid  # the stale record is left
    result = run_tiny(workdir, tiny_config(num_steps=2))
    assert result["status"] == "completed"
    record("train after the lock holder was killed (kill -9)", detail="stale lock taken over; run completed")


def test_a_failed_start_leaves_no_empty_workdir(tmp_path):
    workdir = tmp_path / "new"
    with pytest.raises(ValueError, match="num_steps"):
        run_tiny(workdir, tiny_config(num_steps=0, num_epochs=0))
    assert not workdir.exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"workdir {afile} is a file"):
        run_tiny(afile, tiny_config())


def test_a_deleted_config_json_does_not_turn_off_the_resume_check(tmp_path):
    workdir = tmp_path / "run"
    run_tiny(workdir, tiny_config(num_steps=4))
    saved = (workdir / "config.json").read_text()
    (workdir / "config.json").unlink()
    other = tiny_config(num_steps=8, **{"optimizer.learning_rate": 0.5})
    with pytest.raises(ValueError, match=r"another config.*num_steps: 4 there, 8 now.*learning_rate"):
        run_tiny(workdir, other)
    assert not (workdir / "config.json").exists() or (workdir / "config.json").read_text() == saved
    run_tiny(workdir, tiny_config(num_steps=4))  # the same run: resumes and rewrites config.json
    assert json.loads((workdir / "config.json").read_text()) == json.loads(saved)
    record("config.json deleted, resumed with another learning rate and step count",
           detail="refused: the checkpoint's own config is compared; config.json rewritten from it")


def test_a_truncated_config_json_is_named(tmp_path, capsys):
    workdir = tmp_path / "run"
    run_tiny(workdir, tiny_config(num_steps=2))
    path = workdir / "config.json"
    path.write_text(path.read_text()[:120])
    for call in (lambda: check_resume_config(tiny_config(num_steps=2), workdir), lambda: read_config_json(workdir)):
        with pytest.raises(WorkdirFileError, match=rf"{path} is unreadable .*delete it"):
            call()
    from jaxcnn import cli

    with pytest.raises(SystemExit) as exit_info:  # the command: exit 2, the file named, no traceback
        cli.main(["eval", "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{path} is unreadable" in err and "Traceback" not in err
    record("truncated config.json (train and eval)", detail="error names the file and the way out")
