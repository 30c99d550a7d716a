"""experiments/results.py: the table is written from run artefacts, seeds are averaged."""

import json

from experiments import results


def _fake_run(folder, name, accuracy, task="classification", key="accuracy"):
    run = folder / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": task}))
    (run / "run.json").write_text(json.dumps({
        "wall_time_s": 120.0, "num_devices": 1, "device_kind": "cpu", "git_commit": "0123456789ab",
        "git_dirty": False, "command": f"jaxcnn train --workdir runs/{name}",
    }))
    lines = [
        {"step": 10, "epoch": 1.0, "split": "train", key: 0.5},
        {"step": 10, "epoch": 1.0, "split": "test", key: accuracy - 0.01},
        {"step": 20, "epoch": 2.0, "split": "test", key: accuracy},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


def test_table_lists_last_evaluation_and_seed_means(tmp_path):
    store = tmp_path / "results"
    for seed, accuracy in ((0, 0.9950), (1, 0.9960), (2, 0.9964)):
        _fake_run(store, f"mnist_best_seed{seed}", accuracy)
    _fake_run(store, "lonely_seed0", 0.9)  # a single seed: no mean row
    _fake_run(store, "mnist_seg", 0.7437, task="segmentation", key="mean_iou")
    text = results.write_table(store, tmp_path / "RESULTS.md").read_text()

    assert "| mnist_best_seed1 | test accuracy | 99.60% | 2 | 20 | 2.0 min | step 20, 0 s | 1 x cpu | 01234567 |" in text
    assert "| mnist_seg | mean IoU | 0.7437 |" in text
    # By hand: mean 0.9958; deviations -8e-4, 2e-4, 6e-4; sample std sqrt(104e-8 / 2) = 7.2e-4.
    assert "| mnist_best | test accuracy | 0, 1, 2 | 99.58% | 0.07% | 99.50% | 99.64% |" in text
    assert "| lonely |" not in text


def test_detection_runs_report_map(tmp_path):
    store = tmp_path / "results"
    _fake_run(store, "mnist_det", 0.7123, task="detection", key="mAP")
    text = results.write_table(store, tmp_path / "RESULTS.md").read_text()
    assert "| mnist_det | mAP@[.5:.95] | 0.7123 |" in text


def test_detection_section_has_coco_figures_and_collected_inference_speed(tmp_path):
    workdir = tmp_path / "runs" / "mnist_det"
    _fake_run(tmp_path / "runs", "mnist_det", 0.7123, task="detection", key="mAP")
    (workdir / "config.json").write_text(json.dumps({"task": "detection", "model": {"name": "FasterRCNN"}}))
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 30, "epoch": 3.0, "split": "test", "mAP": 0.75, "mAP50": 0.96,
                            "mAP75": 0.8, "AR100": 0.81}) + "\n")
    (workdir / "predict").mkdir()
    (workdir / "predict" / "inference.json").write_text(json.dumps(
        {"num_images": 2000, "batch_size": 32, "seconds": 8.0, "images_per_second": 250.0}))
    store = tmp_path / "results"
    store.mkdir()
    target = results.collect(workdir, store)
    assert (target / "inference.json").exists()
    text = results.write_table(store, tmp_path / "RESULTS.md").read_text()
    assert "| mnist_det | FasterRCNN | 0.7500 | 0.9600 | 0.8000 | 0.8100 | 250 (2000 images, batch 32) | 2.0 min |" in text


def _fake_generation_run(store, **quality):
    _fake_run(store, "mnist_ddpm", 0.05, task="generation", key="loss")
    (store / "mnist_ddpm" / "sample_quality.json").write_text(json.dumps(
        {"frechet_distance": 3.0, "frechet_floor": 0.5, "quality_samples": 1000, "quality_steps": 50, **quality}))
    return store / "mnist_ddpm"


def test_generation_section_has_sample_quality(tmp_path):
    _fake_generation_run(tmp_path / "results", label_accuracy=0.9812, classifier_workdir="runs/mnist_lenet5")
    text = results.write_table(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    # 3.0 / 0.5 = 6.0x of the floor.
    assert "| mnist_ddpm | mnist_lenet5 | 98.12% | 3.000 | 0.500 | 6.0x | 1000, DDIM 50 steps | 2.0 min |" in text


def test_generation_row_names_the_classifier_of_the_runs_config_when_the_quality_file_does_not(tmp_path):
    run = _fake_generation_run(tmp_path / "results")
    config = json.loads((run / "config.json").read_text())
    config["task_options"] = {"classifier_workdir": "/somewhere/runs/mnist_classifier"}
    (run / "config.json").write_text(json.dumps(config))
    text = results.write_table(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    assert "| mnist_ddpm | mnist_classifier | - | 3.000 |" in text


def test_sampler_comparison_table(tmp_path):
    run = _fake_generation_run(tmp_path / "results")
    (run / "sampler_comparison.json").write_text(json.dumps([
        {"sampler": "ddim", "steps": 10, "num": 1000, "frechet_distance": 4.0, "frechet_distance_at_200": 6.5,
         "label_accuracy": 0.95, "seconds_per_1000": 60.4},
        {"sampler": "ddpm", "steps": 1000, "num": 200, "frechet_distance": 5.5, "label_accuracy": 0.99,
         "seconds_per_1000": 6000.0},
    ]))
    text = results.write_table(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    assert "| mnist_ddpm | - | - | 3.000 | 0.500 | 6.0x |" in text  # no classifier, no label accuracy
    assert "| DDIM | 10 | 1000 | 4.000 | 6.500 | 95.00% | 60 |" in text
    assert "| DDPM | 1000 | 200 | 5.500 | 5.500 | 99.00% | 6000 |" in text
