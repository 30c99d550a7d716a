"""Batches for training and evaluation: a grain pipeline with a pure ``step -> batch`` map.

Every batch is a pure function of ``(seed, step)``: step ``k`` lies in epoch
``k // steps_per_epoch``; each epoch draws its own permutation of all examples from ``(seed,
epoch)``; the *global* batch ``j`` of an epoch is positions ``[j*B, (j+1)*B)`` of that
permutation, and process ``p`` of ``P`` takes rows ``[p*B/P, (p+1)*B/P)`` of it. Hence

- the same seed gives the same batches, on any number of processes (the global batch does not
  depend on ``P``), with or without worker processes;
- across processes every example appears exactly once per epoch (once at most with
  ``last_batch="drop"``, which leaves out the ``N mod B`` examples at the end of each permutation);
- the iterator's state is just the next step (a JSON-able dict), and a resumed run sees exactly
  the batches it would have seen.

Last-batch policy (``last_batch``):

- ``"drop"``: ``N // B`` full batches per epoch; the rest of the permutation is skipped.
- ``"pad"``: ``ceil(N / B)`` batches, the last one filled up with zero examples whose ``mask`` is
  False; every batch has the same shape (no recompilation, lock-step across hosts).
- ``"partial"``: ``ceil(N / B)`` batches, the last one smaller (single process only).

Each batch is ``{"image": (b, H, W, C), "label": (b, ...), ..., "mask": bool (b,)}`` with
``b = batch_size // shard_count`` rows (NumPy, on the host); ``mask`` marks real examples.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from jaxcnn.data._arguments import check_bool, check_choice, check_int, check_optional_int
from jaxcnn.data.sources import Example, get_batch

LAST_BATCH_POLICIES = ("drop", "pad", "partial")
# Fields of the state that must match for set_state; the shard fields may differ (the global
# batches do not depend on the number of processes).
_STATE_KEYS = ("seed", "shuffle", "num_examples", "batch_size", "last_batch")


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``range(num_examples)`` in ``epoch``: int64 ``(num_examples,)``.

    Drawn by NumPy's PCG64 from ``SeedSequence([seed, epoch])``, so epochs and seeds give
    unrelated permutations (unlike ``seed + epoch`` schemes, where seed 1 epoch 0 == seed 0 epoch 1).
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(num_examples)


def _process_defaults(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # Only for the defaults: the pipeline itself needs no JAX.

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    return shard_index, shard_count


class _BatchAtStep(grain.transforms.Map):
    """``step -> batch`` for one process; picklable, so it also runs in grain worker processes."""

    def __init__(self, source: Any, *, num_examples: int, batch_size: int, local_batch_size: int,
                 steps_per_epoch: int, seed: int, shuffle: bool, last_batch: str, shard_index: int):
        self.source = source
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.local_batch_size = local_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.shuffle = shuffle
        self.last_batch = last_batch
        self.shard_index = shard_index
        self._order_cache: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        cache = self._order_cache
        if cache is not None and cache[0] == epoch:
            return cache[1]
        if self.shuffle:
            order = epoch_permutation(self.num_examples, self.seed, epoch)
        else:
            order = np.arange(self.num_examples)
        self._order_cache = (epoch, order)
        return order

    def positions(self, step: int) -> np.ndarray:
        """Positions in the epoch's order that this process's batch at ``step`` covers."""
        j = step % self.steps_per_epoch
        start = j * self.batch_size + self.shard_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        if self.last_batch == "partial":
            positions = positions[positions < self.num_examples]
        return positions

    def map(self, step: int) -> Example:
        order = self.order(step // self.steps_per_epoch)
        positions = self.positions(step)
        valid = positions < self.num_examples
        indices = order[positions[valid]]
        if indices.size:
            batch = dict(get_batch(self.source, indices))
        else:  # Only padding on this process: borrow one example's structure.
            batch = {k: v[:0] for k, v in get_batch(self.source, order[:1]).items()}
        if "mask" in batch:
            raise ValueError("BatchLoader: the source's examples already have a 'mask' key, which "
                             "the loader reserves for marking real examples")
        if indices.size < positions.size:
            padded = {}
            for key, value in batch.items():
                full = np.zeros((positions.size, *value.shape[1:]), value.dtype)
                full[: indices.size] = value
                padded[key] = full
            batch = padded
        batch["mask"] = valid
        return batch


class BatchLoader:
    """Batches of a random-access source, for one process; iterate it for a resumable iterator.

    Args:
      source: anything with ``len`` and ``[i] -> dict`` (a :class:`RandomAccessSource`, a tfds
        data source...); ``get_batch(indices)`` is used when present.
      batch_size: the *global* batch size, over all processes; each process gets
        ``batch_size // shard_count`` rows (must divide evenly).
      seed: seed of the per-epoch permutations (a non-negative int).
      shuffle: False keeps the source order (evaluation).
      num_epochs: epochs to iterate, or None for endless iteration.
      last_batch: ``"drop"``, ``"pad"`` or ``"partial"`` (see the module docstring).
      shard_index, shard_count: this process and the number of processes; default
        ``jax.process_index()`` and ``jax.process_count()``.
      worker_count: grain worker processes that build batches (0: threads in this process).
      read_threads: threads building batches ahead in this process (0: synchronous).
      buffer_size: batches built ahead of the consumer.

    Attributes:
      steps_per_epoch: batches in one epoch.
      num_steps: batches in the whole run; ``None`` when endless.
      local_batch_size: rows of each batch that this process reads (``batch_size / shard_count``).
      dataset: a ``grain.MapDataset`` whose item ``k`` is the batch of step ``k``.

    Example::

        loader = BatchLoader(load("mnist", "train"), batch_size=128, seed=0, num_epochs=10)
        it = iter(loader)
        batch = next(it)                  # {"image": uint8 (128, 28, 28, 1), "label": int32 (128,), "mask": bool (128,)}
        state = it.get_state()            # {"step": 1, ...}: JSON-able, save it with the checkpoint
        it = iter(loader); it.set_state(state)   # continues at step 1
    """

    def __init__(self, source: Any, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, last_batch: str = "drop",
                 shard_index: int | None = None, shard_count: int | None = None,
                 worker_count: int = 0, read_threads: int = 1, buffer_size: int = 4):
        fn = "BatchLoader"
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise TypeError(f"{fn}: source must support len() and [index], got {type(source).__name__}")
        num_examples = len(source)
        if num_examples == 0:
            raise ValueError(f"{fn}: source is empty")
        first = source[0]
        if not isinstance(first, Mapping) or "image" not in first:
            raise TypeError(
                f"{fn}: source[0] must be an example, a dict with an 'image' entry, got "
                f"{type(first).__name__} {first!r:.80}"
            )
        batch_size = check_int(batch_size, "batch_size", fn, minimum=1)
        seed = check_int(seed, "seed", fn, minimum=0)
        shuffle = check_bool(shuffle, "shuffle", fn)
        num_epochs = check_optional_int(num_epochs, "num_epochs", fn, minimum=1)
        check_choice(last_batch, "last_batch", fn, LAST_BATCH_POLICIES)
        shard_index = check_optional_int(shard_index, "shard_index", fn, minimum=0)
        shard_count = check_optional_int(shard_count, "shard_count", fn, minimum=1)
        shard_index, shard_count = _process_defaults(shard_index, shard_count)
        if shard_index >= shard_count:
            raise ValueError(f"{fn}: shard_index={shard_index} must be < shard_count={shard_count}")
        if batch_size % shard_count:
            raise ValueError(
                f"{fn}: batch_size={batch_size} (global) must be divisible by shard_count={shard_count}"
            )
        if last_batch == "partial" and shard_count > 1:
            raise ValueError(
                f"{fn}: last_batch='partial' gives processes batches of different sizes; with "
                f"shard_count={shard_count} use 'pad' (and weight by batch['mask']) or 'drop'"
            )
        if last_batch == "drop":
            if batch_size > num_examples:
                raise ValueError(
                    f"{fn}: batch_size={batch_size} exceeds the {num_examples} examples, so "
                    f"last_batch='drop' leaves no batch; use last_batch='pad' or a smaller batch"
                )
            steps_per_epoch = num_examples // batch_size
        else:
            steps_per_epoch = -(-num_examples // batch_size)
        self.source = source
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.local_batch_size = batch_size // shard_count
        self.seed, self.shuffle, self.num_epochs, self.last_batch = seed, shuffle, num_epochs, last_batch
        self.shard_index, self.shard_count = shard_index, shard_count
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = None if num_epochs is None else steps_per_epoch * num_epochs
        self.worker_count = check_int(worker_count, "worker_count", fn, minimum=0)
        self.read_threads = check_int(read_threads, "read_threads", fn, minimum=0)
        self.buffer_size = check_int(buffer_size, "buffer_size", fn, minimum=0)
        self._batch_at = _BatchAtStep(
            source, num_examples=num_examples, batch_size=batch_size,
            local_batch_size=self.local_batch_size, steps_per_epoch=steps_per_epoch, seed=seed,
            shuffle=shuffle, last_batch=last_batch, shard_index=shard_index,
        )
        length = sys.maxsize if self.num_steps is None else self.num_steps
        self.dataset: grain.MapDataset = grain.MapDataset.range(length).map(self._batch_at)

    def batch(self, step: int) -> Example:
        """The batch of ``step`` (random access; what the iterator yields at that step)."""
        step = check_int(step, "step", "BatchLoader.batch", minimum=0)
        if self.num_steps is not None and step >= self.num_steps:
            raise IndexError(f"BatchLoader.batch: step {step} is past the last step {self.num_steps - 1}")
        return self._batch_at.map(step)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The global order of example indices in ``epoch``: int64 ``(num_examples,)``."""
        epoch = check_int(epoch, "epoch", "BatchLoader.epoch_indices", minimum=0)
        return self._batch_at.order(epoch).copy()

    def fingerprint(self) -> dict[str, Any]:
        """What fixes the batch order (seed, shuffle, sizes); saved states must match it."""
        return {"seed": self.seed, "shuffle": self.shuffle, "num_examples": self.num_examples,
                "batch_size": self.batch_size, "last_batch": self.last_batch}

    def _grain_iterator(self, start_step: int):
        dataset = self.dataset[start_step:] if start_step else self.dataset
        read_options = grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=self.buffer_size)
        iter_dataset = dataset.to_iter_dataset(read_options)
        if self.worker_count:
            _allow_unparsed_absl_flags()
            import functools
            import os

            from jaxcnn.data.worker_lifetime import exit_with_parent

            iter_dataset = iter_dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.worker_count,
                                             per_worker_buffer_size=max(1, self.buffer_size)),
                # No orphaned workers after a kill -9 of this process.
                worker_init_fn=functools.partial(exit_with_parent, os.getpid()),
            )
        return iter(iter_dataset)

    def __iter__(self) -> "BatchIterator":
        return BatchIterator(self)

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("BatchLoader: len() is undefined for num_epochs=None (endless); see steps_per_epoch")
        return self.num_steps

    def __repr__(self) -> str:
        return (f"BatchLoader(num_examples={self.num_examples}, batch_size={self.batch_size}, "
                f"local_batch_size={self.local_batch_size}, steps_per_epoch={self.steps_per_epoch}, "
                f"num_epochs={self.num_epochs}, seed={self.seed}, shuffle={self.shuffle}, "
                f"last_batch={self.last_batch!r}, shard={self.shard_index}/{self.shard_count})")


def _allow_unparsed_absl_flags() -> None:
    """grain's worker processes read absl flags, which fails in scripts not started by
    ``absl.app`` (google/grain#1355); treating the flags as parsed keeps their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class BatchIterator:
    """Iterator over a :class:`BatchLoader` whose position can be saved and restored.

    ``get_state()`` -> ``{"step": int, "epoch": int, "seed": ..., "batch_size": ..., ...}``
    (JSON-able); ``set_state(state)`` moves to ``state["step"]`` after checking that the state
    came from a loader with the same seed, shuffle, number of examples, global batch size and
    last-batch policy (the number of processes may differ).
    """

    def __init__(self, loader: BatchLoader, start_step: int = 0):
        self.loader = loader
        self._step = start_step
        self._iterator = None

    @property
    def step(self) -> int:
        """The step of the next batch."""
        return self._step

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self._step // self.loader.steps_per_epoch

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> Example:
        if self.loader.num_steps is not None and self._step >= self.loader.num_steps:
            self.close()
            raise StopIteration
        if self._iterator is None:
            self._iterator = self.loader._grain_iterator(self._step)
        batch = next(self._iterator)
        if self.loader.worker_count:
            # Workers hand over grain SharedMemoryArrays; plain copies free the shared memory now
            # rather than at interpreter exit (where grain's finalizers fail noisily).
            batch = {key: np.array(value) for key, value in batch.items()}
        self._step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """``{"step", "epoch", ...}``: JSON-able; ``set_state`` of a new iterator continues here."""
        return {"step": self._step, "epoch": self.epoch, **self.loader.fingerprint(),
                "shard_index": self.loader.shard_index, "shard_count": self.loader.shard_count}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues at ``state["step"]``; ``ValueError`` if it comes from a differently configured loader."""
        fn = "BatchIterator.set_state"
        if not isinstance(state, dict) or "step" not in state:
            raise TypeError(f"{fn}: state must be a dict from get_state() with a 'step', got {state!r}")
        expected = self.loader.fingerprint()
        diff = {k: (state.get(k), expected[k]) for k in _STATE_KEYS if state.get(k) != expected[k]}
        if diff:
            details = ", ".join(f"{k}: state has {a!r}, loader has {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{fn}: the state comes from a differently configured loader ({details})")
        step = check_int(state["step"], "state['step']", fn, minimum=0)
        if self.loader.num_steps is not None and step > self.loader.num_steps:
            raise ValueError(f"{fn}: state['step']={step} is past the loader's {self.loader.num_steps} steps")
        self.close()
        self._step = step

    def close(self) -> None:
        """Stops background threads / worker processes (a later ``next`` restarts them)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()
