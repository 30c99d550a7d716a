"""``train_and_evaluate`` of a tiny CNN in one process of a (possibly multi-host) run.

Usage: ``python loop_worker.py '{"workdir": ..., "parallel": "jit", "process_id": 0,
"num_processes": 2, "port": 12345}'`` (device count from ``XLA_FLAGS``); prints
``RESULT <json>`` on its last line. ``make_config``/``tiny_sources`` give the in-process
reference the same run.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402


def make_config(parallel: str = "none"):
    from jaxcnn.train import default_config

    config = default_config()
    config.batch_size = 16
    config.num_steps = 6
    config.log_every_steps = 1
    config.eval_every_steps = 3
    config.checkpoint.every_steps = 4
    config.progress_bar = False
    config.plots = False
    config.tensorboard = False
    config.parallel = parallel
    return config


def run(workdir: str, parallel: str = "none") -> dict:
    from tiny_models import TinyCNN, sources

    from jaxcnn.train import train_and_evaluate

    train, test = sources(64, 24)
    return train_and_evaluate(
        make_config(parallel), workdir, train_source=train, eval_source=test, model=TinyCNN(num_classes=2)
    )


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    if args.get("num_processes", 1) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"localhost:{args['port']}", num_processes=args["num_processes"], process_id=args["process_id"]
        )
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    result = run(args["workdir"], args["parallel"])
    print("RESULT " + json.dumps(result), flush=True)
    if args.get("num_processes", 1) > 1:
        jax.distributed.shutdown()
