"""The training state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (jit/shard_map/checkpoint friendly).

    Attributes:
      step: int32 scalar, number of optimizer steps taken (micro-steps under grad accumulation).
      params: the model's ``"params"`` collection.
      batch_stats: the model's ``"batch_stats"`` collection (``{}`` for models without BatchNorm).
      opt_state: the optax optimizer state.
      rng: uint32 ``(2,)`` raw PRNG key data; the key of step ``s`` is ``fold_in(rng, s)``, so a
        resumed run draws exactly the same dropout masks as an uninterrupted one.
      ema_params: exponential moving average of ``params``, or ``None`` when EMA is off.
      apply_fn: the model's ``apply`` (static, not a leaf), as in
        ``flax.training.train_state.TrainState``.
      tx: the optax optimizer (static, not a leaf), used by :meth:`apply_gradients`.

    Flax training code ports unchanged: ``state.apply_fn({"params": params}, x)`` and
    ``state.apply_gradients(grads=grads)`` behave as Flax's, and :meth:`create` takes Flax's
    arguments. ``apply_fn`` and ``tx`` are not saved in checkpoints; a restore keeps the
    target's.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    rng: jax.Array
    ema_params: PyTree | None = None
    apply_fn: Callable[..., Any] | None = flax.struct.field(pytree_node=False, default=None)
    tx: optax.GradientTransformation | None = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Callable[..., Any],
        params: PyTree,
        tx: optax.GradientTransformation,
        batch_stats: PyTree | None = None,
        rng: Any = 0,
        **kwargs: Any,
    ) -> "TrainState":
        """A state at step 0 with ``tx.init(params)``, as ``flax.training.train_state.TrainState.create``.

        ``rng`` (an int seed or a key) seeds the per-step keys; ``kwargs`` set other fields
        (e.g. ``ema_params``).
        """
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={} if batch_stats is None else batch_stats,
            opt_state=_init_optimizer(tx, params),
            rng=_raw_key(rng),
            apply_fn=apply_fn,
            tx=tx,
            **kwargs,
        )

    def apply_gradients(self, *, grads: PyTree, **kwargs: Any) -> "TrainState":
        """One optimizer update with ``grads`` (a pytree like ``params``): ``step + 1``, new
        ``params`` and ``opt_state``; ``kwargs`` replace other fields (e.g. ``batch_stats``)."""
        if self.tx is None:
            raise ValueError(
                "TrainState.apply_gradients: this state has no optimizer (tx=None); build it with "
                "create_train_state or TrainState.create"
            )
        params, opt_state = apply_optimizer(self.tx, grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **kwargs)

    def variables(self, *, use_ema: bool = False) -> dict[str, PyTree]:
        """The ``variables`` dict for ``model.apply`` (EMA weights if ``use_ema`` and present)."""
        params = self.ema_params if (use_ema and self.ema_params is not None) else self.params
        variables = {"params": params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample_input: jax.Array,
    *,
    ema_decay: float | None = None,
) -> TrainState:
    """Initialises the model on ``sample_input`` and the optimizer on its params.

    Args:
      model: a linen module called as ``model(x, train=...)``.
      tx: the optax optimizer (see :func:`jaxcnn.train.make_optimizer`).
      rng: a PRNG key (raw ``uint32[2]`` or typed); split into init and training keys.
      sample_input: ``(N, H, W, C)`` (any batch size; only shapes and dtype matter).
      ema_decay: keep ``ema_params`` when set (``0 < ema_decay < 1``).

    Returns:
      a :class:`TrainState` at step 0.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"create_train_state: model must be a flax.linen Module, got {type(model).__name__}")
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(
            f"create_train_state: tx must be an optax.GradientTransformation, got {type(tx).__name__}"
        )
    if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
        raise ValueError(f"create_train_state: ema_decay must be in (0, 1), got {ema_decay!r}")
    rng = _raw_key(rng)

    # One compiled function for init, optimizer init and the EMA copy (eager ops would each
    # compile separately).
    @jax.jit
    def init(rng, sample_input):
        init_key, train_key = jax.random.split(rng)
        # Initialise in eval mode: no dropout key needed, BatchNorm creates its running stats.
        variables = model.init(init_key, sample_input, train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=_init_optimizer(tx, params),
            rng=train_key,
            ema_params=jax.tree.map(jnp.copy, params) if ema_decay is not None else None,
            apply_fn=model.apply,
            tx=tx,
        )

    return init(rng, sample_input)


def _init_optimizer(tx: optax.GradientTransformation, params: PyTree) -> optax.OptState:
    # Optax init code is not written for strict dtype promotion (see steps.make_train_step).
    with jax.numpy_dtype_promotion("standard"):
        return tx.init(params)


def apply_optimizer(
    tx: optax.GradientTransformation, grads: PyTree, opt_state: optax.OptState, params: PyTree
) -> tuple[PyTree, optax.OptState]:
    """``(new params, new opt_state)`` after one ``tx`` update with ``grads``."""
    # Optax internals mix weak floats with int32 counts; strict promotion would reject any
    # user-supplied optimizer (e.g. a plain optax.adam), so it runs under standard.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _raw_key(rng: Any) -> jax.Array:
    """A raw ``uint32[2]`` key: typed keys are unwrapped so checkpoints store plain integers."""
    if isinstance(rng, int):
        return jax.random.PRNGKey(rng)
    rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    if rng.dtype != jnp.uint32 or rng.shape != (2,):
        raise ValueError(
            f"create_train_state: rng must be a PRNG key (uint32[2] or a typed key), got dtype "
            f"{rng.dtype} shape {tuple(rng.shape)}"
        )
    return rng
