"""The GPU command (python -m experiments.accelerator): its dry run on the CPU, its epoch planning,
packing, JUnit counting and the wheel check, so that it works the day a GPU is lent."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from experiments.accelerator.__main__ import Progress, junit_counts, pack, plan_epochs
from experiments.accelerator.check_wheels import check

ROOT = Path(__file__).resolve().parents[1]


def test_plan_epochs_keeps_a_run_that_fits_and_cuts_one_that_does_not():
    # 100 steps/s between the samples; 1000 steps left; 15% margin: 11.5 s needed.
    samples = [Progress(10.0, 100), Progress(20.0, 1100), Progress(30.0, 2100)]
    assert plan_epochs(samples, total_steps=3100, steps_per_epoch=500, epochs=6, left_s=12.0, restart_s=8.0) is None
    # 200 s left, a restart costs 8 s; an epoch is 500 / 100 * 1.15 = 5.75 s: floor(192 / 5.75) = 33,
    # but never more than the config's epochs less one (else the full run would have fitted).
    assert plan_epochs(samples, total_steps=50_000, steps_per_epoch=500, epochs=100, left_s=200.0, restart_s=8.0) == 33
    assert plan_epochs(samples, total_steps=50_000, steps_per_epoch=500, epochs=20, left_s=200.0, restart_s=8.0) == 19
    assert plan_epochs(samples, total_steps=50_000, steps_per_epoch=500, epochs=100, left_s=10.0, restart_s=8.0) == 0
    with pytest.raises(ValueError, match="two samples"):
        plan_epochs(samples[:1], total_steps=10, steps_per_epoch=5, epochs=2, left_s=1.0, restart_s=1.0)


# A stand-in for `jaxcnn train`: logs every 10 steps at about 200 steps/s, as the loop writes
# timings.jsonl, then run.json; argv: workdir, epochs (0: the config's 30), steps per epoch.
FAKE_TRAINER = """
import json, sys, time
from pathlib import Path
workdir, epochs, per_epoch = Path(sys.argv[1]), int(sys.argv[2]) or 30, int(sys.argv[3])
workdir.mkdir(parents=True)
with open(workdir / "timings.jsonl", "w") as f:
    for step in range(10, epochs * per_epoch + 1, 10):
        time.sleep(0.05)
        f.write(json.dumps({"step": step, "seconds": 0.05}) + "\\n")
        f.flush()
(workdir / "run.json").write_text(json.dumps({"command": f"jaxcnn train --epochs {epochs}",
                                              "final_metrics": {"status": "completed", "step": step}}))
"""


def test_train_phase_restarts_with_the_epochs_that_fit(tmp_path, monkeypatch):
    from experiments.accelerator import __main__ as accelerator

    monkeypatch.setattr(accelerator, "OBSERVE_S", 1.0)
    monkeypatch.setattr(accelerator, "_config_numbers", lambda dry: (30, 100, 3000))  # 15 s at 200 steps/s
    monkeypatch.setattr(accelerator, "_train_command", lambda workdir, dry, epochs: [
        sys.executable, "-c", FAKE_TRAINER, str(workdir), str(epochs or 0), "100"])
    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    workdir = tmp_path / "runs" / "fashion_resnet18"
    result = accelerator.run_train(tmp_path, workdir, 10.0, False, tmp_path / "data")
    epochs = result["epochs"]
    # About (10 - 1.5 s seen - start-up) / (0.5 s * 1.15) epochs fit; the full 30 do not.
    assert 5 <= epochs <= 16, result
    assert result["first_run"]["stopped"].startswith("the full 30 epochs would not end in the budget"), result
    assert result["trained"] == f"{epochs} of the config's 30 epochs (what fit the budget)", result
    assert result["final_metrics"] == {"status": "completed", "step": epochs * 100}
    assert "restarted with --config.num_epochs" in (tmp_path / "train.log").read_text()
    # A workdir that exists is never trained over nor deleted.
    assert "exists" in accelerator.run_train(tmp_path, workdir, 10.0, False, tmp_path / "data")["error"]
    assert (workdir / "run.json").exists()


def test_pack_leaves_out_checkpoints(tmp_path):
    run = tmp_path / "runs" / "fashion_resnet18"
    (run / "checkpoints" / "100").mkdir(parents=True)
    (run / "checkpoints" / "100" / "state").write_bytes(b"x" * 1000)
    (run / "plots").mkdir()
    (run / "run.json").write_text("{}")
    (run / "plots" / "loss.png").write_bytes(b"png")
    with tarfile.open(pack(run, tmp_path / "run.tar.gz")) as tar:
        names = sorted(tar.getnames())
    assert names == ["fashion_resnet18", "fashion_resnet18/plots", "fashion_resnet18/plots/loss.png",
                     "fashion_resnet18/run.json"]


def test_junit_counts_sums_the_suites(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/>'
                   '<testsuite tests="3" failures="0" errors="1" skipped="0"/></testsuites>')
    assert junit_counts(xml) == {"tests": 8, "failures": 1, "errors": 1, "skipped": 2}
    assert junit_counts(tmp_path / "absent.xml") is None


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    meta = "\n".join([f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta + "\n")


def test_check_wheels_finds_unmet_needs_extras_and_doubles(tmp_path):
    # numpy is in the image; array-record is in the folder; portpicker is neither.
    _wheel(tmp_path, "grain", "0.2.18", ["numpy", "array-record", "portpicker", 'pytest ; extra == "testing"',
                                          'colorama ; sys_platform == "win32"'])
    _wheel(tmp_path, "array_record", "0.8.6", ["etils[epath]"])
    # etils is in the image, but its epath extra asks for importlib_resources, which is not.
    _wheel(tmp_path, "etils", "1.15.0", ['importlib_resources ; extra == "epath"', 'tqdm ; extra == "epy"'])
    problems = sorted(check(tmp_path))
    assert len(problems) == 2, problems
    assert problems[0].startswith('etils needs importlib_resources; extra == "epath"'), problems
    assert problems[1].startswith("grain needs portpicker"), problems
    _wheel(tmp_path, "portpicker", "1.6.0", ["psutil"])
    _wheel(tmp_path, "importlib_resources", "6.5.2", [])
    assert check(tmp_path) == []
    _wheel(tmp_path, "portpicker", "1.5.0", [])
    assert check(tmp_path) == [f"two versions of portpicker: {['portpicker-1.5.0-py3-none-any.whl', 'portpicker-1.6.0-py3-none-any.whl']}"]


@pytest.mark.slow
def test_dry_run_writes_every_phase_and_packs_a_collectable_run(tmp_path, data_dir):
    out, run = tmp_path / "out", tmp_path / "runs" / "fashion_resnet18"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "experiments.accelerator", "--out", str(out), "--dry-run", "--pack",
                           "--data-dir", data_dir, "--budget-s", "300", "--workdir", str(run)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # At most 8 files in one folder: what the GPU machines send back.
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() for f in files) and len(files) <= 8, files
    summary = json.loads((out / "summary.json").read_text())
    tests = summary["phases"]["tests"]
    assert tests["counts"] == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}, tests
    assert tests["settings"]["JAXCNN_TEST_TORCH_DEVICE"] == "cpu"

    bench = json.loads((out / "bench.json").read_text())
    frameworks = bench["resnet50"]["frameworks"]
    assert set(frameworks) == {"jaxcnn", "torch"}
    assert all(f["images_per_s_best"] > 0 for f in frameworks.values())
    assert bench["resnet50"]["flops_per_step"] > 0 and bench["matmul"]["tflops"] > 0
    assert {row["framework"] for row in bench["train_steps"]} == {"jaxcnn", "torch NCHW"}
    table = (out / "bench.md").read_text()
    assert f"Device: **{bench['device']}**" in table and "| jaxcnn / PyTorch" in table

    train = summary["phases"]["train"]
    assert train["final_metrics"]["status"] == "completed", train
    assert (run / "checkpoints").is_dir()
    with tarfile.open(out / "fashion_resnet18.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    from experiments.results import _row

    unpacked = tmp_path / "unpacked" / "fashion_resnet18"
    assert not (unpacked / "checkpoints").exists()
    row = _row(unpacked)
    assert row is not None and row["metric"] == "test accuracy" and row["command"].startswith("jaxcnn train")


def test_code_version_names_the_sent_commit_when_the_copy_has_no_git(monkeypatch):
    from jaxcnn import launch

    monkeypatch.setenv("JAXCNN_GIT_COMMIT", "0123abcd")
    monkeypatch.setattr(launch, "_git", lambda *args: None)  # a tree copied without .git
    assert launch.code_version() == {"git_commit": "0123abcd", "git_dirty": None}
    monkeypatch.setattr(launch, "_git", lambda *args: "feedbeef" if args[0] == "rev-parse" else "")
    assert launch.code_version() == {"git_commit": "feedbeef", "git_dirty": False}  # git wins where there is one


def test_full_sizes_refuse_to_start_without_a_gpu(tmp_path):
    from experiments.accelerator.__main__ import main

    with pytest.raises(SystemExit, match="JAX sees no GPU"):
        main(["--out", str(tmp_path), "--phases", "bench"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preflight"]["jax_backend"] == "cpu" and summary["phases"] == {}
    assert "JAX sees no GPU" in summary["error"]
