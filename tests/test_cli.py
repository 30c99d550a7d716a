"""The jaxcnn command: config loading, overrides, error exits, and a real train/eval/summary."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxcnn import cli
from jaxcnn.launch import ConfigError, apply_overrides, load_config_file
from jaxcnn.train import default_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "configs" / "mnist_simple_cnn.py")


def test_overrides_are_typed_and_nested():
    config = default_config()
    apply_overrides(config, [
        "--config.optimizer.learning_rate=0.5", "--config.num_epochs=3", "--config.optimizer.nesterov=true",
        "--config.model.name=LeNet5", "--config.augment=random_crop,random_flip",
    ])
    assert config.optimizer.learning_rate == 0.5 and config.num_epochs == 3
    assert config.optimizer.nesterov is True and config.model.name == "LeNet5"
    assert tuple(config.augment) == ("random_crop", "random_flip")


@pytest.mark.parametrize(
    "override,match",
    [
        ("--config.learning_rate=0.1", r"unknown field 'learning_rate' in config"),
        ("--config.optimizer.lr=0.1", r"unknown field 'lr' in optimizer"),
        ("--config.num_epochs=three", r"--config.num_epochs='three': expected an int"),
        ("--config.optimizer.nesterov=maybe", r"expected a bool"),
        ("--config.optimizer=adam", r"is a group of fields"),
        ("--num_epochs=3", r"must look like --config.field=value"),
    ],
)
def test_bad_overrides_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(default_config(), [override])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config_file(str(tmp_path / "missing.py"))
    bad = tmp_path / "nofunc.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"has no get_config\(\) function"):
        load_config_file(str(bad))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--config", "nope.py", "--workdir", "w"], "config file 'nope.py' does not exist"),
        (["train", "--config", CONFIG, "--workdir", "w", "--config.optimizer.lr=1"], "unknown field 'lr'"),
        (["train", "--config", CONFIG, "--workdir", "w", "--config.batch_size=big"], "expected an int"),
        (["train", "--config", CONFIG, "--workdir", "w", "--config.batch_size=0"], "config.batch_size must be an int >= 1"),
        (["train", "--config", CONFIG, "--workdir", "w", "--epochs=3"], "unrecognized arguments: --epochs=3"),
        (["eval", "--workdir", "/nonexistent/run"], "has no config.json"),
    ],
)
def test_cli_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_summary_command(capsys, data_dir):
    assert cli.main(["summary", "--config", CONFIG]) == 0
    out = capsys.readouterr().out
    assert "1,668,490" in out and "conv1" in out


def test_console_script_trains_resumes_and_evaluates(tmp_path, data_dir, capsys):
    """The installed `jaxcnn` entry point, end to end: train (smoke), rerun resumes, eval."""
    workdir = tmp_path / "run"
    exe = Path(sys.executable).with_name("jaxcnn")
    command = [str(exe), "train", "--config", f"{CONFIG}:smoke", "--workdir", str(workdir)]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    run = json.loads((workdir / "run.json").read_text())
    for key in ("jax", "flax", "optax", "orbax_checkpoint", "git_commit", "git_dirty", "num_devices", "seed",
                "wall_time_s", "images_per_sec", "final_metrics", "xla_compiler_options"):
        assert key in run, key
    # The command says which XLA options it compiles with, and how to turn them off.
    options = run["xla_compiler_options"]
    assert (options is not None) == (jax.default_backend() == "cpu")
    if options:
        assert f"XLA options {options}" in first.stdout and "--config.xla_options=none" in first.stdout
    # ... and that the process keeps the memory it frees (Linux/glibc), and how to opt out.
    assert run["host_memory"].split(" ")[0] in ("keep", "default")
    assert f"Host memory: {run['host_memory']}" in first.stdout
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert run["host_memory"].startswith("keep") and "JAXCNN_HOST_MEMORY=default" in run["host_memory"]
    assert run["config_name"] == "mnist_simple_cnn"
    assert (workdir / "config.json").exists() and (workdir / "metrics.jsonl").exists()
    assert (workdir / "plots" / "loss.png").exists()
    before = (workdir / "metrics.jsonl").read_text()
    # Rerunning on a finished workdir resumes from its last checkpoint and changes nothing.
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert (workdir / "metrics.jsonl").read_text() == before
    out = subprocess.run([str(exe), "eval", "--workdir", str(workdir), "--checkpoint", "latest"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    evaluated = json.loads(out[out.index("{"):])
    last_eval = [json.loads(line) for line in before.splitlines() if json.loads(line)["split"] == "test"][-1]
    assert evaluated["accuracy"] == pytest.approx(last_eval["accuracy"])
    # Another config on that workdir would mix two runs: refused (exit code 2) before any work.
    base = ["train", "--config", f"{CONFIG}:smoke", "--workdir", str(workdir)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base + ["--config.num_steps=99", "--config.dataset.train_split=train[:64]"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "holds checkpoints of a run with another config" in message
    assert "num_steps: 6 there, 99 now" in message and "'train[:256]' there, 'train[:64]' now" in message
    # Where files come from and how progress is shown may change: this rerun resumes.
    assert cli.main(base + ["--config.plots=False", "--config.dataset.worker_count=1"]) == 0
    assert (workdir / "metrics.jsonl").read_text() == before


def test_run_record_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A long run outlives commits made meanwhile: run.json keeps the code it started with."""
    import jaxcnn.train

    versions = iter([{"git_commit": "start", "git_dirty": False}, {"git_commit": "later", "git_dirty": True}])
    monkeypatch.setattr(cli, "code_version", lambda: next(versions))
    monkeypatch.setattr(jaxcnn.train, "train_and_evaluate", lambda config, workdir: {"status": "completed"})
    workdir = tmp_path / "run"
    workdir.mkdir()
    assert cli.main(["train", "--config", f"{CONFIG}:smoke", "--workdir", str(workdir)]) == 0
    run = json.loads((workdir / "run.json").read_text())
    assert (run["git_commit"], run["git_dirty"]) == ("start", False)
