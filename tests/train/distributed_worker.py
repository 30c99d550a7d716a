"""Runs a few training steps of a tiny BatchNorm CNN on N (simulated CPU) devices; writes JSON.

Launched in a subprocess by the parallel tests, because the device count must be fixed (through
``XLA_FLAGS``, set by the caller) before JAX is imported. Usage::

    python distributed_worker.py '{"out": "x.json", "runs": [{"mode": "pmap", "devices": 8, "steps": 3}]}'

Each run: mode, devices (0: all), steps, optional model ("tiny", the default, or "allconv":
``models.AllConvNet`` with dropout on 28x28 images), save_dir (save a checkpoint after the steps) /
restore_dir (start from the checkpoint there instead of a fresh state), evaluate (false: no eval step). Runs share one process
(one JAX start-up). Top-level optional process_id/num_processes/port: multi-host, gloo
collectives. ``out`` receives the list of per-run results (from process 0).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

args = json.loads(sys.argv[1])
if args.get("num_processes", 1) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{args['port']}", num_processes=args["num_processes"], process_id=args["process_id"]
    )
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import numpy as np  # noqa: E402
import optax  # noqa: E402
from tiny_models import TinyCNN, bright_dark_arrays  # noqa: E402

from jaxcnn.train import (  # noqa: E402
    Checkpointer,
    DataParallel,
    classification_task,
    create_train_state,
    make_eval_step,
    make_train_step,
    with_axis_name,
)

BATCH = 16


def host_tree(tree):
    """Host NumPy copy of replicated arrays (the local copy; works across processes)."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree
    )


def run(spec: dict) -> dict:
    mode, steps = spec["mode"], spec["steps"]
    devices = jax.local_devices() if mode == "pmap" else jax.devices()
    if spec.get("devices"):
        devices = devices[: spec["devices"]]
    parallel = DataParallel(mode, devices)
    if spec.get("model", "tiny") == "allconv":
        from jaxcnn.models import AllConvNet

        model, size = AllConvNet(num_classes=2, width=2, dropout_rate=0.5), 28
    else:
        model, size = TinyCNN(num_classes=2), 8
    model = with_axis_name(model, parallel.axis_name)
    tx = optax.sgd(0.1, momentum=0.9)
    task = classification_task(2)
    images, labels = bright_dark_arrays(BATCH * 16, size=size, seed=1)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images[:1].astype(np.float32))
    start = 0
    if spec.get("restore_dir"):
        with Checkpointer(spec["restore_dir"], async_save=False) as ckpt:
            restored = ckpt.restore(state, sharding=parallel.replicated if parallel.mode != "pmap" else None)
        state, start = restored.state, restored.step
    state = parallel.put_state(state)
    train_step = parallel.compile_train_step(make_train_step(model, task, tx, axis_name=parallel.axis_name))
    eval_step = parallel.compile_eval_step(make_eval_step(model, task, axis_name=parallel.axis_name))
    p, count = jax.process_index(), jax.process_count()  # this process feeds rows [p*local, (p+1)*local)
    local = BATCH // count
    losses = []
    for s in range(start, start + steps):
        rows = slice(s * BATCH + p * local, s * BATCH + (p + 1) * local)
        batch = {"image": images[rows], "label": labels[rows]}
        state, metrics = train_step(state, parallel.put_batch(batch))
        losses.append(float(host_tree(metrics)["loss"]))
    end = start + steps
    rows = slice(end * BATCH + p * local, end * BATCH + (p + 1) * local)
    stats = {"loss_sum": np.nan, "count": np.nan}
    if spec.get("evaluate", True):
        stats = host_tree(eval_step(state, parallel.put_batch({"image": images[rows], "label": labels[rows]})))
    final = host_tree(parallel.get_state(state))
    if spec.get("save_dir"):
        with Checkpointer(spec["save_dir"], async_save=True) as ckpt:
            ckpt.save(int(final.step), parallel.get_state(state))
    if parallel.num_devices > 1:
        try:
            parallel.check_batch_size(parallel.num_devices + 1, "config.batch_size")
            raise AssertionError("check_batch_size accepted a batch that does not split evenly")
        except ValueError as err:
            assert f"config.batch_size={parallel.num_devices + 1}" in str(err), err
    return {
        "losses": losses,
        "eval_loss_sum": float(stats["loss_sum"]),
        "eval_count": float(stats["count"]),
        "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(final.params)],
        "batch_stats": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(final.batch_stats)],
        "step": int(final.step),
        "num_devices": parallel.num_devices,
        "mode": parallel.mode,
    }


def main() -> None:
    results = [run(spec) for spec in args["runs"]]
    if jax.process_index() == 0:
        with open(args["out"], "w") as f:
            json.dump(results, f)
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
