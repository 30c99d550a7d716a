"""Collects finished runs into ``experiments/results/`` and regenerates ``experiments/RESULTS.md``.

    python -m experiments.results runs/mnist_simple_cnn [runs/other ...]   # collect, then regenerate
    python -m experiments.results                                         # regenerate only

For each workdir it copies the small artefacts that prove a figure (``config.json``,
``run.json``, ``metrics.jsonl``, ``timings.jsonl`` and ``plots/``; never checkpoints) into
``experiments/results/<config name>/``. The tables are written from those files alone: no
figure in RESULTS.md is typed by hand.

Task artefacts, collected when the workdir has them:

* detection: ``predictions.json`` (COCO results of the last evaluation) and
  ``predict/inference.json``, the throughput that ``jaxcnn predict --workdir W --split ...
  --out W/predict`` measured (it becomes ``inference.json``);
* generation: ``sample_quality.json`` (written by ``jaxcnn eval`` with
  ``task_options.classifier_workdir``), ``sampler_comparison.json`` (``python -m
  experiments.sampler_comparison``), ``samples.npz`` and ``samples.png`` (``jaxcnn sample
  ... --out W/samples.npz``).
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
ARTEFACTS = ("config.json", "run.json", "metrics.jsonl", "timings.jsonl", "predictions.json",
             "sample_quality.json", "sampler_comparison.json", "samples.npz", "samples.png")
# Files in a subfolder of the workdir, copied under another name: (source, name in results/).
NESTED_ARTEFACTS = (("predict/inference.json", "inference.json"),)

# The headline metric of each task, as the training loop names it in metrics.jsonl.
HEADLINE = {
    "classification": ("accuracy", "test accuracy", lambda v: f"{100 * v:.2f}%"),
    "segmentation": ("mean_iou", "mean IoU", lambda v: f"{v:.4f}"),
    "regression": ("mae", "mean absolute error", lambda v: f"{v:.3f}"),
    "detection": ("mAP", "mAP@[.5:.95]", lambda v: f"{v:.4f}"),
    "generation": ("loss", "eval loss (diffusion objective)", lambda v: f"{v:.4f}"),
}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def collect(workdir: Path, results: Path = RESULTS) -> Path:
    """Copies a workdir's artefacts to ``results/<workdir name>/``.

    The workdir's name, not the config's, names the result: one config file can have
    several stages (``transfer_fashion_to_mnist.py:frozen``), each run in its own workdir.
    """
    if not (workdir / "run.json").exists():
        raise FileNotFoundError(f"{workdir} has no run.json; is it a finished jaxcnn train workdir?")
    target = results / workdir.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in ARTEFACTS:
        if (workdir / file).exists():
            shutil.copy2(workdir / file, target / file)
    for source, name in NESTED_ARTEFACTS:
        if (workdir / source).exists():
            shutil.copy2(workdir / source, target / name)
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


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def detection_rows(folders: list[Path]) -> list[dict]:
    """One row per detection run: the COCO figures of its last evaluation and, when
    ``inference.json`` was collected, its inference throughput."""
    rows = []
    for folder in folders:
        config = _read_json(folder / "config.json") or {}
        if config.get("task") != "detection":
            continue
        evals = [m for m in _read_jsonl(folder / "metrics.jsonl") if m.get("split") != "train" and "mAP" in m]
        run = _read_json(folder / "run.json")
        if not evals or run is None:
            continue
        last, inference = evals[-1], _read_json(folder / "inference.json")
        rows.append({
            "name": folder.name,
            "model": config.get("model", {}).get("name", "?"),
            **{key: f"{last[key]:.4f}" if key in last else "-" for key in ("mAP", "mAP50", "mAP75", "AR100")},
            "images_per_second": "-" if inference is None else
            f"{inference['images_per_second']:.0f} ({inference['num_images']} images, batch {inference['batch_size']})",
            "wall": f"{run['wall_time_s'] / 60:.1f} min",
        })
    return rows


def generation_rows(folders: list[Path]) -> list[dict]:
    """One row per generation run with a ``sample_quality.json``."""
    rows = []
    for folder in folders:
        quality, run = _read_json(folder / "sample_quality.json"), _read_json(folder / "run.json")
        if quality is None or run is None:
            continue
        accuracy = quality.get("label_accuracy")
        # The judge: named in sample_quality.json, or (older files) in the run's own config.
        config = _read_json(folder / "config.json") or {}
        judge = quality.get("classifier_workdir") or config.get("task_options", {}).get("classifier_workdir", "")
        rows.append({
            "name": folder.name,
            "classifier": Path(judge).name or "-",
            "accuracy": "-" if accuracy is None else f"{100 * accuracy:.2f}%",
            "distance": f"{quality['frechet_distance']:.3f}",
            "floor": f"{quality['frechet_floor']:.3f}",
            "ratio": f"{quality['frechet_distance'] / quality['frechet_floor']:.1f}x",
            "samples": f"{quality['quality_samples']}, DDIM {quality['quality_steps']} steps",
            "wall": f"{run['wall_time_s'] / 60:.1f} min",
        })
    return rows


def sampler_table(name: str, rows: list[dict]) -> list[str]:
    """Markdown lines of one run's ``sampler_comparison.json`` (``python -m experiments.sampler_comparison``)."""
    small = min(r["num"] for r in rows)
    lines = ["", f"Samplers of {name} (`python -m experiments.sampler_comparison`; DDPM draws fewer samples, so",
             f"every DDIM setting is also scored on its first {small}):", "",
             f"| sampler | steps | samples | Fréchet distance | at {small} samples | label accuracy | "
             f"seconds per 1,000 samples |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        at_small = r.get(f"frechet_distance_at_{small}", r["frechet_distance"] if r["num"] == small else None)
        accuracy = r.get("label_accuracy")
        lines.append(f"| {r['sampler'].upper()} | {r['steps']} | {r['num']} | {r['frechet_distance']:.3f} | "
                     f"{'-' if at_small is None else f'{at_small:.3f}'} | "
                     f"{'-' if accuracy is None else f'{100 * accuracy:.2f}%'} | {r['seconds_per_1000']:.0f} |")
    return lines


def write_table(results: Path = RESULTS, path: Path = HERE / "RESULTS.md") -> Path:
    folders = sorted(f for f in results.iterdir() if f.is_dir()) if results.exists() else []
    rows = [r for r in (_row(f) for f in folders) if r]
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
    detection = detection_rows(folders)
    if detection:
        lines += [
            "",
            "## Detection",
            "",
            "COCO figures of the last evaluation (`predictions.json` beside them recomputes them with",
            "`jaxcnn.detection_metrics.evaluate_coco_json` or pycocotools), and the inference throughput",
            "that `jaxcnn predict --workdir W --split ... --out W/predict` measured after compilation",
            "(batching, the model, NMS and the copy back), on the machine of the run.",
            "",
            "| config | model | mAP@[.5:.95] | mAP@0.5 | mAP@0.75 | AR@100 | inference images/s | training wall time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in detection:
            lines.append(f"| {r['name']} | {r['model']} | {r['mAP']} | {r['mAP50']} | {r['mAP75']} | {r['AR100']} | "
                         f"{r['images_per_second']} | {r['wall']} |")
    generation = generation_rows(folders)
    if generation:
        lines += [
            "",
            "## Generation",
            "",
            "Sample quality as `jaxcnn eval` measures it (`sample_quality.json`): the label accuracy of",
            "class-conditional samples and their Fréchet distance in the feature space of the jaxcnn",
            "classifier named by `task_options.classifier_workdir` (its own run is in the table above),",
            "beside the floor (training images against the same test images).",
            "",
            "| config | classifier | label accuracy | Fréchet distance | floor | distance / floor | samples | "
            "training wall time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in generation:
            lines.append(f"| {r['name']} | {r['classifier']} | {r['accuracy']} | {r['distance']} | {r['floor']} | "
                         f"{r['ratio']} | "
                         f"{r['samples']} | {r['wall']} |")
        for folder in folders:
            comparison = _read_json(folder / "sampler_comparison.json")
            if comparison:
                lines += sampler_table(folder.name, comparison)
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
