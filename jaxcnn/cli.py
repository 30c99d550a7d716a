"""The ``jaxcnn`` command.

    jaxcnn train   --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist [--config.key=value ...]
    jaxcnn eval    --workdir runs/mnist [--checkpoint best|latest] [--split test] [--config.dataset.key=value ...]
    jaxcnn summary --config experiments/configs/mnist_simple_cnn.py [--input-shape 1,28,28,1]
    jaxcnn predict --workdir runs/det (--images a.png b.png | --split test[:16]) --out preds [--checkpoint best]
    jaxcnn sample  --workdir runs/mnist_ddpm --num 100 [--label 3] [--sampler ddim --steps 50] --out samples.npz

Rerunning ``train`` on an existing workdir resumes from its latest checkpoint; one ``train``
writes a workdir at a time (``jaxcnn.train.workdir_lock``). Exit codes (:data:`EXIT_CODES`):
0 done, 1 a runtime error (missing data, disk full, a corrupt checkpoint, the workdir in use
...), 2 bad usage or config (an unknown config file, argument, override key, or a value that
cannot work), 75 preempted (SIGTERM/SIGINT: a checkpoint was saved, rerun to resume), 130 aborted
by a second Ctrl-C. Errors are one message naming the file or field; ``--verbose`` adds the
traceback. The command sets no XLA flags; on CPU it compiles the steps with the
per-computation options of :mod:`jaxcnn.backends.cpu.options`, says so at start, and
``--config.xla_options=none`` turns them off. ``train`` switches the CPU kernels on
(:mod:`jaxcnn.backends.cpu`; says so at start, ``--config.cpu_kernels=False`` opts out).
``train`` and ``eval`` let the process keep the memory it frees
(:mod:`jaxcnn.backends.cpu.host_memory`; says so at start, ``JAXCNN_HOST_MEMORY=default`` opts
out). Full reference: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from jaxcnn.launch import ConfigError, apply_overrides, code_version, command_line, load_config_file, write_run_record


EXIT_OK, EXIT_RUNTIME_ERROR, EXIT_USAGE, EXIT_PREEMPTED, EXIT_ABORTED = 0, 1, 2, 75, 130
EXIT_CODES = {
    EXIT_OK: "done (train: completed)",
    EXIT_RUNTIME_ERROR: "runtime error: missing or damaged data, disk full, corrupt checkpoint, workdir in use ...",
    EXIT_USAGE: "bad usage or config: unknown file, argument, field or a value that cannot work; nothing written",
    EXIT_PREEMPTED: "train preempted by SIGTERM/SIGINT: a checkpoint was saved; rerun the same command to resume",
    EXIT_ABORTED: "aborted by a second Ctrl-C (resumes from the last checkpoint when rerun)",
}

_TRAIN_EPILOG = """\
config overrides:
  --config.a.b=value     set any field of the config, e.g. --config.optimizer.learning_rate=0.01,
                         --config.num_steps=500, --config.augment=random_crop,random_flip; an unknown
                         field or a value of the wrong type is an error (exit code 2)
  --config path.py:arg   pass 'arg' to the file's get_config(arg); shipped configs take ':smoke' (a
                         seconds-long run); an argument a config does not know is an error

Every config field is documented in docs/cli.md and in the docstring of jaxcnn.train.config
(python -c "import jaxcnn.train.config as c; help(c)").

exit codes: """ + "; ".join(f"{code} {text.split(':')[0]}" for code, text in EXIT_CODES.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Train, evaluate and inspect jaxcnn models.",
                                     epilog="exit codes: " + "; ".join(f"{c} {t}" for c, t in EXIT_CODES.items()))
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a config (resumes an existing workdir)", epilog=_TRAIN_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="config file, optionally path.py:arg (e.g. :smoke)")
    train.add_argument("--workdir", required=True, help="output folder; rerun to resume (one writer at a time)")
    evaluate = sub.add_parser("eval", help="evaluate a workdir's best or latest checkpoint",
                              epilog="--config.dataset.key=value overrides where the data comes from, e.g. "
                              "--config.dataset.data_dir=/data; for a generation run, "
                              "--config.task_options.classifier_workdir=runs/mnist_classifier (and quality_samples, "
                              "quality_steps) scores its samples with that classifier; the rest of the config is "
                              "the run's own.")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                          help="best: by the run's checkpoint.best_metric (recorded in the workdir)")
    evaluate.add_argument("--split", default="", help="split to evaluate on (default: the run's eval split)")
    summary = sub.add_parser("summary", help="print the model summary of a config")
    summary.add_argument("--config", required=True)
    summary.add_argument("--input-shape", default="", help="e.g. 1,28,28,1 (default: from the dataset)")
    predict = sub.add_parser("predict", help="run a workdir's model on image files or a split; write its predictions",
                             epilog="--config.dataset.key=value overrides where the data comes from (with --split).")
    predict.add_argument("--workdir", required=True)
    inputs = predict.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", nargs="+", help="image files of one size (converted to the model's channels)")
    inputs.add_argument("--split", help="a split of the run's dataset, e.g. test[:16] (true boxes drawn too)")
    predict.add_argument("--out", required=True, help="output folder: predictions.json, detections.png ...")
    predict.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    predict.add_argument("--batch-size", type=int, default=32)
    sample = sub.add_parser("sample", help="draw images from a generation workdir (config.task='generation')")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--num", type=int, required=True, help="number of images")
    sample.add_argument("--label", type=int, default=None,
                        help="class of every image (class-conditional models; default: classes in turn)")
    sample.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim")
    sample.add_argument("--steps", type=int, default=None,
                        help="sampling steps in [1, training timesteps] (default: 50 for ddim, all for ddpm)")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 as DDPM")
    sample.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance w (default: the run's task_options.guidance)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    sample.add_argument("--out", required=True, help="output .npz; the PNG grid is written beside it")
    for command in (train, evaluate, summary, predict, sample):
        command.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    return parser


class _UsageError(Exception):
    """Bad usage found after parsing (exit code 2)."""


def _check_workdir(parser, workdir: str) -> None:
    if not workdir.strip():
        parser.error("--workdir is empty; give an output folder (it would train into the current folder)")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        parser.error(f"--workdir {workdir!r} is a file, not a folder")


def _trained_workdir(parser, path: str) -> Path:
    """``--workdir`` of a finished or running ``train``: a folder holding its ``config.json``."""
    _check_workdir(parser, path)
    workdir = Path(path)
    if not (workdir / "config.json").exists():
        parser.error(f"--workdir {str(workdir)!r} has no config.json; is it a jaxcnn train workdir?")
    return workdir


# How a finished generation run is judged, not what it learned: the options jaxcnn eval may
# replace (the classifier a run is scored with can be trained after the run).
_EVAL_TASK_OPTIONS = ("classifier_workdir", "quality_samples", "quality_steps")


def _saved_overrides(parser, command: str, workdir: Path, overrides: Sequence[str],
                     task_options: Sequence[str] = ()) -> tuple[dict, dict]:
    """The run's ``config.dataset`` and the ``task_options`` fields named in ``task_options``, from
    ``config.json`` with the command's overrides applied: ``--config.dataset.*`` (where the data
    comes from) and ``--config.task_options.<name>`` for those names."""
    allowed = ("--config.dataset.",) + tuple(f"--config.task_options.{name}=" for name in task_options)
    bad = [o for o in overrides if not o.startswith(allowed)]
    if bad:
        extra = "".join(f", --config.task_options.{name}" for name in task_options)
        parser.error(f"{command} takes only --config.dataset.*{extra} overrides, got {bad}")
    import ml_collections

    from jaxcnn.train.resume_checks import read_config_json

    saved = ml_collections.ConfigDict(read_config_json(workdir))
    try:
        apply_overrides(saved, overrides)
    except ConfigError as err:
        parser.error(str(err))
    named = [o.split("=", 1)[0].removeprefix("--config.task_options.") for o in overrides
             if o.startswith("--config.task_options.")]
    return dict(saved.dataset.to_dict()), {name: saved.task_options[name] for name in named}


def _config(parser: argparse.ArgumentParser, spec: str, overrides: Sequence[str]):
    try:
        config = load_config_file(spec)
        apply_overrides(config, overrides)
        from jaxcnn.train import validate_config

        validate_config(config)
    except (ConfigError, ValueError, TypeError) as err:
        parser.error(str(err))
    return config


def _train(parser, args, overrides) -> int:
    _check_workdir(parser, args.workdir)
    config = _config(parser, args.config, overrides)
    if not any(o.startswith("--config.progress_bar") for o in overrides) and not sys.stderr.isatty():
        config.progress_bar = False  # a bar redrawn into a log file floods it; --config.progress_bar=true forces it
    from jaxcnn.train import train_and_evaluate
    from jaxcnn.train.loop import data_parallel_for
    from jaxcnn.train.resume_checks import check_resume_config

    try:  # the batch sizes against this machine's devices and the workdir, before any data is read
        data_parallel_for(config)
        check_resume_config(config, args.workdir)
    except ValueError as err:
        parser.error(str(err))

    start = time.time()
    code = code_version()  # the code this run starts from, not whatever is checked out when it ends
    final = train_and_evaluate(config, args.workdir)
    name = Path(args.config.partition(":")[0]).stem
    path = write_run_record(args.workdir, config, final, time.time() - start, command_line(), config_name=name,
                            code=code)
    print(json.dumps({"workdir": str(args.workdir), "run_record": str(path), **{
        k: v for k, v in final.items() if isinstance(v, (int, float, str))}}, indent=2))
    status = final.get("status", "completed")
    return {"completed": EXIT_OK, "preempted": EXIT_PREEMPTED}.get(status, EXIT_RUNTIME_ERROR)


def _eval(parser, args, overrides) -> int:
    workdir = _trained_workdir(parser, args.workdir)
    dataset, task_options = _saved_overrides(parser, "eval", workdir, overrides, _EVAL_TASK_OPTIONS)
    from jaxcnn.train import evaluate_workdir

    if args.split:
        dataset["eval_split"] = args.split
    metrics = evaluate_workdir(workdir, checkpoint=args.checkpoint, dataset=dataset, task_options=task_options)
    print(json.dumps(metrics, indent=2))
    return 0


def _summary(parser, args, overrides) -> int:
    config = _config(parser, args.config, overrides)
    from jaxcnn.summary import summary
    from jaxcnn.train import build_model, input_shape_for

    try:
        shape = tuple(int(s) for s in args.input_shape.split(",")) if args.input_shape else None
    except ValueError:
        parser.error(f"--input-shape={args.input_shape!r} must be comma-separated ints, e.g. 1,28,28,1")
    if shape is not None and (len(shape) != 4 or min(shape) < 1):
        parser.error(f"--input-shape={args.input_shape!r} must be 4 positive ints N,H,W,C, e.g. 1,28,28,1")
    shape, num_classes = input_shape_for(config, shape)
    try:
        text = summary(build_model(config, num_classes, axis_name=None), shape)
    except (ValueError, TypeError) as err:
        parser.error(f"--input-shape={args.input_shape!r} does not fit the model: {err}")
    print(text)
    return 0


def _predict(parser, args, overrides) -> int:
    workdir = _trained_workdir(parser, args.workdir)
    if not args.out.strip() or (os.path.exists(args.out) and not os.path.isdir(args.out)):
        parser.error(f"--out {args.out!r} must be a folder (it is created when missing)")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset, _ = _saved_overrides(parser, "predict", workdir, overrides)
    missing = [p for p in args.images or () if not os.path.isfile(p)]
    if missing:
        parser.error(f"--images: no such file(s) {missing}")
    from jaxcnn.train.prediction import predict_workdir

    try:
        result = predict_workdir(workdir, args.out, images=args.images, split=args.split,
                                 checkpoint=args.checkpoint, batch_size=args.batch_size, dataset=dataset)
    except ValueError as err:  # no predictions for this task, unreadable or mismatched images, a bad split
        raise _UsageError(str(err)) from err
    print(json.dumps(result, indent=2))
    return 0


def _sample(parser, args, overrides) -> int:
    workdir = _trained_workdir(parser, args.workdir)
    if overrides:
        parser.error(f"sample takes no --config.* overrides, got {list(overrides)}")
    if not args.out.endswith(".npz"):
        parser.error(f"--out {args.out!r} must name a .npz file")
    import ml_collections

    from jaxcnn.train.generation_task import SamplingArgumentError, sample_workdir
    from jaxcnn.train.resume_checks import read_config_json

    config = ml_collections.ConfigDict(read_config_json(workdir))
    if config.task != "generation":
        parser.error(f"--workdir {str(workdir)!r} trained task {config.task!r}; sample needs a 'generation' run")
    try:
        result = sample_workdir(workdir, args.num, label=args.label, sampler=args.sampler, steps=args.steps,
                                eta=args.eta, guidance=args.guidance, seed=args.seed, checkpoint=args.checkpoint,
                                out=args.out)
    except SamplingArgumentError as err:
        parser.error(f"argument --{err.argument}: {err}")
    print(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if not e.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like --config.field=value)")
    command = {"train": _train, "eval": _eval, "summary": _summary, "predict": _predict, "sample": _sample}[
        args.command
    ]
    if args.command in ("train", "eval"):
        from jaxcnn.backends.cpu import host_memory

        try:
            print(f"Host memory: {host_memory.keep_freed_memory()}", flush=True)
        except ValueError as err:
            parser.error(str(err))
    return _run_reporting_errors(parser, args, command, extra)


def _run_reporting_errors(parser, args, command, extra) -> int:
    """Runs the command; an error becomes one message (the traceback with ``--verbose``) and an exit code."""
    from jaxcnn.train.config_checks import ConfigValueError
    from jaxcnn.train.resume_checks import WorkdirFileError

    try:
        return command(parser, args, extra)
    except KeyboardInterrupt:
        print(f"jaxcnn {args.command}: aborted (Ctrl-C twice); a rerun resumes from the last checkpoint",
              file=sys.stderr, flush=True)
        return EXIT_ABORTED
    except (ConfigError, ConfigValueError, WorkdirFileError, _UsageError) as err:
        if args.verbose:
            traceback.print_exc()
        parser.error(str(err))
    except Exception as err:  # a runtime failure: one clear message, the traceback on request
        if args.verbose:
            traceback.print_exc()
        print(f"jaxcnn {args.command}: error: {type(err).__name__}: {err}" + ("" if args.verbose else "  (--verbose shows the traceback)"),
              file=sys.stderr, flush=True)
        return EXIT_RUNTIME_ERROR
    return EXIT_RUNTIME_ERROR  # unreachable: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
