"""The benchmark suite runs end to end (``--quick``) and writes well-formed JSON.

No timing assertions: speed depends on the machine and its load. This checks that every
part ran, that the numbers are positive and finite, and that the report renders from the
JSON alone.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_benchmark_writes_schema(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Train step, images/s" in proc.stdout

    data = json.loads(out.read_text())
    assert data["schema"] == "jaxcnn-benchmarks/1"
    assert data["settings"]["quick"] is True
    assert data["environment"]["jax_backend"]
    assert _positive(data["matmul"]["reference_gflops"])

    train = data["train"]
    assert {row["model"] for row in train} == {"SimpleCNN", "LeNet5", "ResNet18", "UNet"}
    for row in train:
        assert _positive(row["images_per_s_best"]) and _positive(row["images_per_s_median"])
        assert row["images_per_s_best"] >= row["images_per_s_median"]
        assert all(_positive(t) for t in row["rounds_s"])
        assert _positive(row["memory"]["bytes"]), row["memory"]
        if not row["framework"].startswith("torch"):
            assert _positive(row["compile_s"])
            assert _positive(row["vs_best_torch"]["speedup_best"])
    frameworks = {row["framework"] for row in train if row["model"] == "SimpleCNN"}
    assert {"jaxcnn", "jaxcnn[conv=lax]", "jaxcnn[xla defaults]", "flax.linen", "lax", "torch NCHW",
            "torch channels_last"} <= frameworks

    micro = data["micro"]
    ops = {row["op"] for row in micro}
    assert {"conv 3x3", "conv 3x3 stride 2", "conv 1x1", "conv 3x3 dilation 2", "depthwise 3x3",
            "conv_transpose 2x2 stride 2", "max_pool 2x2", "avg_pool 2x2"} <= ops
    for row in micro:
        assert _positive(row["ms_best"])
        if row["kind"] in ("conv", "conv_transpose"):
            assert _positive(row["gflops_per_s_best"]) and _positive(row["fraction_of_matmul"])
        if row["framework"] == "jaxcnn":
            # The fast paths are checked against the lax reference in the same run.
            assert row["max_abs_diff_vs_lax_relative"] < 1e-4, row

    passes = data["passes"]
    assert {(row["op"], row["pass"]) for row in passes} >= {
        ("conv 3x3", "forward"), ("conv 3x3", "input gradient"), ("conv 3x3", "kernel gradient"),
        ("conv_transpose 3x3 stride 2", "input gradient"), ("depthwise 3x3", "kernel gradient"),
    }
    for row in passes:
        assert _positive(row["ms_best"]) and row["ms_best"] <= row["ms_median"]
        if row["framework"] == "jaxcnn":
            # Each pass of the fast paths matches the same pass of impl="lax" in the same run.
            assert row["max_abs_diff_vs_lax_relative"] < 1e-4, row
            assert _positive(row["vs_best_torch"]["speedup_best"])

    gpu = data["gpu"]
    assert "skipped" in gpu or _positive(gpu["images_per_s_best"])

    # The report renders from the JSON alone, as markdown too.
    report = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.report", "--markdown", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert "| SimpleCNN |" in report.stdout and "| conv 3x3 |" in report.stdout
    assert "| conv 3x3 | kernel gradient |" in report.stdout


def test_performance_page_block_is_replaced_and_the_rest_kept(tmp_path):
    from experiments.benchmarks import report

    page = tmp_path / "performance.md"
    page.write_text("# title\n\nbefore\n<!-- performance -->\nold table\n<!-- /performance -->\nafter\n")
    report.write_into_page("| a |\n|---|\n| 1 |", page)
    assert page.read_text() == "# title\n\nbefore\n<!-- performance -->\n| a |\n|---|\n| 1 |\n<!-- /performance -->\nafter\n"
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="must hold one"):
        report.write_into_page("x", page)


def test_readme_summary_gives_the_train_step_ratios():
    from experiments.benchmarks import report

    data = {"environment": {"cpu": "CPU", "cpu_count": 2, "date": "2026-01-02T00:00:00"}, "train": [
        {"model": "M", "batch": 4, "framework": "jaxcnn", "images_per_s_best": 300.0,
         "vs_best_torch": {"torch": "torch NCHW", "speedup_best": 1.5}},
        {"model": "M", "batch": 4, "framework": "flax.linen", "images_per_s_best": 120.0},
        {"model": "M", "batch": 4, "framework": "torch NCHW", "images_per_s_best": 200.0},
    ]}
    table = report.ratio_table(data)
    assert "| M | 4 | 300 | 2.50x | 1.50x |" in table  # 300 / 120 and 300 / 200
    assert "CPU x 2, 2026-01-02" in table


def test_the_performance_page_holds_the_generated_block():
    from experiments.benchmarks import report

    content = report.PERFORMANCE_PAGE.read_text()
    assert all(content.count(marker) == 1 for marker in report.MARKERS)
    readme = report.README.read_text()
    assert all(readme.count(marker) == 1 for marker in report.README_MARKERS)


def test_profile_sums_operation_events_per_step_and_by_kind():
    from experiments.benchmarks.profile import by_kind, op_times

    events = [
        {"ph": "X", "name": "transpose_copy_fusion.45", "dur": 3000},
        {"ph": "X", "name": "transpose_copy_fusion.45", "dur": 1000},
        {"ph": "X", "name": "transpose_copy_fusion", "dur": 2000},
        {"ph": "X", "name": "convolution.3", "dur": 500},
        {"ph": "i", "name": "convolution.3", "dur": 9000},  # not a complete event
        {"ph": "X", "name": "$train_step.py:154 run", "dur": 9000},  # a Python frame
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9000},  # the executor's span
    ]
    times = op_times(events, steps=2)
    assert times == {"transpose_copy_fusion.45": 2.0, "transpose_copy_fusion": 1.0, "convolution.3": 0.25}
    assert by_kind(times) == {"transpose_copy_fusion": 3.0, "convolution": 0.25}


@pytest.mark.slow
def test_profile_command_traces_a_step(tmp_path):
    out = tmp_path / "prof.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.profile", "--model", "LeNet5", "--batch", "4",
         "--steps", "2", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["model"], result["batch"], result["steps"]) == ("LeNet5", 4, 2)
    assert _positive(result["step_ms"]) and result["ops_ms"]
    assert all(_positive(ms) for ms in result["kinds_ms"].values())
    # Kinds regroup the same operations: their totals agree.
    assert math.isclose(sum(result["kinds_ms"].values()), sum(result["ops_ms"].values()), rel_tol=1e-9)
    assert "by kind:" in proc.stdout


def test_profile_rejects_an_unknown_model_and_empty_runs():
    from experiments.benchmarks.profile import profile

    with pytest.raises(ValueError, match="unknown model 'VGG'"):
        profile("VGG", 4, 1)
    with pytest.raises(ValueError, match="steps=0"):
        profile("LeNet5", 4, 0)
