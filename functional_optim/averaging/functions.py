"""The averaging functions of ``torch.optim.swa_utils``, over pytrees.

Two signatures, as in torch: an ``avg_fn(averaged, current, n_averaged)`` maps one
array, and a ``multi_avg_fn(averaged, current, n_averaged)`` maps a whole tree
(torch's works in place on lists; these return the new tree). ``n_averaged`` is
how many models the average holds already (at least 1 when they are called).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from functional_optim.core.numerics import lerp

PyTree = Any
AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
MultiAvgFn = Callable[[PyTree, PyTree, jax.Array], PyTree]


def _check_decay(decay: float) -> None:
  if decay < 0.0 or decay > 1.0:
    raise ValueError(f'Invalid decay value {decay} provided. Please provide a value in '
                     '[0,1] range.')


def _is_inexact(x: jax.Array) -> bool:
  return jnp.issubdtype(x.dtype, jnp.inexact)


def _like(value: jax.Array, reference: jax.Array) -> jax.Array:
  """``value`` stored into ``reference``'s dtype, as torch's ``copy_`` does
  (an integer buffer truncates toward zero)."""
  if jnp.issubdtype(reference.dtype, jnp.integer):
    value = jnp.trunc(value)
  return value.astype(reference.dtype)


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
  r"""EMA of one array: ``decay * averaged + (1 - decay) * current``.

  .. math:: W^{EMA}_{t+1} = d\,W^{EMA}_t + (1 - d)\,W_{t+1}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.averaging import get_ema_avg_fn
    >>> get_ema_avg_fn(0.9)(jnp.zeros(2), jnp.ones(2), 1)
    Array([0.1, 0.1], dtype=float32)
  """
  _check_decay(decay)

  def ema_update(averaged, current, n_averaged):
    del n_averaged
    return _like(decay * averaged + (1 - decay) * current, averaged)
  return ema_update


def get_swa_avg_fn() -> AvgFn:
  r"""Equal-weight average of one array: ``averaged + (current - averaged) / (n + 1)``.

  .. math:: \bar W_{n+1} = \bar W_n + \frac{W_{n+1} - \bar W_n}{n + 1}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.averaging import get_swa_avg_fn
    >>> get_swa_avg_fn()(jnp.zeros(2), jnp.full(2, 3.0), 2)
    Array([1., 1.], dtype=float32)
  """
  def swa_update(averaged, current, n_averaged):
    return _like(averaged + (current - averaged) / (n_averaged + 1), averaged)
  return swa_update


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
  r"""EMA of a tree: ``lerp(averaged, current, 1 - decay)`` for float leaves.

  .. math:: \bar W \leftarrow \operatorname{lerp}(\bar W, W, 1 - d)
     = \bar W + (1 - d)(W - \bar W)

  Other leaves (integer buffers) take ``averaged * decay + current * (1 - decay)``,
  truncated back to their dtype, as torch's does.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.averaging import get_ema_multi_avg_fn
    >>> get_ema_multi_avg_fn(0.5)({'w': jnp.zeros(2)}, {'w': jnp.ones(2)}, 1)
    {'w': Array([0.5, 0.5], dtype=float32)}
  """
  _check_decay(decay)

  def leaf(averaged, current):
    if _is_inexact(averaged):
      return lerp(averaged, current.astype(averaged.dtype), 1 - decay)
    return _like(averaged * decay + current * (1 - decay), averaged)

  def ema_update(averaged, current, n_averaged):
    del n_averaged
    return jax.tree.map(leaf, averaged, current)
  return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
  r"""Equal-weight average of a tree: ``lerp(averaged, current, 1 / (n + 1))``.

  .. math:: \bar W_{n+1} = \operatorname{lerp}\big(\bar W_n, W_{n+1}, 1 / (n + 1)\big)

  with the weight :math:`1 / (n + 1)` computed in float32, as torch computes it.
  Integer leaves take ``averaged + (current - averaged) / (n + 1)``, truncated.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.averaging import get_swa_multi_avg_fn
    >>> get_swa_multi_avg_fn()({'w': jnp.zeros(2)}, {'w': jnp.full(2, 3.0)}, 2)
    {'w': Array([1., 1.], dtype=float32)}
  """
  def leaf(averaged, current, n_averaged):
    if _is_inexact(averaged):
      # torch computes 1 / (n + 1) from its integer counter tensor in float32.
      weight = (1 / (n_averaged + 1)).astype(jnp.float32).astype(averaged.dtype)
      return lerp(averaged, current.astype(averaged.dtype), weight)
    return _like(averaged + (current - averaged) / (n_averaged + 1), averaged)

  def swa_update(averaged, current, n_averaged):
    n_averaged = jnp.asarray(n_averaged)
    return jax.tree.map(lambda a, c: leaf(a, c, n_averaged), averaged, current)
  return swa_update
