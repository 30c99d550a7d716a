"""Throughput of the input pipeline alone, against the SimpleCNN train step it has to feed.

Command (from the repository root; MNIST IDX files under $JAXCNN_DATA_DIR or --data-dir)::

    python -m experiments.benchmarks.data_pipeline            # writes results/data_pipeline.json

Measures, for MNIST train with a global batch of 128 (one process):

- ``host``: ``BatchLoader`` batches/s on the host (grain, NumPy; shuffled, uint8);
- ``device``: the same, moved to the device by ``prefetch_to_device``;
- ``device_augment``: plus a jitted on-device augmentation (pad-4 random crop, random affine of
  up to 10 degrees / 10% shift / 0.9-1.1 zoom, normalisation) per batch;
- ``train_step``: SimpleCNN (Conv32-pool-Conv64-pool-Dense1024-Dense10) Adam train steps/s on a
  batch already on the device,

and the ratio pipeline / train step (target: >= 5 for every pipeline variant). The JSON holds
the machine, versions and the command next to the numbers. Numbers depend on the machine; rerun
rather than copy them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxcnn.data import BatchLoader, augment, load, prefetch_to_device

RESULTS = Path(__file__).resolve().parent / "results" / "data_pipeline.json"


def rate(iterator, num_batches: int, warmup: int, finish=lambda batch: None) -> float:
    """Batches per second over ``num_batches`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        finish(next(iterator))
    start = time.perf_counter()
    for _ in range(num_batches):
        finish(next(iterator))
    return num_batches / (time.perf_counter() - start)


def block(batch):
    jax.block_until_ready(batch)


def make_augment():
    return jax.jit(augment.compose(
        partial(augment.random_crop, padding=4),
        partial(augment.random_affine, max_rotation=10.0, max_translation=0.1, scale_range=(0.9, 1.1)),
        partial(augment.normalize, mean=0.1307, std=0.3081),
    ))


def train_step_rate(sample: dict, num_steps: int, warmup: int) -> tuple[float, str]:
    """SimpleCNN + Adam steps/s; uses jaxcnn.models / jaxcnn.train when they import and run."""
    images = jnp.asarray(sample["image"])
    batch = {"image": images, "label": jnp.asarray(sample["label"]), "mask": jnp.asarray(sample["mask"])}
    try:
        import optax

        from jaxcnn.models import SimpleCNN
        from jaxcnn.train import classification_task, create_train_state, make_train_step

        model = SimpleCNN(num_classes=10)
        tx = optax.adam(1e-3)
        state = create_train_state(model, tx, jax.random.PRNGKey(0), images)
        step = jax.jit(make_train_step(model, classification_task(10), tx), donate_argnums=0)
        used = "jaxcnn.models.SimpleCNN + jaxcnn.train.make_train_step"
    except Exception as err:  # The packages may be absent or mid-change; keep the benchmark usable.
        print(f"(jaxcnn.train unavailable: {type(err).__name__}: {err}; using an inline flax step)")
        state, step = _inline_train_step(images)
        used = "inline flax.linen SimpleCNN + optax.adam"

    def run(state):
        state, metrics = step(state, batch)
        return state, metrics

    for _ in range(warmup):
        state, metrics = run(state)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = run(state)
    jax.block_until_ready(metrics)
    return num_steps / (time.perf_counter() - start), used


def _inline_train_step(images):
    import flax.linen as nn
    import optax

    class SimpleCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), (2, 2))
            x = nn.relu(nn.Dense(1024)(x.reshape(x.shape[0], -1)))
            return nn.Dense(10)(x)

    model, tx = SimpleCNN(), optax.adam(1e-3)
    with jax.numpy_dtype_promotion("standard"):
        params = model.init(jax.random.PRNGKey(0), images.astype(jnp.float32))
        state = (params, tx.init(params))

    def step(state, batch):
        params, opt_state = state
        x = batch["image"].astype(jnp.float32) / 255.0

        def loss_fn(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        with jax.numpy_dtype_promotion("standard"):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": loss}

    return state, jax.jit(step, donate_argnums=0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with mnist/ IDX files (default $JAXCNN_DATA_DIR)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-batches", type=int, default=300, help="timed batches per pipeline variant")
    parser.add_argument("--num-steps", type=int, default=30, help="timed train steps")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    source = load("mnist", "train", data_dir=args.data_dir)
    loader = BatchLoader(source, args.batch_size, seed=0, shard_index=0, shard_count=1)
    warmup = 10

    results = {"host": rate(iter(loader), args.num_batches, warmup)}
    results["device"] = rate(prefetch_to_device(iter(loader), 2), args.num_batches, warmup, block)
    aug = make_augment()
    keys = iter(range(1 << 30))
    base_key = jax.random.key(0)
    results["device_augment"] = rate(
        prefetch_to_device(iter(loader), 2), args.num_batches, warmup,
        lambda b: block(aug(jax.random.fold_in(base_key, next(keys)), b)),
    )
    step_rate, step_impl = train_step_rate(loader.batch(0), args.num_steps, warmup=3)

    record = {
        "command": " ".join(["python -m experiments.benchmarks.data_pipeline", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(),
            "devices": [str(d.device_kind) for d in jax.devices()],
        },
        "versions": {name: __import__(name).__version__ for name in ("jax", "numpy", "grain", "flax")},
        "dataset": {"name": "mnist", "split": "train", "examples": len(source), "batch_size": args.batch_size},
        "batches_per_second": {k: round(v, 1) for k, v in results.items()},
        "train_step": {"steps_per_second": round(step_rate, 2), "implementation": step_impl},
        "ratio_to_train_step": {k: round(v / step_rate, 1) for k, v in results.items()},
        "target_ratio": 5.0,
    }
    record["meets_target"] = all(r >= 5.0 for r in record["ratio_to_train_step"].values())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
