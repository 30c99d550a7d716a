"""From a config to the run's pieces: zoo model fields, task, preprocessing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.train import build_model, default_config, make_preprocessing, make_task_for, regression_task
from jaxcnn.train.builders import load_sources


def test_build_model_fills_num_classes_axis_name_and_dtype():
    config = default_config()
    config.model.name = "ResNet18"
    config.mixed_precision = True
    model = build_model(config, num_classes=7, axis_name="data")
    assert (model.num_classes, model.axis_name, model.dtype) == (7, "data", jnp.bfloat16)
    config.model.name = "UNet"  # requires num_classes at construction
    config.task = "segmentation"
    assert build_model(config, num_classes=11, axis_name=None).num_classes == 11
    config.model.name = "SimpleCNN"
    config.task = "regression"
    config.model.num_classes = 1  # regression: the config's value, never the dataset's
    assert build_model(config, num_classes=10, axis_name=None).num_classes == 1


def test_make_task_for_and_regression_with_scalar_labels():
    config = default_config()
    config.task = "regression"
    config.regression_loss = "mae"
    task = make_task_for(config, num_classes=0)
    batch = {"image": jnp.zeros((3, 1, 1, 1)), "label": jnp.array([0.0, 2.0, 1.0])}
    # (N, 1) outputs against (N,) labels, as a one-output model regressing a scalar.
    np.testing.assert_allclose(task.loss(jnp.array([[1.0], [2.0], [4.0]]), batch), 4 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        regression_task().loss(jnp.zeros((3, 2)), batch)


def test_preprocessing_normalizes_train_and_eval():
    config = default_config()
    config.normalize.mean, config.normalize.std = 0.5, 0.5
    config.augment = ("random_flip",)
    train, evaluate = make_preprocessing(config)
    batch = {"image": jnp.full((2, 4, 4, 1), 255, jnp.uint8), "label": jnp.zeros((2,), jnp.int32)}
    np.testing.assert_allclose(evaluate(None, batch)["image"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(train(jax.random.PRNGKey(0), batch)["image"], 1.0, rtol=1e-6)  # flat image
    config.augment_options.random_crop = {"padding": 2}
    with pytest.raises(ValueError, match="augment_options"):
        make_preprocessing(config)


def test_derived_train_examples_sizes_the_training_set_only(data_dir):
    config = default_config()
    config.dataset.name = "mnist_rotation"
    config.dataset.data_dir = str(data_dir)
    config.dataset.train_split, config.dataset.eval_split = "train[:10]", "test[:10]"
    config.dataset.derived_train_examples = 30
    train, evaluation = load_sources(config)
    assert (len(train), len(evaluation)) == (30, 10)
    assert int(train[13]["digit"]) == int(train[3]["digit"])  # digit 3 at another angle
    assert float(train[13]["label"]) != float(train[3]["label"])
