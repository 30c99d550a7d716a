"""The ``jaxcnn`` command.

    jaxcnn train   --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist [--config.key=value ...]
    jaxcnn eval    --workdir runs/mnist [--checkpoint best|latest]
    jaxcnn summary --config experiments/configs/mnist_simple_cnn.py

Rerunning ``train`` on an existing workdir resumes from its latest checkpoint. Bad usage
(an unknown config file, an unknown override key, a value of the wrong type) exits with
code 2 and a message naming the problem. The command sets no XLA flags; on CPU it compiles
the steps with the per-computation options of :mod:`jaxcnn.backends.cpu.options`, says so at start,
and ``--config.xla_options=none`` turns them off. ``train`` switches the CPU kernels on
(:mod:`jaxcnn.backends.cpu`; says so at start, ``--config.cpu_kernels=False`` opts out).
``train`` and ``eval`` let the process keep
the memory it frees (:mod:`jaxcnn.backends.cpu.host_memory`; says so at start, ``JAXCNN_HOST_MEMORY=default``
opts out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jaxcnn.launch import ConfigError, apply_overrides, code_version, command_line, load_config_file, write_run_record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Train, evaluate and inspect jaxcnn models.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a config (resumes an existing workdir)")
    train.add_argument("--config", required=True, help="config file, optionally path.py:arg (e.g. :smoke)")
    train.add_argument("--workdir", required=True, help="output folder; rerun to resume")
    evaluate = sub.add_parser("eval", help="evaluate a workdir's best or latest checkpoint")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    summary = sub.add_parser("summary", help="print the model summary of a config")
    summary.add_argument("--config", required=True)
    summary.add_argument("--input-shape", default="", help="e.g. 1,28,28,1 (default: from the dataset)")
    return parser


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
    config = _config(parser, args.config, overrides)
    from jaxcnn.train import train_and_evaluate
    from jaxcnn.train.loop import check_resume_config, data_parallel_for

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
    return 0 if final.get("status", "completed") in ("completed", "preempted") else 1


def _eval(parser, args, overrides) -> int:
    if overrides:
        parser.error(f"eval takes no config overrides, got {list(overrides)}")
    workdir = Path(args.workdir)
    if not (workdir / "config.json").exists():
        parser.error(f"--workdir {str(workdir)!r} has no config.json; is it a jaxcnn train workdir?")
    from jaxcnn.train import evaluate_workdir

    metrics = evaluate_workdir(workdir, checkpoint=args.checkpoint)
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
    shape, num_classes = input_shape_for(config, shape)
    print(summary(build_model(config, num_classes, axis_name=None), shape))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if not e.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like --config.field=value)")
    command = {"train": _train, "eval": _eval, "summary": _summary}[args.command]
    if args.command in ("train", "eval"):
        from jaxcnn.backends.cpu import host_memory

        try:
            print(f"Host memory: {host_memory.keep_freed_memory()}", flush=True)
        except ValueError as err:
            parser.error(str(err))
    return command(parser, args, extra)


if __name__ == "__main__":
    sys.exit(main())
