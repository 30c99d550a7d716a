"""From host batches to device arrays: a data-parallel sharding and a prefetching iterator.

A host batch ``{"image": (b, H, W, C), ...}`` holds this process's ``b`` rows of the global
batch (see :class:`jaxcnn.data.BatchLoader`). :func:`shard_batch` turns it into global
``jax.Array`` s of ``b * process_count`` rows whose leading axis is split over the mesh axis
``"data"`` (each local device gets ``b / local_devices`` rows); :func:`prefetch_to_device` does
this in a background thread, a few batches ahead of the training step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcnn.data._arguments import check_int, check_str


def data_sharding(mesh: Mesh | None = None, axis: str = "data") -> NamedSharding:
    """Sharding that splits the leading (batch) axis over ``axis`` and replicates the rest.

    ``mesh=None`` builds a 1-D mesh named ``axis`` over all devices (of all processes), with an
    automatic axis type (shardings propagated by the compiler, as ``Mesh(devices, names)`` gives;
    ``jax.make_mesh`` would default to explicit axes).
    """
    check_str(axis, "axis", "data_sharding")
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), (axis,), axis_types=(AxisType.Auto,))
    if not isinstance(mesh, Mesh):
        raise TypeError(f"data_sharding: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"data_sharding: axis={axis!r} is not an axis of the mesh {mesh.axis_names}")
    return NamedSharding(mesh, PartitionSpec(axis))


def _local_shards(sharding: jax.sharding.Sharding) -> int:
    """How many distinct row blocks of the batch this process's devices hold."""
    if isinstance(sharding, NamedSharding):
        spec = sharding.spec
        axes = spec[0] if len(spec) else None
        if axes is None:
            return 1
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        mesh = sharding.mesh
        total = int(np.prod([mesh.shape[a] for a in axes]))
        return max(1, total // jax.process_count())
    return len(sharding.addressable_devices)


def shard_batch(batch: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """Places a host batch (a pytree of ``(b, ...)`` arrays) as global arrays ``(b * P, ...)``.

    Args:
      batch: this process's rows; every leaf has the same leading size ``b``, divisible by the
        number of local devices along the data axis.
      sharding: e.g. :func:`data_sharding` ``(mesh)``; None uses ``data_sharding()`` over all devices.

    Uses ``jax.make_array_from_process_local_data``, so on several hosts each process passes only
    its own rows, in process order.
    """
    fn = "shard_batch"
    if sharding is None:
        sharding = data_sharding()
    leaves, treedef = jax.tree.flatten(batch)
    if not leaves:
        raise ValueError(f"{fn}: batch has no arrays")
    leaves = [np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf for leaf in leaves]
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(leaf.shape) for leaf in leaves]
        raise ValueError(f"{fn}: every leaf of batch needs the same leading (batch) size, got shapes {shapes}")
    (size,) = sizes
    blocks = _local_shards(sharding)
    if size % blocks:
        raise ValueError(
            f"{fn}: the local batch of {size} rows does not split evenly over the {blocks} local "
            f"device(s) of the data axis; use a per-process batch size divisible by {blocks}"
        )
    global_size = size * jax.process_count()
    arrays = [
        jax.make_array_from_process_local_data(sharding, leaf, (global_size, *leaf.shape[1:]))
        for leaf in leaves
    ]
    return jax.tree.unflatten(treedef, arrays)


_END = object()


class DevicePrefetchIterator:
    """Moves batches to devices ``size`` steps ahead in a background thread.

    Wraps an iterator of host batches (e.g. a :class:`jaxcnn.data.BatchIterator`). ``get_state``
    and ``set_state`` are those of the wrapped iterator *as seen by the consumer*: the state after
    the last batch returned by ``next``, not after the batches sitting in the buffer, so a
    checkpoint taken here resumes at the right step.
    """

    def __init__(self, iterator: Iterator, size: int = 2, sharding: jax.sharding.Sharding | None = None,
                 *, to_device: bool = True, place: Callable[[Any], Any] | None = None):
        if place is not None and sharding is not None:
            raise ValueError("prefetch_to_device: pass sharding or place, not both")
        if place is not None and not callable(place):
            raise TypeError(f"prefetch_to_device: place must be callable, got {type(place).__name__}")
        self._source = iterator
        self._place = place
        self.size = check_int(size, "size", "prefetch_to_device", minimum=1)
        self.sharding = sharding
        self.to_device = to_device
        self._has_state = hasattr(iterator, "get_state")
        self._state = iterator.get_state() if self._has_state else None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _put(self, batch: Any) -> Any:
        if not self.to_device:
            return batch
        if self._place is not None:
            return self._place(batch)
        if self.sharding is None:
            return jax.device_put(batch)
        return shard_batch(batch, self.sharding)

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                batch = next(self._source)
                item = (self._put(batch), self._source.get_state() if self._has_state else None)
            except StopIteration:
                item = _END
            except BaseException as err:  # Re-raised in the consumer's thread.
                item = err
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item is _END or isinstance(item, BaseException):
                return

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.size)
        self._thread = threading.Thread(
            target=self._produce, args=(self._queue, self._stop), daemon=True, name="device-prefetch"
        )
        self._thread.start()

    def __iter__(self) -> "DevicePrefetchIterator":
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # Later calls keep raising StopIteration.
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        batch, self._state = item
        return batch

    def get_state(self) -> Any:
        """The wrapped iterator's state at the last batch this iterator returned (JSON-able)."""
        if not self._has_state:
            raise TypeError(f"DevicePrefetchIterator: the wrapped {type(self._source).__name__} has no get_state")
        return self._state

    def set_state(self, state: Any) -> None:
        """Drops buffered batches and continues the wrapped iterator from ``state``."""
        self.close()
        self._source.set_state(state)
        self._state = self._source.get_state()

    def close(self) -> None:
        """Stops the background thread; buffered batches are dropped (the state is unaffected)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._queue = None


def prefetch_to_device(iterator: Iterator, size: int = 2, sharding: jax.sharding.Sharding | None = None,
                       *, place: Callable[[Any], Any] | None = None) -> DevicePrefetchIterator:
    """``iterator`` with its batches placed on devices ``size`` batches ahead (background thread).

    Args:
      iterator: yields host batches (pytrees of NumPy arrays); if it has ``get_state`` /
        ``set_state``, so does the result (consistent with what the consumer has received).
      size: batches buffered on the device.
      sharding: None puts each batch on the default device (``jax.device_put``); a sharding
        (e.g. :func:`data_sharding`) builds global arrays with :func:`shard_batch`.
      place: instead of ``sharding``, a function host batch -> device batch, e.g.
        ``jaxcnn.train.DataParallel.put_batch`` (which places with :func:`shard_batch`).

    Example::

        it = prefetch_to_device(iter(loader), 2, data_sharding(mesh))
        for batch in it: state = train_step(state, batch)
    """
    return DevicePrefetchIterator(iterator, size, sharding, place=place)
