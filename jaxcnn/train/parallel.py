"""Data parallelism: the same step on 1..N devices, in the forms JAX offers.

=============  ==============================================================================
mode           how the step runs
=============  ==============================================================================
``none``       ``jax.jit`` on one device.
``jit``        ``jax.jit`` with ``NamedSharding``: the batch is split on the mesh axis
               ``'data'``, the state replicated; XLA inserts the gradient all-reduce and
               BatchNorm sees the global batch (global-view semantics, model needs no
               ``axis_name``).
``shard_map``  ``jax.shard_map`` over the same mesh: each device runs the step on its shard
               and the step ``pmean``s gradients/metrics over ``'data'``; BatchNorm layers get
               ``axis_name='data'`` so running statistics are synchronised.
``pmap``       the legacy ``jax.pmap`` form (state with a leading device axis); kept so scripts
               written that way still run. Same per-device code as ``shard_map``.
``auto``       ``jit`` on several devices, ``none`` on one.
=============  ==============================================================================

All forms compute the loss of the same global batch, so they agree with one device up to
float reduction order, dropout included: ``jaxcnn.nn.Dropout`` draws each example's mask from
its global index in the batch and a key that is the same on every device (the step's
``"global_dropout"`` stream), so a device count is also a resumable change. A
``flax.linen.Dropout`` reads the per-device ``"dropout"`` stream instead: such models agree in
distribution only, as do random augmentations (their keys are folded with the device index). Multi-host: the mesh spans every process's devices and each process feeds
its own slice of the global batch (``put_batch``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.backends.cpu.options import compiler_options, resolve_choice
from jaxcnn.backends.cpu.options import jit as compiled_with_options

PARALLEL_MODES = ("auto", "none", "jit", "shard_map", "pmap")
DATA_AXIS = "data"
PyTree = Any


def with_axis_name(model: nn.Module, axis_name: str | None) -> nn.Module:
    """The model with ``axis_name`` set (for per-device BatchNorm sync) if it has that field.

    Models built from ``jaxcnn.nn``/``flax.linen`` expose ``axis_name`` as a dataclass field that
    they pass on to their BatchNorm layers; a model without such a field is returned as is.
    """
    fields = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else set()
    if "axis_name" not in fields or getattr(model, "axis_name") == axis_name:
        return model
    return model.clone(axis_name=axis_name)


class DataParallel:
    """Places state and batches on devices and compiles steps for one parallel ``mode``.

    Args:
      mode: one of :data:`PARALLEL_MODES`.
      devices: devices to use; default all (``jax.devices()``, every process's in multi-host,
        or ``jax.local_devices()`` for ``pmap``).
      xla_options: ``"auto"`` or ``"none"``: the per-computation XLA options the steps are
        compiled with (:func:`jaxcnn.backends.cpu.compiler_options` for the devices' platform;
        ``None`` reads ``$JAXCNN_XLA_OPTIONS``). ``pmap`` ignores them.

    Attributes:
      mode: the resolved mode (never ``"auto"``).
      num_devices: devices the global batch is split over.
      axis_name: ``'data'`` when the step runs per device (``shard_map``/``pmap``), else ``None``;
        pass it to :func:`make_train_step` and :func:`with_axis_name`.
      mesh: the 1-D ``('data',)`` mesh (``None`` for ``none``/``pmap``).
      compiler_options: what ``jax.jit`` gets (``None``: XLA's defaults, always for ``pmap``).
    """

    def __init__(
        self, mode: str = "auto", devices: Sequence[jax.Device] | None = None, xla_options: str | None = None
    ):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"DataParallel: unknown parallel={mode!r}; expected one of {PARALLEL_MODES}")
        if devices is None:
            devices = jax.local_devices() if mode == "pmap" else jax.devices()
        devices = list(devices)
        if not devices:
            raise ValueError("DataParallel: devices is empty")
        if mode == "auto":
            mode = "jit" if len(devices) > 1 else "none"
        if mode == "none":
            if jax.process_count() > 1:
                raise ValueError(
                    "DataParallel: parallel='none' cannot run on several processes; use 'jit' or 'shard_map'"
                )
            devices = devices[:1]
        self.mode = mode
        self.devices = devices
        self.num_devices = len(devices)
        self.axis_name = DATA_AXIS if mode in ("shard_map", "pmap") else None
        self.mesh = Mesh(np.array(devices), (DATA_AXIS,)) if mode in ("jit", "shard_map") else None
        self._single = devices[0]
        # Resolved once, so the options reported and the ones compiled with cannot diverge.
        choice = resolve_choice(xla_options)
        platform = devices[0].platform
        self.compiler_options = None if mode == "pmap" else compiler_options(choice, platform)
        self._jit = functools.partial(compiled_with_options, xla_options=choice, backend=platform)

    def __repr__(self) -> str:
        return f"DataParallel(mode={self.mode!r}, num_devices={self.num_devices})"

    # -- sizes ---------------------------------------------------------------------------------
    def check_batch_size(self, batch_size: int, name: str = "batch_size") -> None:
        """Raises ``ValueError`` unless ``batch_size`` splits evenly over devices and processes."""
        parts = self.num_devices * (jax.process_count() if self.mode == "pmap" else 1)
        if batch_size % parts or batch_size % jax.process_count():
            raise ValueError(
                f"{name}={batch_size} is not divisible by the {parts} devices of parallel="
                f"{self.mode!r}; use a multiple of {parts}"
            )

    # -- placement -----------------------------------------------------------------------------
    @property
    def replicated(self) -> jax.sharding.Sharding:
        """Sharding of the state (and of a restored checkpoint) in this mode."""
        if self.mesh is not None:
            return NamedSharding(self.mesh, P())
        return jax.sharding.SingleDeviceSharding(self._single)

    def put_state(self, state: PyTree) -> PyTree:
        """Host or device state -> the placement the compiled step expects."""
        if self.mode == "pmap":
            n = self.num_devices
            return jax.tree.map(lambda x: jax.device_put(jnp.broadcast_to(x, (n,) + jnp.shape(x))), state)
        sharding = self.replicated
        if jax.process_count() == 1:
            return jax.device_put(state, sharding)

        def to_global(x):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree.map(to_global, state)

    def get_state(self, state: PyTree) -> PyTree:
        """The state without the device axis of ``pmap`` (what a checkpoint stores)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state

    @property
    def batch_sharding(self) -> jax.sharding.Sharding:
        """Where a global batch lives, split over ``'data'`` (with ``pmap``, over its leading device axis)."""
        if self.mode == "none":
            return jax.sharding.SingleDeviceSharding(self._single)
        mesh = self.mesh if self.mesh is not None else Mesh(np.array(self.devices), (DATA_AXIS,))
        return NamedSharding(mesh, P(DATA_AXIS))

    def put_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of the global batch -> device arrays split over ``'data'``.

        ``batch`` leaves: ``(B_local, ...)`` NumPy arrays; ``B_local * process_count`` is the
        global batch. In ``pmap`` mode the result has a leading local-device axis. The placement
        is :func:`jaxcnn.data.device.shard_batch`'s (the loop prefetches with it).
        """
        from jaxcnn.data.device import shard_batch

        if self.mode == "pmap":
            n = self.num_devices
            shaped = {}
            for k, v in batch.items():
                v = np.asarray(v)
                if v.shape[0] % n:
                    raise ValueError(
                        f"put_batch: batch[{k!r}] has {v.shape[0]} rows, not divisible by {n} devices"
                    )
                shaped[k] = v.reshape((n, v.shape[0] // n) + v.shape[1:])
            if jax.process_count() > 1:
                return shaped  # pmap places each process's rows on its own local devices itself
            batch = shaped
        return shard_batch(dict(batch), self.batch_sharding)

    # -- compilation ---------------------------------------------------------------------------
    def compile_train_step(self, step: Callable) -> Callable:
        """``step(state, batch) -> (state, metrics)`` compiled for this mode, donating the state.

        ``step`` must have been made with ``axis_name=self.axis_name``. Metrics come back as
        scalars (device axis removed in ``pmap`` mode).
        """
        if self.mode == "none":
            return self._jit(step, donate_argnums=0)
        if self.mode == "jit":
            rep, data = self.replicated, NamedSharding(self.mesh, P(DATA_AXIS))
            return self._jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
        if self.mode == "shard_map":
            # check_vma=False: the step's explicit pmean is the one gradient reduction (with
            # check_vma=True, grad w.r.t. replicated params would already be psum-ed).
            mapped = jax.shard_map(
                step, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()), check_vma=False
            )
            return self._jit(mapped, donate_argnums=0)
        pmapped = jax.pmap(step, axis_name=DATA_AXIS, devices=self.devices, donate_argnums=0)

        def run(state, batch):
            state, metrics = pmapped(state, batch)
            return state, jax.tree.map(lambda m: m[0], metrics)

        return run

    def compile_eval_step(self, step: Callable) -> Callable:
        """``step(state, batch) -> statistics`` compiled for this mode (sums over all devices)."""
        if self.mode == "none":
            return self._jit(step)
        if self.mode == "jit":
            rep, data = self.replicated, NamedSharding(self.mesh, P(DATA_AXIS))
            return self._jit(step, in_shardings=(rep, data), out_shardings=rep)
        if self.mode == "shard_map":
            return self._jit(
                jax.shard_map(
                    step, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(), check_vma=False
                )
            )
        pmapped = jax.pmap(step, axis_name=DATA_AXIS, devices=self.devices)
        return lambda state, batch: jax.tree.map(lambda m: m[0], pmapped(state, batch))
