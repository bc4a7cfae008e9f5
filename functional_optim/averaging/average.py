"""A running average of params: ``init(params)``, ``update(state, params)``.

``swa()`` averages with equal weights, ``ema(decay)`` exponentially; both count
``n_averaged`` as torch's ``AveragedModel`` does (the first update copies).
:func:`averaged` runs one inside a train step, as a transformation around the
optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.averaging.functions import (
    AvgFn, MultiAvgFn, get_ema_multi_avg_fn, get_swa_avg_fn)
from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, apply_updates,
    with_extra_args_support)

PyTree = Any


class RunningAverage(NamedTuple):
  """An :class:`Averager`'s state: the average so far and how many models it holds
  (torch's ``n_averaged``). Not to be confused with :class:`AveragedState`, the
  state of the :func:`averaged` transformation, which holds one of these."""
  averaged: PyTree
  n_averaged: jax.Array


class Averager(NamedTuple):
  """``init(params) -> RunningAverage``; ``update(state, params) -> RunningAverage``."""
  init: Callable[[PyTree], RunningAverage]
  update: Callable[[RunningAverage, PyTree], RunningAverage]


def averager(avg_fn: AvgFn | None = None, multi_avg_fn: MultiAvgFn | None = None) -> Averager:
  r"""A running average with a custom averaging function, as ``AveragedModel`` takes.

  ``avg_fn(averaged, current, n_averaged)`` maps each leaf; ``multi_avg_fn`` the
  whole tree; with neither, the equal-weight average torch uses on CPU
  (:func:`get_swa_avg_fn`). The first update copies the params; later ones
  average them in; both work under ``jax.jit``:

  .. math:: \bar W_1 = W_1, \quad \bar W_{n+1} = \text{avg}(\bar W_n, W_{n+1}, n)

  Raises:
    AssertionError: both ``avg_fn`` and ``multi_avg_fn`` given (as torch).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import averaging
    >>> avg = averaging.averager(lambda a, c, n: jnp.maximum(a, c))   # a running max
    >>> state = avg.init({'w': jnp.zeros(2)})
    >>> for w in ([1.0, 5.0], [3.0, 2.0]):
    ...   state = avg.update(state, {'w': jnp.array(w)})
    >>> state.averaged['w'], int(state.n_averaged)
    (Array([3., 5.], dtype=float32), 2)
  """
  if avg_fn is not None and multi_avg_fn is not None:
    raise AssertionError('Only one of avg_fn and multi_avg_fn should be provided')
  if multi_avg_fn is None:
    leaf_fn = avg_fn or get_swa_avg_fn()
    multi_avg_fn = lambda averaged, current, n: jax.tree.map(
        lambda a, c: leaf_fn(a, c, n), averaged, current)

  def init(params):
    return RunningAverage(averaged=jax.tree.map(jnp.array, params),
                        n_averaged=jnp.zeros([], jnp.int32))

  def update(state, params):
    first = state.n_averaged == 0
    copied = jax.tree.map(lambda a, p: jnp.asarray(p).astype(a.dtype), state.averaged, params)
    mixed = multi_avg_fn(state.averaged, copied, state.n_averaged)
    averaged = jax.tree.map(lambda c, m, a: jnp.where(first, c, m).astype(a.dtype),
                            copied, mixed, state.averaged)
    return RunningAverage(averaged, state.n_averaged + 1)

  return Averager(init, update)


def swa() -> Averager:
  r"""Stochastic weight averaging: the equal-weight mean of every model given.

  .. math:: \bar W_n = \bar W_{n-1} + (W_n - \bar W_{n-1}) / n

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import averaging
    >>> avg = averaging.swa()
    >>> state = avg.init({'w': jnp.zeros(1)})
    >>> for w in (1.0, 2.0, 6.0):
    ...   state = avg.update(state, {'w': jnp.array([w])})
    >>> state.averaged['w']
    Array([3.], dtype=float32)
  """
  return averager()


def ema(decay: float = 0.999) -> Averager:
  r"""Exponential moving average: ``lerp(average, params, 1 - decay)`` per update.

  .. math:: \bar W_n = d\,\bar W_{n-1} + (1 - d)\,W_n, \quad \bar W_1 = W_1

  Raises:
    ValueError: ``decay`` outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import averaging
    >>> avg = averaging.ema(decay=0.5)
    >>> state = avg.init({'w': jnp.zeros(1)})
    >>> for w in (4.0, 0.0):
    ...   state = avg.update(state, {'w': jnp.array([w])})
    >>> state.averaged['w']
    Array([2.], dtype=float32)
  """
  return averager(multi_avg_fn=get_ema_multi_avg_fn(decay))


class AveragedState(NamedTuple):
  """State of :func:`averaged`.

  Attributes:
    inner_state: the optimizer's state.
    average: the running average of the params, a :class:`RunningAverage`.
    count: ``update`` calls so far.
  """
  inner_state: Any
  average: RunningAverage
  count: jax.Array


def averaged(inner: GradientTransformation, averager: Averager | None = None, *,
             start: int = 0, every: int = 1) -> GradientTransformationExtraArgs:
  r"""``inner``, keeping a running average of the params it produces in its state.

  After update ``k`` (counting from 1), the new params ``params + updates`` join
  the average if ``k > start`` and ``(k - start) % every == 0``: with ``every``
  set to the steps of an epoch and ``start`` to the steps before SWA begins, this
  is torch's "``swa_model.update_parameters(model)`` at the end of each epoch".
  The average is ``state.average.averaged``; the updates are ``inner``'s.

  Raises:
    ValueError: ``start < 0`` or ``every < 1``.

  Example:
    >>> import jax.numpy as jnp, functional_optim as fo
    >>> tx = fo.averaging.averaged(fo.sgd(lr=1.0), fo.averaging.swa())
    >>> params = {'w': jnp.zeros(1)}
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update({'w': jnp.ones(1)}, state, params)
    ...   params = fo.apply_updates(params, updates)
    >>> params['w'], state.average.averaged['w']      # mean of -1, -2, -3
    (Array([-3.], dtype=float32), Array([-2.], dtype=float32))
  """
  if start < 0:
    raise ValueError(f'start must be >= 0, got {start}')
  if every < 1:
    raise ValueError(f'every must be >= 1, got {every}')
  averager = averager or swa()
  inner = with_extra_args_support(inner)

  def init(params):
    return AveragedState(inner.init(params), averager.init(params),
                         jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra):
    if params is None:
      raise ValueError('averaged needs params: call update(grads, state, params)')
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
    count = state.count + 1
    joins = (count > start) & ((count - start) % every == 0)
    candidate = averager.update(state.average, apply_updates(params, updates))
    average = jax.tree.map(lambda new, old: jnp.where(joins, new, old),
                           candidate, state.average)
    return updates, AveragedState(inner_state, average, count)

  return GradientTransformationExtraArgs(init, update)
