"""Training: state, step factories, optimizers, data parallelism, checkpoints and the loop.

Typical use::

    from jaxcnn.train import default_config, train_and_evaluate
    config = default_config()
    config.num_epochs = 2
    final = train_and_evaluate(config, "/tmp/mnist_run")   # {"eval_accuracy": 0.99, ...}
"""

from jaxcnn.train.builders import (
    build_model,
    dataset_num_classes,
    input_shape_for,
    load_sources,
    make_preprocessing,
    make_task_for,
)
from jaxcnn.train.checkpoint import (
    CheckpointWriteError,
    Checkpointer,
    CorruptCheckpointError,
    Restored,
    abstract_like,
    load_params,
    merge_matching,
)
from jaxcnn.train.config import default_config, validate_config
from jaxcnn.train.detection_task import DetectionTask, detection_task  # registers config.task = "detection"
from jaxcnn.train.evaluation import evaluate, evaluate_workdir
from jaxcnn.train.generation_task import GenerationTask, generation_config  # registers config.task="generation"
from jaxcnn.train.loop import NonFiniteError, train_and_evaluate
from jaxcnn.train.metric_writer import MetricWriter, read_metrics
from jaxcnn.train.optimizers import (
    SCHEDULES,
    freeze_labels,
    make_base_optimizer,
    make_optimizer,
    make_schedule,
    param_path,
    weight_decay_mask,
)
from jaxcnn.train.parallel import DATA_AXIS, PARALLEL_MODES, DataParallel, with_axis_name
from jaxcnn.train.plots import plot_confusion_matrix, plot_curves
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import make_eval_step, make_train_step, model_inputs
from jaxcnn.train.tasks import (
    TASKS,
    ClassificationTask,
    EvaluationContext,
    RegressionTask,
    SegmentationTask,
    Task,
    add_statistics,
    classification_task,
    make_task,
    register_task,
    registered_tasks,
    regression_task,
    segmentation_task,
    task_from_config,
)

__all__ = [
    "DetectionTask",
    "detection_task",
    "CheckpointWriteError",
    "ClassificationTask",
    "EvaluationContext",
    "GenerationTask",
    "RegressionTask",
    "SegmentationTask",
    "Checkpointer",
    "CorruptCheckpointError",
    "DATA_AXIS",
    "DataParallel",
    "MetricWriter",
    "NonFiniteError",
    "PARALLEL_MODES",
    "Restored",
    "SCHEDULES",
    "TASKS",
    "Task",
    "TrainState",
    "abstract_like",
    "add_statistics",
    "build_model",
    "classification_task",
    "create_train_state",
    "dataset_num_classes",
    "default_config",
    "evaluate",
    "evaluate_workdir",
    "freeze_labels",
    "input_shape_for",
    "load_params",
    "load_sources",
    "make_base_optimizer",
    "make_eval_step",
    "make_optimizer",
    "make_preprocessing",
    "make_schedule",
    "generation_config",
    "make_task",
    "make_task_for",
    "make_train_step",
    "merge_matching",
    "model_inputs",
    "param_path",
    "plot_confusion_matrix",
    "plot_curves",
    "read_metrics",
    "register_task",
    "registered_tasks",
    "regression_task",
    "segmentation_task",
    "task_from_config",
    "train_and_evaluate",
    "validate_config",
    "weight_decay_mask",
    "with_axis_name",
]
