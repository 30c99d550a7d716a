"""Config values that used to pass validation and then train nonsense or crash late.

Each is refused at start with the field, the value and what is allowed; through the CLI with
exit code 2 and nothing written. Each trial appends its outcome to the reliability results.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import fault_tools
import pytest
from fault_tools import KILL_CONFIG, child_env, run_tiny, synthetic_digits, tiny_config, tiny_sources, \
    write_synthetic_mnist

from jaxcnn import cli
from jaxcnn.train import default_config, validate_config
from jaxcnn.train.config_checks import ConfigValueError

TEST = "tests/reliability/test_config_faults.py"


def record(fault: str, **details):
    """Records a trial of this file (see ``fault_tools.record``)."""
    return fault_tools.record(fault, test=TEST, **details)


FIELD_CASES = [
    ("normalize.std", float("inf"), r"config.normalize.std must be a finite number, got inf"),
    ("grad_clip_norm", float("nan"), r"config.grad_clip_norm must be a finite number, got nan"),
    ("grad_accum_steps", 1000, r"config.grad_accum_steps=1000 is more than config.num_steps=6: no update"),
    ("schedule.pct_start", 5.0, r"config.schedule.pct_start must be in \(0, 1\).*got 5.0"),
    ("schedule.div_factor", 0.0, r"config.schedule.div_factor must be > 0 .*got 0.0"),
    ("schedule.boundaries", (1e30,), r"config.schedule.boundaries has 1e\+30; .*whole number of updates <= 2147483647"),
    ("seed", 99999999999999999999, r"config.seed must be an int in \[0, 4294967295\], got 99999999999999999999"),
    ("checkpoint.best_metric", "acuracy",
     r"config.checkpoint.best_metric='acuracy' is not a metric of the 'classification' task; allowed: "
     r"\('loss', 'accuracy'\)"),
    ("checkpoint.best_metric", "loss",
     r"config.checkpoint.best_mode='max' with best_metric='loss' would keep the worst checkpoint; .*'min'"),
]


@pytest.mark.parametrize("field,value,message", FIELD_CASES, ids=[f"{f}={v!r}" for f, v, _ in FIELD_CASES])
def test_bad_values_are_refused_naming_field_value_and_what_is_allowed(field, value, message):
    config = default_config()
    config.num_epochs, config.num_steps = 0, 6
    with config.ignore_type():
        config.update_from_flattened_dict({field: value})
    with pytest.raises(ValueError, match=message):
        validate_config(config)
    record(f"config {field}={value!r}", detail="refused at start naming the field, value and what is allowed")


def test_the_cli_exits_2_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    for override, message in (("--config.normalize.std=inf", "config.normalize.std must be a finite number, got inf"),
                              ("--config.dataset.data_dir=/does/not/exist",
                               "config.dataset.data_dir='/does/not/exist' is not a folder")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["train", "--config", str(KILL_CONFIG), "--workdir", str(workdir), override])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
        assert not workdir.exists()
    record("explicit dataset.data_dir that does not exist", detail="exit 2 naming it (was: silent fallback to "
           "$JAXCNN_DATA_DIR)")


def test_labels_beyond_num_classes_are_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigValueError, match=r"config.dataset.num_classes=5 but .*labels in \[0, 9\]; allowed: "
                                               r"num_classes > 9"):
        run_tiny(workdir, tiny_config(**{"dataset.num_classes": 5}))
    assert not workdir.exists()
    record("dataset.num_classes=5 on 10-class data", detail="refused at start (was: 'non-finite loss')")


def test_test_images_of_another_shape_are_refused_before_training(tmp_path):
    from jaxcnn.data import ArraySource

    train, _ = tiny_sources(size=8)
    x, y = synthetic_digits(32, 12)
    test = ArraySource(x[..., None], y, num_classes=10, split="test")
    with pytest.raises(ConfigValueError, match=r"eval_split='test' has images of shape \(12, 12, 1\), but .* has "
                                               r"\(8, 8, 1\)"):
        run_tiny(tmp_path / "run", train=train, test=test)
    assert not (tmp_path / "run").exists()
    record("test images 12x12 against train images 8x8", detail="refused at start (was: fails at the first eval)")


def test_a_resume_on_other_data_is_refused(tmp_path):
    workdir = tmp_path / "run"
    run_tiny(workdir, tiny_config(num_steps=2))
    train, test = tiny_sources()
    other = train.images[::-1].copy()
    from jaxcnn.data import ArraySource

    swapped = ArraySource(other, np.asarray(train.labels), num_classes=10, split="train")
    with pytest.raises(ConfigValueError, match=r"not the data the checkpoints were trained on \(fingerprint"):
        run_tiny(workdir, tiny_config(num_steps=2), train=swapped, test=test)
    record("resume with dataset.data_dir pointing at other files", detail="refused: the data's identity is saved "
           "in each checkpoint")


@pytest.mark.slow
def test_the_data_folder_used_is_printed_and_recorded(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data", n_train=64, n_test=32, size=16)
    env = child_env()
    env["JAXCNN_DATA_DIR"] = str(data)  # config.dataset.data_dir is '': the folder comes from here
    ran = subprocess.run(
        [sys.executable, "-m", "jaxcnn.cli", "train", "--config", str(KILL_CONFIG), "--config.num_steps=2",
         "--config.eval_every_steps=2", "--workdir", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"Data: mnist from {data / 'mnist'}" in ran.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data_folder"] == str(data / "mnist")
    record("data folder of a run", detail="printed at start and recorded in run.json")
