"""Image generation by denoising diffusion as a task of the training engine: ``config.task = "generation"``.

The model (``config.model.name = "DiffusionUNet"``) is trained on the diffusion objective
(:func:`jaxcnn.diffusion.diffusion_loss`): each step draws timesteps and noise from the task
key, with label dropout for classifier-free guidance when ``config.task_options.class_conditional``.
Images are scaled to ``[-1, 1]`` by the engine's normalisation (``config.normalize.mean =
config.normalize.std = 0.5``, checked). The evaluation loss is the same objective at noise and
timesteps drawn from the engine's fixed evaluation key, so evaluations compare. The evaluation
extras write ``plots/samples.png``, a grid sampled with the evaluated (EMA, when on) weights.
Options live in ``config.task_options`` (:func:`generation_config`); see ``docs/diffusion.md``.
"""

from __future__ import annotations

import functools
import json
import os
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import diffusion as D
from jaxcnn.diffusion import NoiseSchedule
from jaxcnn.train.tasks import Task, example_weights, model_inputs, register_task

SAMPLE_CHUNK = 256  # samples drawn per compiled call; chunk i uses fold_in(key, i), so N >= 256 does not change earlier chunks


def generation_config() -> ml_collections.ConfigDict:
    """The defaults of ``config.task_options`` (experiment configs set ``config.task_options = generation_config()``).

    Fields: ``class_conditional`` (the model embeds the dataset's classes and a null label),
    ``label_dropout`` (probability of the null label in training, for classifier-free guidance),
    ``schedule`` (``"linear"`` or ``"cosine"``), ``num_timesteps`` (``T``), ``prediction``
    (``"epsilon"`` or ``"v"``), ``image_shape`` (``(H, W, C)`` of the training images; ``jaxcnn
    sample`` reads it), and for the grid of the evaluation extras ``grid_samples`` (0: no grid),
    ``sampler``, ``sample_steps``, ``guidance`` (``w``: ``(1 + w) cond - w uncond``).
    Sample quality, measured by ``jaxcnn eval`` when ``classifier_workdir`` names a classifier's
    workdir trained on the same dataset: ``quality_samples`` samples drawn with DDIM in
    ``quality_steps`` steps (see :func:`sample_quality`).
    """
    g = ml_collections.ConfigDict()
    g.class_conditional = True
    g.label_dropout = 0.1
    g.schedule = "cosine"
    g.num_timesteps = 1000
    g.prediction = "epsilon"
    g.image_shape = (28, 28, 1)
    g.grid_samples = 100
    g.sampler = "ddim"
    g.sample_steps = 20
    g.guidance = 2.0
    g.classifier_workdir = ""
    g.quality_samples = 1000
    g.quality_steps = 50
    return g


class GenerationTask(Task):
    """Denoising diffusion: outputs are the per-example objective ``(N,)``; metric ``loss`` (lower is better).

    Args:
      num_classes: ``K`` for a class-conditional model (labels ``0 .. K-1``, null label ``K``),
        ``None`` for an unconditional one.
      schedule: a :class:`jaxcnn.diffusion.NoiseSchedule`.
      image_shape: ``(H, W, C)`` of the images.
      label_dropout, prediction: as in :func:`jaxcnn.diffusion.diffusion_loss`.
      grid_samples, sampler, sample_steps, guidance: the grid of the evaluation extras.
      normalize: ``(mean, std)`` of the engine's normalisation, to turn samples back into pixels.
    """

    name = "generation"
    metric_modes = {"loss": "min"}

    def __init__(self, num_classes: int | None, schedule: NoiseSchedule, image_shape: Sequence[int], *,
                 label_dropout: float = 0.1, prediction: str = "epsilon", grid_samples: int = 100,
                 sampler: str = "ddim", sample_steps: int = 20, guidance: float = 0.0,
                 normalize: tuple[float, float] = (0.5, 0.5), classifier_workdir: str = "",
                 quality_samples: int = 1000, quality_steps: int = 50, config: Any = None):
        self.num_classes = num_classes
        self.schedule = schedule
        self.image_shape = tuple(int(s) for s in image_shape)
        self.label_dropout = float(label_dropout) if num_classes else 0.0
        self.prediction = prediction
        self.grid_samples = int(grid_samples)
        self.sampler = sampler
        self.sample_steps = int(sample_steps)
        self.guidance = float(guidance) if num_classes else 0.0
        self.normalize = normalize
        self.classifier_workdir = classifier_workdir
        self.quality_samples = int(quality_samples)
        self.quality_steps = int(quality_steps)
        self.config = config  # the run's config: its training split is the floor of the sample quality

    def forward(self, apply, batch, key, *, train):
        x0 = model_inputs(batch)
        if tuple(x0.shape[1:]) != self.image_shape:
            raise ValueError(f"generation: images of shape {tuple(x0.shape[1:])} but config.task_options.image_shape="
                             f"{self.image_shape}; set it to the dataset's (H, W, C)")
        labels = batch["label"].astype(jnp.int32) if self.num_classes else None
        return D.diffusion_loss(
            lambda _, xt, t, y: apply(xt, t, y), None, key, x0, self.schedule, labels=labels,
            num_classes=self.num_classes, label_dropout=self.label_dropout if train else 0.0,
            prediction=self.prediction, reduction="none",
        )

    def loss(self, outputs, batch):
        w = example_weights(batch)
        return jnp.sum(outputs * w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(self, outputs, batch):
        w = example_weights(batch)
        return {"loss_sum": jnp.sum(outputs * w), "count": jnp.sum(w)}

    def summarize(self, sums):
        return {"loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}

    def to_pixels(self, x: Any) -> np.ndarray:
        """Model-space images ``(N, H, W, C)`` (``[-1, 1]``) as uint8 pixels, undoing the normalisation."""
        mean, std = self.normalize
        return np.clip(np.round((np.asarray(x, np.float64) * std + mean) * 255.0), 0, 255).astype(np.uint8)

    def evaluation_extras(self, context):
        metrics = None
        if self.classifier_workdir and context.statistics is None:  # jaxcnn eval of a saved checkpoint
            metrics = sample_quality(self, context.model, context.variables["params"], context.eval_source)
            with open(os.path.join(context.workdir, "sample_quality.json"), "w") as f:
                json.dump({**metrics, "classifier_workdir": self.classifier_workdir}, f, indent=2)
        if self.grid_samples < 1:
            return metrics
        k = self.num_classes
        per_row = int(np.ceil(np.sqrt(self.grid_samples))) if not k else max(1, self.grid_samples // k)
        labels = None if not k else np.repeat(np.arange(k, dtype=np.int32), per_row)
        n = self.grid_samples if not k else k * per_row
        images = generate(context.model, context.variables["params"], self, jax.random.PRNGKey(0), n, labels=labels,
                          sampler=self.sampler, steps=self.sample_steps, guidance=self.guidance)
        save_grid(self.to_pixels(images), os.path.join(context.workdir, "plots", "samples.png"), columns=per_row)
        return metrics


class SampleJudge:
    """A classifier's view of samples: Fréchet distance to real images and label accuracy.

    Built by :func:`sample_judge`: ``classifier`` and ``variables`` of a ``jaxcnn train``
    classification workdir (its best checkpoint, EMA weights when kept), the statistics of
    ``n`` evaluation images (``real``) and the floor: the distance of ``n`` training images to
    those same evaluation images.
    """

    def __init__(self, classifier: Any, variables: Any, normalize: tuple[float, float],
                 train_images: np.ndarray, test_images: np.ndarray):
        self.classifier, self.variables, self.normalize = classifier, variables, normalize
        self.real = D.feature_statistics(self.features(test_images))
        self.floor = D.frechet_distance(*D.feature_statistics(self.features(train_images)), *self.real)

    def classifier_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels ``(N, H, W, C)`` normalised as the classifier was trained."""
        mean, std = self.normalize
        return ((np.asarray(pixels).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        return D.classifier_features(self.classifier, self.variables, self.classifier_input(pixels))

    def score(self, pixels: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """``{"frechet_distance", "frechet_floor"[, "label_accuracy"]}`` of uint8 samples ``(N, H, W, C)``
        (``N >= 2``); ``label_accuracy`` when ``labels: (N,)`` (the classes they were drawn for) are given."""
        metrics = {"frechet_distance": D.frechet_distance(*D.feature_statistics(self.features(pixels)), *self.real),
                   "frechet_floor": self.floor}
        if labels is not None:
            logits = np.concatenate([
                np.asarray(self.classifier.apply(self.variables, self.classifier_input(pixels[i:i + 500]),
                                                 train=False))
                for i in range(0, len(pixels), 500)])
            metrics["label_accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))
        return metrics


def sample_judge(classifier_workdir: str | os.PathLike, config: ml_collections.ConfigDict, n: int,
                 eval_source: Any = None) -> SampleJudge:
    """The :class:`SampleJudge` of ``classifier_workdir`` for the generation run of ``config``:
    its real images are the first ``n`` of the evaluation split (``eval_source``, loaded from
    ``config`` when ``None``), its floor the first ``n`` training images."""
    from jaxcnn.train.builders import build_model, dataset_num_classes, load_sources
    from jaxcnn.train.evaluation import _restore_chosen
    from jaxcnn.train.resume_checks import read_config_json

    directory = os.fspath(classifier_workdir)
    classifier_config = ml_collections.ConfigDict(read_config_json(directory))
    if classifier_config.task != "classification":
        raise ValueError(f"config.task_options.classifier_workdir={directory!r} trained task "
                         f"{classifier_config.task!r}, not 'classification'")
    train_source, loaded_eval = load_sources(config)
    eval_source = loaded_eval if eval_source is None else eval_source
    if len(eval_source) < n:
        raise ValueError(f"config.task_options.quality_samples={n} but the evaluation split has {len(eval_source)} "
                         f"images; the Fréchet distance compares as many real images as samples")
    if len(train_source) < n:
        raise ValueError(f"config.task_options.quality_samples={n} but the training split has {len(train_source)}")
    _, variables, _ = _restore_chosen(os.path.join(directory, "checkpoints"), "best")
    classifier_params = variables["ema_params"] if variables["ema_params"] is not None else variables["params"]
    classifier_variables = {"params": classifier_params, **({"batch_stats": variables["batch_stats"]}
                                                             if variables["batch_stats"] else {})}
    classifier = build_model(classifier_config, dataset_num_classes(classifier_config, train_source), None)
    return SampleJudge(classifier, classifier_variables,
                       (float(classifier_config.normalize.mean), float(classifier_config.normalize.std)),
                       np.stack([np.asarray(train_source[i]["image"]) for i in range(n)]),
                       np.stack([np.asarray(eval_source[i]["image"]) for i in range(n)]))


def sample_quality(task: GenerationTask, model: Any, params: Any, eval_source: Any) -> dict[str, float]:
    """Fréchet distance and label accuracy of ``task.quality_samples`` samples, in a classifier's eyes.

    The classifier is the best checkpoint (EMA weights when kept) of ``task.classifier_workdir``,
    a ``jaxcnn train`` classification run on the same dataset; its features are the input of its
    last layer (:func:`jaxcnn.diffusion.classifier_features`). ``n = quality_samples`` samples
    (DDIM, ``quality_steps`` steps, the task's guidance, key 0; classes in turn for a
    class-conditional model) are compared with the first ``n`` images of the evaluation split
    (``frechet_distance``); ``frechet_floor`` compares the first ``n`` training images with
    the same ``n`` evaluation images. ``label_accuracy`` (class-conditional models): the
    fraction of samples the classifier assigns to the label they were drawn for.
    """
    n = task.quality_samples
    judge = sample_judge(task.classifier_workdir, task.config, n, eval_source)
    k = task.num_classes
    labels = (np.arange(n) % k).astype(np.int32) if k else None
    generated = task.to_pixels(generate(model, params, task, jax.random.PRNGKey(0), n, labels=labels,
                                        sampler="ddim", steps=task.quality_steps, guidance=task.guidance))
    return {**judge.score(generated, labels), "quality_samples": n, "quality_steps": task.quality_steps}


def _draw(params: Any, key: jax.Array, labels: jax.Array | None, *, model: Any, task: GenerationTask, n: int,
          sampler: str, steps: int | None, eta: float, guidance: float) -> jax.Array:
    return D.sample(lambda x, t, y: model.apply({"params": params}, x, t, y), task.schedule, key,
                    (n, *task.image_shape), sampler=sampler, steps=steps, eta=eta, labels=labels,
                    num_classes=task.num_classes, guidance_scale=guidance, prediction=task.prediction, clip_x0=1.0)


# The compiled samplers of each task, by model, settings and argument shapes: repeated generate
# calls compile once. Keyed by the task object (dropped with it) and the model's id (the entry
# holds the model, so the id stays its own); a model built from config.json need not be hashable.
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sampling_program(model: Any, task: GenerationTask, params: Any, key: jax.Array, labels: jax.Array | None,
                      **settings: Any) -> Any:
    """The compiled ``_draw`` for these settings and for arguments shaped as ``(params, key, labels)``."""
    leaves, tree = jax.tree.flatten((params, key, labels))
    shapes = (tree, tuple((np.shape(a), str(a.dtype) if hasattr(a, "dtype") else str(np.result_type(a)))
                        for a in leaves))
    program_key = (id(model), tuple(sorted(settings.items())), shapes)
    programs = _PROGRAMS.setdefault(task, {})
    if program_key not in programs:
        draw = jax.jit(functools.partial(_draw, model=model, task=task, **settings))
        programs[program_key] = (model, draw.lower(params, key, labels).compile())
    return programs[program_key][1]


def _chunks(model: Any, params: Any, task: GenerationTask, key: jax.Array, num: int, labels: np.ndarray | None,
            settings: dict[str, Any]):
    """The compiled sampler and the arguments of each chunk ``(key_i, labels_i, n_i)``."""
    chunk = min(num, SAMPLE_CHUNK)
    args = []
    for i, start in enumerate(range(0, num, chunk)):
        n = min(chunk, num - start)
        y = None
        if labels is not None:
            y = jnp.asarray(np.pad(np.asarray(labels[start:start + n]), (0, chunk - n)), jnp.int32)
        args.append((jax.random.fold_in(key, i), y, n))
    draw = _sampling_program(model, task, params, args[0][0], args[0][1], n=chunk, **settings)
    return draw, args


def generate(model: Any, params: Any, task: GenerationTask, key: jax.Array, num: int, *,
             labels: np.ndarray | None = None, sampler: str = "ddim", steps: int | None = None,
             eta: float = 0.0, guidance: float = 0.0, compile_only: bool = False) -> np.ndarray | None:
    """``num`` samples ``(num, H, W, C)`` float32 in ``[-1, 1]`` from ``model`` with ``params``.

    Drawn in chunks of ``min(num, SAMPLE_CHUNK)`` (the last one padded: one compiled shape),
    chunk ``i`` from ``fold_in(key, i)``: the same key gives the same images. ``labels: (num,)``
    int for a class-conditional model. The compiled sampler is kept for later calls with the
    same model, task, chunk and settings; ``compile_only=True`` compiles it, draws nothing and
    returns ``None`` (to time sampling without its compilation).
    """
    settings = {"sampler": sampler, "steps": steps, "eta": float(eta), "guidance": float(guidance)}
    draw, args = _chunks(model, params, task, key, num, labels, settings)
    if compile_only:
        return None
    return np.concatenate([np.asarray(draw(params, k, y), np.float32)[:n] for k, y, n in args], axis=0)


def save_grid(images: np.ndarray, path: str | os.PathLike, *, columns: int, pad: int = 2) -> str:
    """Writes uint8 images ``(N, H, W, C)`` as one PNG grid, ``columns`` per row, ``pad`` black pixels apart."""
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise ValueError(f"save_grid: images must be uint8 (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return os.fspath(path)


def generation_task_from_config(config: ml_collections.ConfigDict, num_classes: int) -> GenerationTask:
    """The task of ``config.task_options`` (checked; a ``ValueError`` names the field)."""
    g = config.get("task_options") or ml_collections.ConfigDict()
    defaults = generation_config()
    unknown = sorted(set(g.keys()) - set(defaults.keys()))
    if unknown:
        raise ValueError(f"config.task_options has unknown fields {unknown}; its fields are {sorted(defaults.keys())}")
    g = {**defaults.to_dict(), **g.to_dict()}
    if (float(config.normalize.mean), float(config.normalize.std)) != (0.5, 0.5):
        raise ValueError(f"config.task='generation' trains on images in [-1, 1]: config.normalize.mean and .std must "
                         f"be 0.5, got {config.normalize.mean} and {config.normalize.std}")
    conditional = g["class_conditional"]
    if not isinstance(conditional, bool):
        raise ValueError(f"config.task_options.class_conditional must be a bool, got {conditional!r}")
    if conditional and num_classes < 2:
        raise ValueError(f"config.task_options.class_conditional=True needs config.dataset.num_classes >= 2 (or a "
                         f"dataset that states its classes), got {num_classes}")
    if g["schedule"] not in D.SCHEDULES:
        raise ValueError(f"config.task_options.schedule={g['schedule']!r} is not one of {D.SCHEDULES}")
    t_max = g["num_timesteps"]
    if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
        raise ValueError(f"config.task_options.num_timesteps must be a positive int, got {t_max!r}")
    if g["prediction"] not in D.PREDICTIONS:
        raise ValueError(f"config.task_options.prediction={g['prediction']!r} is not one of {D.PREDICTIONS}")
    if not 0.0 <= float(g["label_dropout"]) < 1.0:
        raise ValueError(f"config.task_options.label_dropout must be in [0, 1), got {g['label_dropout']!r}")
    shape = tuple(g["image_shape"])
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"config.task_options.image_shape must be three positive ints (H, W, C), got {shape!r}")
    if g["sampler"] not in D.SAMPLERS:
        raise ValueError(f"config.task_options.sampler={g['sampler']!r} is not one of {D.SAMPLERS}")
    if not isinstance(g["sample_steps"], int) or not 1 <= g["sample_steps"] <= t_max:
        raise ValueError(f"config.task_options.sample_steps must be an int in [1, num_timesteps={t_max}], "
                         f"got {g['sample_steps']!r}")
    if float(g["guidance"]) < 0 or (float(g["guidance"]) > 0 and not conditional):
        raise ValueError(f"config.task_options.guidance={g['guidance']!r} must be >= 0, and 0 without "
                         f"class_conditional")
    if not isinstance(g["quality_samples"], int) or g["quality_samples"] < 2:
        raise ValueError(f"config.task_options.quality_samples must be an int >= 2, got {g['quality_samples']!r}")
    if g["classifier_workdir"] and (not isinstance(g["quality_steps"], int) or not 1 <= g["quality_steps"] <= t_max):
        raise ValueError(f"config.task_options.quality_steps must be an int in [1, num_timesteps={t_max}], "
                         f"got {g['quality_steps']!r}")
    if not isinstance(g["grid_samples"], int) or g["grid_samples"] < 0:
        raise ValueError(f"config.task_options.grid_samples must be an int >= 0, got {g['grid_samples']!r}")
    return GenerationTask(
        num_classes if conditional else None, D.make_schedule(g["schedule"], t_max), shape,
        label_dropout=g["label_dropout"], prediction=g["prediction"], grid_samples=g["grid_samples"],
        sampler=g["sampler"], sample_steps=g["sample_steps"], guidance=float(g["guidance"]),
        normalize=(float(config.normalize.mean), float(config.normalize.std)),
        classifier_workdir=str(g["classifier_workdir"]), quality_samples=g["quality_samples"],
        quality_steps=g["quality_steps"], config=config,
    )


register_task("generation", generation_task_from_config)


class SamplingArgumentError(ValueError):
    """An argument of :func:`sample_workdir` that cannot work with the run (the ``jaxcnn`` command exits 2).

    ``argument``: its name (``"label"``, ``"steps"`` ...; the command's option is ``--`` + it).
    """

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


def _check_int(value: Any, name: str, low: int, high: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise SamplingArgumentError(name, f"{name}={value!r} must be an int {bound}{why}")
    return int(value)


class Generator(NamedTuple):
    """A generation workdir's checkpoint, ready to sample: see :func:`load_generator`."""
    model: Any
    params: Any
    task: GenerationTask
    num_classes: int  # 0 for an unconditional model
    step: int
    weights: str  # "ema" or "params"


def load_generator(workdir: str | os.PathLike, checkpoint: str = "best") -> Generator:
    """The model, the parameters (EMA weights when kept) and the task of a generation workdir's
    ``"best"`` or ``"latest"`` checkpoint; pass them to :func:`generate`."""
    from jaxcnn.train.builders import build_model
    from jaxcnn.train.evaluation import _restore_chosen
    from jaxcnn.train.resume_checks import read_config_json

    config = ml_collections.ConfigDict(read_config_json(os.fspath(workdir)))
    step, variables, _ = _restore_chosen(os.path.join(os.fspath(workdir), "checkpoints"), checkpoint)
    use_ema = variables["ema_params"] is not None
    params = variables["ema_params"] if use_ema else variables["params"]
    conditional = bool(config.task_options.get("class_conditional", True))
    num_classes = int(params["class_embedding"].shape[0]) - 1 if conditional else 0
    return Generator(build_model(config, num_classes, None), params, generation_task_from_config(config, num_classes),
                     num_classes, step, "ema" if use_ema else "params")


def sample_workdir(workdir: str | os.PathLike, num: int, *, label: int | None = None, sampler: str = "ddim",
                   steps: int | None = None, eta: float = 0.0, guidance: float | None = None, seed: int = 0,
                   checkpoint: str = "best", out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Draws ``num`` images from a generation workdir's best or latest checkpoint (EMA weights when kept).

    Returns ``{"images": uint8 (num, H, W, C), "labels": int32 (num,), ...}`` (labels ``-1`` for an
    unconditional model; a class-conditional one without ``label`` draws the classes in turn,
    ``0, 1, .., K-1, 0, ..``). ``steps``: default 50 (``ddim``, at most ``T``) or all ``T``
    (``ddpm``); ``guidance``: default the run's ``task_options.guidance``. With ``out`` (a
    ``.npz``) writes ``images`` and ``labels`` there and a PNG grid beside it, and returns the
    paths and settings instead of the arrays. The same ``seed`` gives the same images.
    Raises :class:`SamplingArgumentError` naming the argument that cannot work with the run.
    """
    import time

    from jaxcnn.train.resume_checks import read_config_json

    config = ml_collections.ConfigDict(read_config_json(os.fspath(workdir)))
    if config.task != "generation":
        raise SamplingArgumentError("workdir", f"workdir {os.fspath(workdir)!r} trained task {config.task!r}, "
                                               f"not 'generation'")
    num = _check_int(num, "num", 1)
    seed = _check_int(seed, "seed", 0, 2**32 - 1)
    if sampler not in D.SAMPLERS:
        raise SamplingArgumentError("sampler", f"sampler={sampler!r} is not one of {D.SAMPLERS}")
    if checkpoint not in ("best", "latest"):
        raise SamplingArgumentError("checkpoint", f"checkpoint={checkpoint!r} must be 'best' or 'latest'")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
        raise SamplingArgumentError("eta", f"eta={eta!r} must be a number >= 0")
    if eta and sampler != "ddim":
        raise SamplingArgumentError("eta", f"eta={eta!r} applies to sampler='ddim' only, got sampler={sampler!r}")
    conditional = bool(config.task_options.get("class_conditional", True))
    num_timesteps = int(config.task_options.get("num_timesteps", 1000))
    if steps is None:
        steps = min(50, num_timesteps) if sampler == "ddim" else num_timesteps
    steps = _check_int(steps, "steps", 1, num_timesteps, f" (the run trained with {num_timesteps} timesteps)")

    generator = load_generator(workdir, checkpoint)
    task, num_classes = generator.task, generator.num_classes
    if guidance is None:
        guidance = task.guidance
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not guidance >= 0:
        raise SamplingArgumentError("guidance", f"guidance={guidance!r} must be a number >= 0")
    if guidance and not conditional:
        raise SamplingArgumentError("guidance", f"guidance={guidance!r} needs a class-conditional model; this "
                                    f"run's is unconditional (task_options.class_conditional=False)")
    if label is not None:
        if not conditional:
            raise SamplingArgumentError("label", f"label={label!r} needs a class-conditional model; this "
                                        f"run's is unconditional (task_options.class_conditional=False)")
        label = _check_int(label, "label", 0, num_classes - 1, f" (the run's classes are 0 .. {num_classes - 1})")
        labels = np.full((num,), label, np.int32)
    elif conditional:
        labels = (np.arange(num) % num_classes).astype(np.int32)
    else:
        labels = np.full((num,), -1, np.int32)

    start = time.time()
    images = task.to_pixels(generate(generator.model, generator.params, task, jax.random.PRNGKey(seed), num,
                                     labels=labels if conditional else None, sampler=sampler, steps=steps,
                                     eta=float(eta), guidance=float(guidance)))
    settings = {"num": num, "step": generator.step, "checkpoint": checkpoint, "weights": generator.weights,
                "sampler": sampler, "steps": steps, "eta": float(eta), "guidance": float(guidance), "seed": seed,
                "seconds": round(time.time() - start, 3)}
    if out is None:
        return {"images": images, "labels": labels, **settings}
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez_compressed(out, images=images, labels=labels)  # 1,000 MNIST samples: 476 KB, not 772
    columns = num_classes if conditional and label is None else int(np.ceil(np.sqrt(num)))
    grid = save_grid(images, os.path.splitext(out)[0] + ".png", columns=columns)
    return {"out": out, "grid": grid, **settings}
