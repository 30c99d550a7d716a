"""Collects finished runs into ``experiments/results/`` and regenerates ``experiments/RESULTS.md``.

    python -m experiments.results runs/mnist_simple_cnn [runs/other ...]   # collect, then regenerate
    python -m experiments.results                                         # regenerate only

For each workdir it copies the small artefacts that prove a figure (``config.json``,
``run.json``, ``metrics.jsonl``, ``timings.jsonl`` and ``plots/``; never checkpoints) into
``experiments/results/<config name>/``. The table is written from those files alone: no
figure in RESULTS.md is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# predictions.json: a detection run's COCO results, so anyone can recompute its mAP.
ARTEFACTS = ("config.json", "run.json", "metrics.jsonl", "timings.jsonl", "predictions.json")

# The headline metric of each task, as the training loop names it in metrics.jsonl.
HEADLINE = {
    "classification": ("accuracy", "test accuracy", lambda v: f"{100 * v:.2f}%"),
    "segmentation": ("mean_iou", "mean IoU", lambda v: f"{v:.4f}"),
    "regression": ("mae", "mean absolute error", lambda v: f"{v:.3f}"),
    "detection": ("mAP", "mAP@[.5:.95]", lambda v: f"{v:.4f}"),
}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def collect(workdir: Path) -> Path:
    """Copies a workdir's artefacts to ``results/<workdir name>/``.

    The workdir's name, not the config's, names the result: one config file can have
    several stages (``transfer_fashion_to_mnist.py:frozen``), each run in its own workdir.
    """
    if not (workdir / "run.json").exists():
        raise FileNotFoundError(f"{workdir} has no run.json; is it a finished jaxcnn train workdir?")
    target = RESULTS / workdir.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in ARTEFACTS:
        if (workdir / file).exists():
            shutil.copy2(workdir / file, target / file)
    if (workdir / "plots").is_dir():
        shutil.copytree(workdir / "plots", target / "plots")
    return target


def _row(folder: Path) -> dict | None:
    run_path = folder / "run.json"
    if not run_path.exists():
        return None
    run = json.loads(run_path.read_text())
    config = json.loads((folder / "config.json").read_text())
    key, label, fmt = HEADLINE[config.get("task", "classification")]
    evals = [m for m in _read_jsonl(folder / "metrics.jsonl") if m.get("split") != "train" and key in m]
    if not evals:
        return None
    last = evals[-1]
    to_99 = "-"
    if key == "accuracy":
        first = next((m for m in evals if m[key] >= 0.99), None)
        if first is not None:
            # Training seconds up to that evaluation, summed from the logged intervals.
            seconds = sum(t["seconds"] for t in _read_jsonl(folder / "timings.jsonl") if t["step"] <= first["step"])
            to_99 = f"step {first['step']}, {seconds:.0f} s"
    epochs = last.get("epoch")
    return {
        "name": folder.name,
        "metric": label,
        "raw": last[key],
        "format": fmt,
        "value": fmt(last[key]),
        "epochs": f"{epochs:.2f}".rstrip("0").rstrip(".") if isinstance(epochs, float) else epochs,
        "steps": last.get("step"),
        "wall": f"{run['wall_time_s'] / 60:.1f} min",
        "to_99": to_99,
        "device": f"{run.get('num_devices', '?')} x {run.get('device_kind', '?')}",
        "commit": (run.get("git_commit") or "?")[:8] + ("+dirty" if run.get("git_dirty") else ""),
        "command": run.get("command", ""),
    }


# Runs of one config that differ only in --config.seed are collected as <name>_seed<k>.
SEED_RUN = re.compile(r"^(?P<config>.+)_seed(?P<seed>\d+)$")


def seed_means(rows: list[dict]) -> list[dict]:
    """One row per config with runs over two or more seeds: the mean, sample standard
    deviation, minimum and maximum of their headline figures."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        match = SEED_RUN.match(r["name"])
        if match:
            groups.setdefault(match["config"], []).append(r)
    means = []
    for config, runs in sorted(groups.items()):
        if len(runs) < 2:
            continue
        values = [r["raw"] for r in runs]
        fmt = runs[0]["format"]
        means.append({
            "config": config,
            "metric": runs[0]["metric"],
            "seeds": ", ".join(SEED_RUN.match(r["name"])["seed"] for r in runs),
            "mean": fmt(statistics.fmean(values)),
            "std": fmt(statistics.stdev(values)),
            "min": fmt(min(values)),
            "max": fmt(max(values)),
        })
    return means


def write_table(results: Path = RESULTS, path: Path = HERE / "RESULTS.md") -> Path:
    rows = [r for r in (_row(f) for f in sorted(results.iterdir()) if f.is_dir()) if r] if results.exists() else []
    lines = [
        "# Results",
        "",
        "Generated by `python -m experiments.results` from the run artefacts under",
        "`experiments/results/<name>/` (config.json, run.json, metrics.jsonl, plots); do not edit",
        "by hand. Each figure is the last evaluation of the run on the test split; \"time to 99%\" is",
        "the first evaluation at >= 99% test accuracy and the training seconds logged up to it.",
        "",
        "| config | metric | value | epochs | steps | wall time | time to 99% | devices | commit | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['metric']} | {r['value']} | {r['epochs']} | {r['steps']} | {r['wall']} | {r['to_99']} | "
            f"{r['device']} | {r['commit']} | `{r['command']}` |"
        )
    means = seed_means(rows)
    if means:
        lines += [
            "",
            "## Over seeds",
            "",
            "Runs of one config with different `--config.seed` (workdirs `<config>_seed<k>`): the mean,",
            "sample standard deviation, minimum and maximum of the figures above.",
            "",
            "| config | metric | seeds | mean | std | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in means:
            lines.append(
                f"| {m['config']} | {m['metric']} | {m['seeds']} | {m['mean']} | {m['std']} | {m['min']} | {m['max']} |"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.results", description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="*", help="finished `jaxcnn train` workdirs to collect first")
    for workdir in parser.parse_args(argv).workdirs:
        print(f"collected {collect(Path(workdir))}")
    print(f"wrote {write_table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
