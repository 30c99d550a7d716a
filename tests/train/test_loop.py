"""train_and_evaluate end to end: outputs, determinism, resume, NaN stop, preemption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tiny_models import TinyCNN, sources

from jaxcnn.data.sources import ArraySource
from jaxcnn.train import (
    NonFiniteError,
    default_config,
    load_params,
    read_metrics,
    train_and_evaluate,
    validate_config,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def small_config(**overrides):
    config = default_config()
    config.batch_size = 16
    config.num_epochs = 2
    config.log_every_steps = 1
    config.eval_every_steps = 4
    config.checkpoint.every_steps = 3
    config.checkpoint.keep = 20
    config.progress_bar = False
    config.tensorboard = False  # tensorboardX imports torch: seconds per run; one test turns it on
    config.plots = False
    config.optimizer.learning_rate = 0.05
    config.update_from_flattened_dict(overrides)
    return config


def _run(config, workdir, **model_kwargs):
    train, test = sources(64, 24)
    return train_and_evaluate(
        config, workdir, train_source=train, eval_source=test, model=TinyCNN(num_classes=2, **model_kwargs)
    )


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """8 steps (2 epochs of 4) with dropout, EMA, accumulation and a schedule, uninterrupted."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    config = small_config(
        ema_decay=0.9,
        grad_accum_steps=2,
        tensorboard=True,
        plots=True,
        **{"schedule.name": "cosine", "optimizer.weight_decay": 1e-3},
    )
    result = _run(config, workdir, dropout_rate=0.3)
    return config, workdir, result


def test_outputs_of_a_run(straight_run):
    _, workdir, result = straight_run
    assert result["status"] == "completed" and result["step"] == 8 and result["epoch"] == 2.0
    assert 0.0 <= result["eval_accuracy"] <= 1.0 and np.isfinite(result["train_loss"])
    records = read_metrics(workdir)
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "test"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert [r["step"] for r in evals] == [4, 8]
    assert {"step", "epoch", "split", "loss", "accuracy", "learning_rate", "grad_norm"} <= set(train[0])
    assert not any(k in r for r in records for k in ("seconds", "images_per_second", "time"))
    timings = [json.loads(line) for line in _read(os.path.join(workdir, "timings.jsonl")).splitlines()]
    assert "images_per_second" in timings[0]
    for name in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000
    confusion = np.array(json.loads(_read(os.path.join(workdir, "plots", "confusion_matrix.json"))))
    assert confusion.sum() == 24  # every evaluation example once, padding excluded
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert json.loads(_read(os.path.join(workdir, "config.json")))["batch_size"] == 16
    # cosine schedule over 4 updates (8 micro-steps / 2)
    assert train[0]["learning_rate"] == pytest.approx(0.05) and train[-1]["learning_rate"] < 0.05


def test_resume_reproduces_the_uninterrupted_run(straight_run, tmp_path):
    """Keep only the step-3 checkpoint of the straight run, rerun: identical files and params."""
    config, workdir, result = straight_run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    for name in os.listdir(os.path.join(resumed, "checkpoints")):
        if name.isdigit() and name != "3":
            shutil.rmtree(os.path.join(resumed, "checkpoints", name))
    shutil.rmtree(os.path.join(resumed, "plots"))
    config = config.copy_and_resolve_references()
    config.tensorboard = config.plots = False  # outputs beside the point here; saves seconds
    again = _run(config, resumed, dropout_rate=0.3)
    assert _read(os.path.join(resumed, "metrics.jsonl")) == _read(os.path.join(workdir, "metrics.jsonl"))
    assert again == result
    # Resuming a finished run trains no more and reports the same final metrics.
    assert _run(config, resumed, dropout_rate=0.3) == result
    for a, b in zip(
        jax.tree.leaves(load_params(os.path.join(workdir, "checkpoints"))),
        jax.tree.leaves(load_params(os.path.join(resumed, "checkpoints"))),
    ):
        np.testing.assert_array_equal(a, b)


def test_another_seed_gives_another_run(straight_run, tmp_path):
    """(Same seed -> identical metrics.jsonl is shown by the resume and preemption tests.)"""
    config, workdir, _ = straight_run
    other = config.copy_and_resolve_references()
    other.seed = 1
    other.num_steps = 2  # grad_accum_steps=2: the fewest steps that make one update
    _run(other, str(tmp_path / "other"), dropout_rate=0.3)
    assert read_metrics(str(tmp_path / "other"))[0]["loss"] != read_metrics(workdir)[0]["loss"]


def test_fine_tuning_takes_matching_params_from_a_checkpoint(straight_run, tmp_path):
    _, workdir, _ = straight_run
    source_params, _ = load_params(os.path.join(workdir, "checkpoints"))
    config = small_config(num_steps=1, init_from_checkpoint=os.path.join(workdir, "checkpoints"))
    config.dataset.num_classes = 3
    config.freeze = ("Conv_0", "BatchNorm_0")
    train, test = sources(64, 24)
    model = TinyCNN(num_classes=3)  # a new 3-class head on the trained backbone
    train_and_evaluate(config, str(tmp_path), train_source=train, eval_source=test, model=model)
    params, _ = load_params(str(tmp_path / "checkpoints"))
    np.testing.assert_array_equal(params["Conv_0"]["kernel"], source_params["Conv_0"]["kernel"])  # frozen
    assert params["Dense_0"]["kernel"].shape == (4, 3)
    with pytest.raises(ValueError, match="init_from_checkpoint"):
        _run(small_config(init_from_checkpoint=str(tmp_path / "nowhere")), str(tmp_path / "x"))


def test_nan_stops_training_naming_the_step(tmp_path):
    images = np.full((32, 6, 6, 1), np.nan, np.float32)
    train = ArraySource(images, np.arange(32) % 2, num_classes=2)
    test = ArraySource(images[:8], np.arange(8) % 2, num_classes=2)
    with pytest.raises(NonFiniteError, match="at step 1 "):
        train_and_evaluate(
            small_config(num_steps=2), str(tmp_path), train_source=train, eval_source=test, model=TinyCNN()
        )
    checkpoints = os.path.join(tmp_path, "checkpoints")
    assert not [d for d in os.listdir(checkpoints) if d[0].isdigit()]


def test_config_validation_names_the_field(tmp_path):
    for field, value, message in [
        ("parallel", "threads", "config.parallel='threads'"),
        ("ema_decay", 1.0, "config.ema_decay"),
        ("batch_size", 0, "config.batch_size"),
        ("schedule.name", "exp", "config.schedule.name='exp'"),
        ("checkpoint.best_mode", "up", "config.checkpoint.best_mode"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
            validate_config(small_config(**{field: value}))
    config = small_config(num_epochs=0, num_steps=0)
    with pytest.raises(ValueError, match="num_epochs"):
        validate_config(config)
    with pytest.raises(TypeError, match="config.freeze"):
        validate_config(small_config(freeze=("conv", 3)))
    with pytest.raises(ValueError, match="num_devices=64"):
        _run(small_config(num_devices=64), str(tmp_path))


@pytest.mark.parametrize("parallel", ["shard_map", "pmap"])
def test_loop_runs_in_every_parallel_form(parallel, tmp_path):
    """On this process's devices (1 here; 8 in test_parallel): same losses as parallel='none'."""
    config = small_config(num_steps=2, eval_every_steps=2)
    reference = _run(config, str(tmp_path / "none"))
    config.parallel = parallel
    result = _run(config, str(tmp_path / parallel))
    assert result["step"] == 2
    np.testing.assert_allclose(result["train_loss"], reference["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(result["eval_loss"], reference["eval_loss"], rtol=1e-5)


def test_augmentation_and_normalization_run_on_device(tmp_path):
    config = small_config(num_steps=2, augment=("random_crop", "random_flip"))
    config.augment_options.random_crop = {"padding": 1}
    config.normalize.mean, config.normalize.std = 0.5, 0.25
    result = _run(config, str(tmp_path / "aug"))
    assert np.isfinite(result["train_loss"]) and np.isfinite(result["eval_loss"])
    with pytest.raises(ValueError, match="config.augment has 'crop'"):
        _run(small_config(augment=("crop",)), str(tmp_path / "bad"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes_identically(tmp_path):
    sys.path.insert(0, HERE)
    import preemptible_run

    workdir = str(tmp_path / "preempted")
    env = dict(
        os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu"
    )
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "preemptible_run.py"), workdir],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert time.time() < deadline, "the run never logged a step"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "preempted" and 0 < result["step"] < 100
    assert "Received SIGTERM" in out + err
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(result["step"])))

    resumed = preemptible_run.run(workdir)
    straight = preemptible_run.run(str(tmp_path / "straight"))
    assert resumed["status"] == "completed" and resumed == straight
    assert _read(metrics) == _read(str(tmp_path / "straight" / "metrics.jsonl"))


def test_check_resume_config_compares_with_the_saved_config(tmp_path):
    from jaxcnn.train import default_config
    from jaxcnn.train.loop import check_resume_config

    saved = json.loads(default_config().to_json_best_effort())
    del saved["dataset"]["derived_train_examples"]  # a config.json older than that field
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints" / "tmp.orbax-checkpoint-tmp-1").mkdir(parents=True)
    changed = default_config()
    changed.seed = 1
    check_resume_config(changed, tmp_path)  # no complete checkpoint yet: a fresh start
    (tmp_path / "checkpoints" / "5").mkdir()
    check_resume_config(default_config(), tmp_path)  # the missing field counts as its default 0
    with pytest.raises(ValueError, match=r"another config.*\(seed: 0 there, 1 now\)"):
        check_resume_config(changed, tmp_path)
    shown = default_config()
    shown.progress_bar, shown.num_devices, shown.dataset.data_dir = False, 1, "/elsewhere"
    check_resume_config(shown, tmp_path)
