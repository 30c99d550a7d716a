"""The generation task trains a tiny DiffusionUNet through the engine; ``jaxcnn sample`` draws from it.

The evaluation loss is recomputed in NumPy from the saved EMA weights: the cosine schedule from
its closed form, the noising from its definition, the mean squared error by hand.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.data.sources import ArraySource
from jaxcnn.models import DiffusionUNet
from jaxcnn.train import default_config, generation_config, read_metrics, train_and_evaluate, validate_config
from jaxcnn.train.checkpoint import Checkpointer

T = 20
MODEL = {"base_features": 8, "channel_multipliers": (1,), "attention": False, "num_groups": 4}


def _config(**task_options):
    config = default_config()
    config.task = "generation"
    config.task_options = generation_config()
    config.task_options.update({"image_shape": (8, 8, 1), "num_timesteps": T, "sample_steps": 2,
                                "grid_samples": 6, "guidance": 1.0, **task_options})
    config.model.name = "DiffusionUNet"
    config.model.update(MODEL)
    config.normalize.mean = config.normalize.std = 0.5
    config.dataset.num_classes = 3
    config.batch_size = 16
    config.num_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint.every_steps = 4
    config.checkpoint.best_metric = "loss"
    config.checkpoint.best_mode = "min"
    config.ema_decay = 0.9
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.progress_bar = False
    config.tensorboard = False
    return config


def _data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 48).astype(np.int32)
    return (ArraySource(images[:32], labels[:32], num_classes=3, split="train"),
            ArraySource(images[32:], labels[32:], num_classes=3, split="test"), images[32:], labels[32:])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("generation")
    train, test, images, labels = _data()
    config = _config()
    validate_config(config)
    result = train_and_evaluate(config, workdir, train_source=train, eval_source=test)
    return workdir, result, images, labels


def test_generation_trains_end_to_end_and_its_eval_loss_matches_numpy(run):
    workdir, result, images, labels = run
    assert result["status"] == "completed" and result["step"] == 4
    assert [r["step"] for r in read_metrics(workdir) if r["split"] == "train"] == [2, 4]
    with Image.open(workdir / "plots" / "samples.png") as grid:  # 3 classes x 2 samples, 2-pixel gaps
        assert grid.size == (2 * 10 + 2, 3 * 10 + 2)

    with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False) as ckpt:
        variables = ckpt.restore_variables(ckpt.latest_step())
    assert variables["ema_params"] is not None  # evaluated with the EMA weights (eval_use_ema)
    # Cosine schedule (Nichol & Dhariwal eq. 17), in float64 from its closed form.
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * math.pi / 2) ** 2
    abar = np.cumprod(1.0 - np.minimum(1.0 - f[1:] / f[:-1], 0.999))
    # Evaluation draws from the fixed key 0: t, noise, then label dropout (off in evaluation).
    key_t, key_noise, _ = jax.random.split(jax.random.PRNGKey(0), 3)
    t = np.asarray(jax.random.randint(key_t, (16,), 0, T, dtype=jnp.int32))
    noise = np.asarray(jax.random.normal(key_noise, (16, 8, 8, 1), jnp.float32), np.float64)
    x0 = images.astype(np.float64) / 255.0 * 2.0 - 1.0
    a = abar[t][:, None, None, None]
    xt = np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise
    model = DiffusionUNet(num_classes=3, **MODEL)
    predicted = np.asarray(model.apply({"params": variables["ema_params"]}, jnp.asarray(xt, jnp.float32),
                                       jnp.asarray(t), jnp.asarray(labels)), np.float64)
    np.testing.assert_allclose(result["eval_loss"], np.mean((predicted - noise) ** 2), rtol=1e-4)


def _sample(workdir, out, *args):
    return cli.main(["sample", "--workdir", str(workdir), "--steps", "2", "--out", str(out), *args])


def test_sample_writes_npz_and_grid_and_the_same_seed_gives_the_same_images(run, tmp_path):
    workdir = run[0]
    assert _sample(workdir, tmp_path / "a.npz", "--num", "5", "--seed", "1") == 0
    assert _sample(workdir, tmp_path / "b.npz", "--num", "5", "--seed", "1") == 0
    assert _sample(workdir, tmp_path / "c.npz", "--num", "5", "--seed", "2", "--label", "2") == 0
    a, b, c = (np.load(tmp_path / f"{name}.npz") for name in "abc")
    assert a["images"].dtype == np.uint8 and a["images"].shape == (5, 8, 8, 1)
    assert a["labels"].dtype == np.int32 and a["labels"].tolist() == [0, 1, 2, 0, 1]  # the classes in turn
    assert c["labels"].tolist() == [2] * 5
    np.testing.assert_array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], c["images"])
    with Image.open(tmp_path / "a.png") as grid:  # one column per class: 3 columns, 2 rows
        assert grid.size == (3 * 10 + 2, 2 * 10 + 2)
        np.testing.assert_array_equal(np.asarray(grid)[2:10, 12:20], a["images"][1, :, :, 0])


@pytest.mark.parametrize("args, argument", [
    (["--num", "2", "--label", "3"], "--label"),
    (["--num", "2", "--steps", "0"], "--steps"),
    (["--num", "2", "--steps", str(T + 1)], "--steps"),
    (["--num", "0"], "--num"),
    (["--num", "2", "--sampler", "dpm"], "--sampler"),
    (["--num", "2", "--sampler", "ddpm", "--eta", "1"], "--eta"),
])
def test_bad_sample_arguments_exit_2_naming_the_argument(run, tmp_path, capsys, args, argument):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sample", "--workdir", str(run[0]), "--out", str(tmp_path / "s.npz"), *args])
    assert exit_info.value.code == 2
    assert f"argument {argument}" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


def test_guidance_or_a_label_without_a_class_conditional_model_exits_2(run, tmp_path, capsys):
    workdir = tmp_path / "unconditional"
    shutil.copytree(run[0], workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["task_options"].update(class_conditional=False, guidance=0.0)  # the run as an unconditional one
    (workdir / "config.json").write_text(json.dumps(config))
    for args, argument in ((["--guidance", "2"], "--guidance"), (["--label", "1"], "--label")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["sample", "--workdir", str(workdir), "--num", "2", "--out", str(tmp_path / "s.npz"), *args])
        assert exit_info.value.code == 2
        assert f"argument {argument}" in capsys.readouterr().err


@pytest.mark.parametrize("options, field", [
    ({"class_conditional": False}, "guidance"),  # guidance 1.0 left on
    ({"sample_steps": T + 1}, "sample_steps"),
    ({"schedule": "quadratic"}, "schedule"),
    ({"sampler": "euler"}, "sampler"),
])
def test_bad_task_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=rf"config\.task_options\.{field}"):
        validate_config(_config(**options))


def _frechet_by_eigenvalues(a, b):
    """``|mu_a - mu_b|^2 + tr Sa + tr Sb - 2 sum sqrt(eig(Sa Sb))``: the eigenvalues of the product, not a sqrtm."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    roots = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sa) + np.trace(sb) - 2.0 * roots)


@pytest.mark.parametrize("override", ["--config.task_options.num_timesteps=10", "--config.model.base_features=8"])
def test_eval_refuses_overrides_of_what_the_run_learned(run, capsys, override):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--workdir", str(run[0]), override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert override in err and "--config.task_options.classifier_workdir" in err


@pytest.mark.slow
def test_jaxcnn_eval_measures_sample_quality_in_a_classifiers_feature_space(tmp_path, capsys, data_dir):
    from jaxcnn.data import load
    from jaxcnn.diffusion import classifier_features
    from jaxcnn.models import LeNet5

    configs = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")
    classifier, generator = tmp_path / "lenet", tmp_path / "ddpm"
    assert cli.main(["train", "--config", os.path.join(configs, "mnist_lenet5.py:smoke"),
                     "--workdir", str(classifier)]) == 0
    n = 100  # more samples than LeNet5's 84 features
    assert cli.main(["train", "--config", os.path.join(configs, "mnist_ddpm.py:smoke"), "--workdir", str(generator),
                     f"--config.dataset.train_split=train[:{n}]", f"--config.dataset.eval_split=test[:{n}]"]) == 0
    capsys.readouterr()
    # The classifier is named at evaluation: a run can be judged by one trained after it.
    assert cli.main(["eval", "--workdir", str(generator), f"--config.task_options.classifier_workdir={classifier}",
                     f"--config.task_options.quality_samples={n}", "--config.task_options.quality_steps=2"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("\n{\n") + 1:])  # the command prints its metrics last
    quality = json.loads((generator / "sample_quality.json").read_text())
    assert {"frechet_distance", "frechet_floor", "label_accuracy"} <= set(quality)
    assert quality.pop("classifier_workdir") == str(classifier)  # the judge is named beside its figures
    assert all(metrics[name] == quality[name] for name in quality)

    # The same samples: jaxcnn sample with seed 0, 2 DDIM steps and the run's guidance draws them.
    assert _sample(generator, tmp_path / "s.npz", "--num", str(n), "--seed", "0") == 0
    samples = np.load(tmp_path / "s.npz")
    with Checkpointer(os.path.join(classifier, "checkpoints"), read_only=True, async_save=False) as ckpt:
        weights = ckpt.restore_variables(ckpt.best_step())
    variables = {"params": weights["ema_params"] or weights["params"]}
    if weights["batch_stats"]:
        variables["batch_stats"] = weights["batch_stats"]
    lenet = LeNet5(num_classes=10)
    normalise = lambda pixels: ((pixels.astype(np.float32) / 255.0 - 0.1307) / 0.3081).astype(np.float32)  # noqa: E731
    real = {split: np.stack([load("mnist", f"{split}[:{n}]", data_dir=data_dir)[i]["image"] for i in range(n)])
            for split in ("train", "test")}
    features = {name: classifier_features(lenet, variables, normalise(images)).astype(np.float64)
                for name, images in (("generated", samples["images"]), *real.items())}
    np.testing.assert_allclose(quality["frechet_floor"], _frechet_by_eigenvalues(features["train"], features["test"]),
                               rtol=1e-3)
    np.testing.assert_allclose(quality["frechet_distance"],
                               _frechet_by_eigenvalues(features["generated"], features["test"]), rtol=1e-3)
    predicted = np.argmax(np.asarray(lenet.apply(variables, normalise(samples["images"]), train=False)), axis=-1)
    assert quality["label_accuracy"] == pytest.approx(np.mean(predicted == samples["labels"]))

    # The sampler comparison draws the same DDIM samples (key 0, classes in turn, the run's
    # guidance) and scores them with the same classifier: its DDIM row is the eval's figures.
    from experiments import sampler_comparison

    # DDPM runs all 1,000 steps: 3 samples keep it short.
    assert sampler_comparison.main([str(generator), "--classifier", str(classifier), "--num", str(n),
                                    "--ddpm-num", "3", "--ddim-steps", "2"]) == 0
    rows = json.loads((generator / "sampler_comparison.json").read_text())
    assert [(r["sampler"], r["steps"], r["num"]) for r in rows] == [("ddim", 2, n), ("ddpm", 1000, 3)]
    for name in ("frechet_distance", "frechet_floor", "label_accuracy"):
        assert rows[0][name] == pytest.approx(quality[name], rel=1e-6)
    assert np.isfinite(rows[0]["frechet_distance_at_3"]) and np.isfinite(rows[1]["frechet_distance"])
    assert all(r["seconds"] > 0 and r["seconds_per_1000"] == pytest.approx(1000 * r["seconds"] / r["num"])
               for r in rows)
