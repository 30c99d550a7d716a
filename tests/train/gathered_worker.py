"""Evaluates a toy task with gathered statistics on every parallel mode of this process's devices.

Run by tests/train/test_detection_task.py with several host devices; prints JSON
``{mode: {"rows": [...], "count": float}}``.
"""

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn.data import ArraySource
from jaxcnn.data.pipeline import BatchLoader
from jaxcnn.train import DataParallel, Task, create_train_state, evaluate, make_eval_step
from jaxcnn.train.tasks import example_weights, model_inputs


class Scalar(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


class Rows(Task):
    """Gathers each example's output, its label and its weight; sums the weights."""

    gathered_statistics = ("output", "label", "weight")

    def loss(self, outputs, batch):
        return jnp.mean(outputs)

    def statistics(self, outputs, batch):
        w = example_weights(batch)
        return {"count": jnp.sum(w), "output": outputs, "label": batch["label"], "weight": w}

    def summarize(self, sums):
        return {"loss": 0.0}


def main():
    images = np.arange(10 * 4 * 4, dtype=np.float32).reshape(10, 4, 4, 1) / 160.0
    source = ArraySource(images, np.arange(10, dtype=np.int32))
    model, task = Scalar(), Rows()
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), images[:1])
    expected = np.asarray(model.apply({"params": state.params}, model_inputs({"image": images})))
    out = {"expected": expected.tolist()}
    for mode in sys.argv[1:]:
        parallel = DataParallel(mode, None, "none")
        step = parallel.compile_eval_step(make_eval_step(model, task, axis_name=parallel.axis_name))
        loader = BatchLoader(source, 4, shuffle=False, num_epochs=1, last_batch="pad")
        _, sums = evaluate(parallel, step, parallel.put_state(state), loader, task)
        out[mode] = {k: np.asarray(v).reshape(-1).tolist() for k, v in sums.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
