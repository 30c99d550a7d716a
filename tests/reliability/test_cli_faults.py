"""The command from outside: typos, empty or wrong workdirs, missing data, signals, eval elsewhere.

Each must end with one clear message and a documented exit code (``jaxcnn.cli.EXIT_CODES``):
2 for usage, 1 for runtime failures, 75 for a preempted run, 130 for a second Ctrl-C; a
traceback only with ``--verbose``; no empty workdir left behind.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import fault_tools
import pytest
from fault_tools import KILL_CONFIG, ROOT, Child, child_env, last_json, write_synthetic_mnist

from jaxcnn import cli

TEST = "tests/reliability/test_cli_faults.py"


def record(fault: str, **details):
    """Records a trial of this file (see ``fault_tools.record``)."""
    return fault_tools.record(fault, test=TEST, **details)

SMOKE = str(ROOT / "experiments" / "configs" / "mnist_simple_cnn.py")


def _exit(argv, capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv,message", [
    (["train", "--config", f"{SMOKE}:smok", "--workdir", "{tmp}/w"], r"config argument .*:smok changes nothing"
     r".*known arguments: \['smoke'\]"),
    (["train", "--config", SMOKE, "--workdir", ""], "--workdir is empty"),
    (["train", "--config", SMOKE, "--workdir", "{tmp}/file"], "is a file, not a folder"),
    (["eval", "--workdir", "{tmp}/file"], "is a file, not a folder"),
    (["summary", "--config", SMOKE, "--input-shape", "1,28"], r"--input-shape='1,28' must be 4 positive ints"),
    (["summary", "--config", SMOKE, "--input-shape", "1,x,28,1"], r"must be comma-separated ints"),
], ids=["unknown :arg", "empty workdir", "train workdir is a file", "eval workdir is a file", "input shape rank",
        "input shape text"])
def test_usage_errors_exit_2_with_one_message(argv, message, tmp_path, capsys):
    import re

    (tmp_path / "file").write_text("not a folder")
    code, _, err = _exit([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "w").exists()
    record(f"CLI usage error: {' '.join(argv[:1] + argv[-2:])}", detail="exit 2, one message")


def test_missing_data_is_one_message_exit_1_and_leaves_no_workdir(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(empty))
    workdir = tmp_path / "run"
    argv = ["train", "--config", str(KILL_CONFIG), "--workdir", str(workdir), f"--config.dataset.data_dir={empty}"]
    code, _, err = _exit(argv, capsys)
    assert code == 1 and "jaxcnn train: error: DatasetNotFoundError" in err and str(empty) in err
    assert "Traceback" not in err and "--verbose shows the traceback" in err
    assert not workdir.exists()
    code, _, err = _exit(argv + ["--verbose"], capsys)
    assert code == 1 and "Traceback" in err
    record("missing dataset files", detail="exit 1, one message naming the folders searched; no workdir left")


def test_help_documents_overrides_the_arg_suffix_and_exit_codes(capsys):
    code, out, _ = _exit(["train", "--help"], capsys)
    assert code == 0
    for needle in ("--config.a.b=value", "path.py:arg", ":smoke", "docs/cli.md", "75", "--verbose"):
        assert needle in out, needle


def test_progress_bar_is_off_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    import jaxcnn.train

    seen = {}

    def fake_train(config, workdir):
        seen["progress_bar"] = config.progress_bar
        return {"status": "completed"}

    monkeypatch.setattr(jaxcnn.train, "train_and_evaluate", fake_train)
    assert not sys.stderr.isatty()
    (tmp_path / "run").mkdir()
    assert _exit(["train", "--config", SMOKE, "--workdir", str(tmp_path / "run")], capsys)[0] == 0
    assert seen["progress_bar"] is False
    assert _exit(["train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), "--config.progress_bar=true"],
                 capsys)[0] == 0
    assert seen["progress_bar"] is True


def test_eval_on_another_split_and_folder_without_read_only_noise(tmp_path, capsys, caplog):
    from jaxcnn.launch import load_config_file
    from jaxcnn.train import train_and_evaluate

    data = write_synthetic_mnist(tmp_path / "data", n_train=64, n_test=32, size=16)
    config = load_config_file(str(KILL_CONFIG))
    config.dataset.data_dir, config.num_steps, config.eval_every_steps = str(data), 4, 2
    config.checkpoint.keep = 1
    train_and_evaluate(config, tmp_path / "run")
    moved = tmp_path / "moved"
    (data).rename(moved)  # evaluated on another machine: the data lives elsewhere
    code, out, err = _exit(["eval", "--workdir", str(tmp_path / "run"), "--split", "train[:32]",
                            f"--config.dataset.data_dir={moved}"], capsys)
    assert code == 0, err
    result = last_json(out)
    ranked = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max((r for r in ranked if r["split"] == "test"), key=lambda r: (r["accuracy"], r["step"]))  # ties: the newer is kept
    assert (result["split"], result["step"], result["best_metric"]) == ("train", best["step"], "accuracy")
    assert "Given directory is read only" not in caplog.text + err
    code, _, err = _exit(["eval", "--workdir", str(tmp_path / "run"), "--config.seed=3"], capsys)
    assert code == 2 and "eval takes only --config.dataset.*" in err and "--config.seed=3" in err
    record("eval of a finished run on another split and data folder", detail="--split and --config.dataset.* "
           "honoured; the best step as ranked by the run")


@pytest.mark.slow
def test_signals_acknowledged_at_once_preempted_exits_75_second_ctrl_c_aborts(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data")
    env = child_env(tmp_path / "cache")
    outcomes = {}
    for name, signals in (("once", 1), ("twice", 2)):
        command = [sys.executable, "-m", "jaxcnn.cli", "train", "--config", str(KILL_CONFIG), "--workdir",
                   str(tmp_path / name), f"--config.dataset.data_dir={data}"]
        child = Child(command, env, tmp_path, name)
        deadline = time.monotonic() + 120
        while "Data: mnist" not in child.stdout:  # start-up: data loaded, steps not compiled yet
            assert child.poll() is None and time.monotonic() < deadline, child.stderr
            time.sleep(0.02)
        child.send(signal.SIGINT)
        sent = time.monotonic()
        while "Received SIGINT" not in child.stderr and time.monotonic() - sent < 5:
            time.sleep(0.02)
        acknowledged = time.monotonic() - sent
        assert "Received SIGINT" in child.stderr and acknowledged < 5
        if signals == 2:
            child.send(signal.SIGINT)
        outcomes[name] = (child.wait(120), acknowledged, child)
    code, _, once = outcomes["once"]
    assert code == cli.EXIT_PREEMPTED, once.stderr
    assert last_json(once.stdout)["status"] == "preempted"
    code, _, twice = outcomes["twice"]
    assert code == cli.EXIT_ABORTED, twice.stderr
    assert "aborted" in twice.stderr and "Traceback" not in twice.stderr
    record("Ctrl-C during start-up", trials=2, detail=f"acknowledged in {outcomes['once'][1]:.2f} s; one: exit 75 "
           "with a checkpoint; two: exit 130")
