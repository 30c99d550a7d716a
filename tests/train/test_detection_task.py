"""The detection task end to end: train_and_evaluate, eval of the workdir, jaxcnn predict.

One tiny Fast R-CNN on 32x32 canvases, trained for two steps, shared by every test. mAP is
checked against pycocotools (the reference COCO evaluation) recomputed from the files the run
wrote, and the predict command against the run's own predictions.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxcnn import cli

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

EVAL_SPLIT = "test[:6]"
CANVASES = {"canvas_size": 32, "min_digits": 1, "max_digits": 2}


def _config():
    from jaxcnn.train import default_config

    config = default_config()
    config.task = "detection"
    config.dataset.name = "mnist_detection"
    config.dataset.derived_options = dict(CANVASES)
    config.dataset.train_split = "train[:16]"
    config.dataset.eval_split = EVAL_SPLIT
    config.model.name = "FastRCNN"
    config.model.features = (4, 8, 8)
    config.model.window_sizes = (16, 24)
    config.model.hidden = 16
    config.batch_size = 8
    config.eval_batch_size = 4  # 6 canvases: the last batch is padded
    config.num_steps = 2
    config.log_every_steps = 1
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.checkpoint.best_metric = "mAP"
    config.progress_bar = False
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    from jaxcnn.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("detection_run")
    final = train_and_evaluate(_config(), str(workdir))
    return workdir, final


def _eval_canvases():
    from jaxcnn.data.loading import load

    return load("mnist_detection", EVAL_SPLIT, derived_options=CANVASES)


def _pycocotools_stats(results, canvases):
    """COCOeval's stats of ``results`` against the canvases' true boxes, built here from the data."""
    images, annotations = [], []
    for i in range(len(canvases)):
        example = canvases[i]
        images.append({"id": i, "width": 32, "height": 32})
        for (x1, y1, x2, y2), c, ok in zip(example["boxes"], example["classes"], example["box_valid"]):
            if ok:
                w, h = float(x2 - x1), float(y2 - y1)
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c),
                                    "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": k} for k in range(10)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def _last_eval(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "test"][-1]


def test_training_writes_coco_map_equal_to_pycocotools_on_its_predictions(run):
    workdir, final = run
    record = _last_eval(workdir)
    for key in ("mAP", "mAP50", "mAP75", "AR100", "loss", "classification", "box_regression"):
        assert key in record and np.isfinite(record[key]), key
    assert final["eval_mAP"] == pytest.approx(record["mAP"])
    results = json.loads((workdir / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= set(range(6))
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert record["AR100"] > 0  # some matches, so the comparison below is not of zeros only
    stats = _pycocotools_stats(results, _eval_canvases())
    # pycocotools' stats: AP, AP50, AP75, ..., AR100 at index 8
    np.testing.assert_allclose([record["mAP"], record["mAP50"], record["mAP75"], record["AR100"]],
                               [stats[0], stats[1], stats[2], stats[8]], atol=1e-6)
    assert (workdir / "plots" / "detections.png").stat().st_size > 1000


def test_eval_of_the_workdir_gives_the_same_map_and_predictions(run, tmp_path):
    workdir, _ = run
    before = json.loads((workdir / "predictions.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    metrics = json.loads(out.getvalue()[out.getvalue().index("{"):])
    record = _last_eval(workdir)
    assert metrics["mAP"] == pytest.approx(record["mAP"], abs=1e-6)
    assert metrics["mAP50"] == pytest.approx(record["mAP50"], abs=1e-6)
    # Rewritten by a second code path (the detector run again over the split).
    after = json.loads((workdir / "predictions.json").read_text())
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"] + [a["score"]], b["bbox"] + [b["score"]], atol=1e-4)


def test_predict_on_a_split_and_on_image_files_matches_the_run(run, tmp_path):
    from PIL import Image

    workdir, _ = run
    expected = json.loads((workdir / "predictions.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["predict", "--workdir", str(workdir), "--split", EVAL_SPLIT, "--out",
                         str(tmp_path / "split")]) == 0
    on_split = json.loads((tmp_path / "split" / "predictions.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in on_split] == [
        (r["image_id"], r["category_id"]) for r in expected]
    np.testing.assert_allclose([r["score"] for r in on_split], [r["score"] for r in expected], atol=1e-4)
    assert (tmp_path / "split" / "detections.png").stat().st_size > 1000
    inference = json.loads((tmp_path / "split" / "inference.json").read_text())
    assert inference["num_images"] == 6  # EVAL_SPLIT
    assert inference["seconds"] > 0
    assert inference["images_per_second"] == pytest.approx(inference["num_images"] / inference["seconds"])

    canvases = _eval_canvases()
    files = []
    for i in (0, 1):
        files.append(str(tmp_path / f"canvas{i}.png"))
        Image.fromarray(canvases[i]["image"][..., 0]).save(files[-1])
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["predict", "--workdir", str(workdir), "--images", *files, "--out",
                         str(tmp_path / "files"), "--batch-size", "2"]) == 0
    on_files = json.loads((tmp_path / "files" / "predictions.json").read_text())
    want = [r for r in expected if r["image_id"] in (0, 1)]
    assert [(r["image_id"], r["category_id"]) for r in on_files] == [(r["image_id"], r["category_id"]) for r in want]
    np.testing.assert_allclose([r["bbox"] for r in on_files], [r["bbox"] for r in want], atol=1e-3)
    names = json.loads((tmp_path / "files" / "images.json").read_text())
    assert [n["file_name"] for n in names] == files


@pytest.mark.parametrize("args", [
    ["--images", "no_such_file.png"],
    ["--split", EVAL_SPLIT, "--images", "x.png"],   # both inputs
    [],                                               # neither
    ["--split", EVAL_SPLIT, "--batch-size", "0"],
    ["--split", EVAL_SPLIT, "--config.model.hidden=3"],  # only dataset overrides
])
def test_predict_bad_arguments_exit_2(run, tmp_path, args):
    workdir, _ = run
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        cli.main(["predict", "--workdir", str(workdir), "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()


def test_predict_on_a_folder_without_a_run_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        cli.main(["predict", "--workdir", str(tmp_path), "--split", "test[:2]", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def test_gathered_statistics_are_concatenated_and_the_others_summed():
    from jaxcnn.train.tasks import add_statistics

    total = add_statistics(None, {"count": 2.0, "rows": np.array([[1, 2]])}, ("rows",))
    total = add_statistics(total, {"count": 3.0, "rows": np.array([[3, 4], [5, 6]])}, ("rows",))
    assert total["count"] == 5.0
    np.testing.assert_array_equal(total["rows"], [[1, 2], [3, 4], [5, 6]])


def test_derived_options_reach_the_canvases_and_bad_ones_are_named(data_dir):
    from jaxcnn.data.loading import load

    canvases = load("mnist_detection", "test[:4]", derived_options={"canvas_size": 40, "max_digits": 4,
                                                                      "min_digits": 4})
    assert canvases[0]["image"].shape == (40, 40, 1) and canvases[0]["box_valid"].tolist() == [True] * 4
    with pytest.raises(ValueError, match="derived_options apply to derived datasets"):
        load("mnist", "test[:4]", derived_options={"canvas_size": 40})
    with pytest.raises(TypeError, match="derived_options.*DetectionCanvases"):
        load("mnist_detection", "test[:4]", derived_options={"canvas_sise": 40})


def test_gathered_statistics_keep_example_order_in_every_parallel_mode():
    # Two host devices: rows are all_gathered across devices (not psum-ed), in batch order.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(root, "tests", "train", "gathered_worker.py"),
                           "none", "jit", "shard_map", "pmap"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for mode in ("none", "jit", "shard_map", "pmap"):
        got = result[mode]
        assert got["count"] == [10.0], mode
        # 10 examples in batches of 4: the last batch has 2 padding rows (label 0, weight 0).
        assert got["label"] == list(range(10)) + [0, 0], mode
        assert got["weight"] == [1.0] * 10 + [0.0, 0.0], mode
        np.testing.assert_allclose(got["output"][:10], result["expected"], rtol=1e-5, err_msg=mode)


def test_detection_breakdown_matches_pycocotools_per_class_and_class_agnostic(run):
    from experiments.detection_breakdown import breakdown

    workdir, _ = run
    result = breakdown(workdir)
    results = json.loads((workdir / "predictions.json").read_text())
    canvases = _eval_canvases()
    stats = _pycocotools_stats(results, canvases)
    assert result["summary"]["AP"] == pytest.approx(stats[0], abs=1e-4)
    # Every class merged: pycocotools on the same files with category 0 everywhere.
    merged = [{**r, "category_id": 0} for r in results]

    class _OneClass:
        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            example = dict(self.source[i])
            example["classes"] = np.zeros_like(example["classes"])
            return example

    agnostic = _pycocotools_stats(merged, _OneClass(canvases))
    assert result["class_agnostic"]["AP50"] == pytest.approx(agnostic[1], abs=1e-4)
    assert result["class_agnostic"]["AP"] == pytest.approx(agnostic[0], abs=1e-4)
    assert result["images"] == 6
