"""The project's main job end to end: a zoo model trained on real MNIST files (a slice)."""

from __future__ import annotations

from jaxcnn.train import default_config, evaluate_workdir, input_shape_for, read_metrics, train_and_evaluate


def test_simple_cnn_learns_mnist(data_dir, tmp_path):
    config = default_config()
    config.dataset.data_dir = data_dir
    config.dataset.train_split = "train[:2048]"
    config.dataset.eval_split = "test[:512]"
    config.model.name = "SimpleCNN"
    config.batch_size = 64
    config.num_steps = 40
    config.log_every_steps = 10
    config.optimizer.learning_rate = 0.05
    config.progress_bar = False
    config.tensorboard = False
    config.plots = False
    result = train_and_evaluate(config, str(tmp_path))
    assert result["status"] == "completed" and result["step"] == 40
    # 40 SGD steps on 2,048 digits: far above chance (0.1); typically ~0.9.
    assert result["eval_accuracy"] > 0.7, result
    # The split is named without its slice; evaluations at each epoch end (32 steps) and the end.
    assert [r["step"] for r in read_metrics(str(tmp_path)) if r["split"] == "test"] == [32, 40]
    # `jaxcnn eval`: the best checkpoint (by test accuracy) evaluated again from the workdir.
    again = evaluate_workdir(str(tmp_path), checkpoint="best")
    best = max((r for r in read_metrics(str(tmp_path)) if r["split"] == "test"), key=lambda r: r["accuracy"])
    assert again["step"] == best["step"] and again["split"] == "test"
    assert abs(again["accuracy"] - best["accuracy"]) < 1e-6 and abs(again["loss"] - best["loss"]) < 1e-4
    assert input_shape_for(config) == ((1, 28, 28, 1), 10)
