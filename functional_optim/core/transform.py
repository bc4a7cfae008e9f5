"""The transformation protocol: ``init``/``update`` pairs, ``chain`` and ``apply_updates``.

The protocol is structurally optax's, on purpose: a :class:`GradientTransformation`
built here goes into ``optax.chain``, ``flax.nnx.Optimizer`` or flax's ``TrainState``
unchanged, and an optax transformation goes into :func:`chain`.

Updates are what gets *added* to the params (optax's sign convention)::

    updates, state = tx.update(grads, state, params)
    params = apply_updates(params, updates)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class GradientTransformation(NamedTuple):
  """A pair of pure functions ``init(params) -> state`` and
  ``update(updates, state, params=None, **extra) -> (updates, state)``.

  ``extra`` carries what some transformations need (``value`` for a plateau
  schedule, ``value_fn`` for a line search); a transformation ignores the extra
  arguments it does not use.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.sgd(lr=0.1)
    >>> params = {'w': jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.ones(3)}, state, params)
    >>> fo.apply_updates(params, updates)['w']
    Array([0.9, 0.9, 0.9], dtype=float32)
  """

  init: Callable[[PyTree], PyTree]
  update: Callable[..., tuple[PyTree, PyTree]]


def accepts_extra_kwargs(update: Callable) -> bool:
  """Whether ``update`` takes ``**kwargs``, i.e. can be handed the extra arguments.

  A callable whose signature cannot be read counts as not taking them.

  Example:
    >>> from functional_optim.core.transform import accepts_extra_kwargs
    >>> def ours(updates, state, params=None, **extra): ...
    >>> def plain(updates, state, params=None): ...
    >>> accepts_extra_kwargs(ours), accepts_extra_kwargs(plain)
    (True, False)
  """
  try:
    parameters = inspect.signature(update).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
  """Applies ``transforms`` one after the other; the state is the tuple of their states.

  Any object with ``init`` and ``update`` works, optax's transformations included.
  Extra keyword arguments reach only the transformations whose ``update`` takes
  ``**kwargs`` (optax's plain transformations do not).

  Example:
    >>> import optax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.chain(optax.clip_by_global_norm(1.0), fo.adam(lr=1e-3))
    >>> state = tx.init({'w': jnp.zeros(2)})
    >>> updates, state = tx.update({'w': jnp.array([30.0, 40.0])}, state)
  """
  takes_extra = tuple(accepts_extra_kwargs(t.update) for t in transforms)

  def init(params):
    return tuple(t.init(params) for t in transforms)

  def update(updates, state, params=None, **extra):
    if len(state) != len(transforms):
      raise ValueError(
          f'chain of {len(transforms)} transformations got a state of '
          f'{len(state)} entries')
    new_state = []
    for t, s, extra_ok in zip(transforms, state, takes_extra):
      if extra_ok:
        updates, s = t.update(updates, s, params, **extra)
      else:
        updates, s = t.update(updates, s, params)
      new_state.append(s)
    return updates, tuple(new_state)

  return GradientTransformation(init, update)


def _is_none(x) -> bool:
  return x is None


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
  """Returns ``params + updates`` leaf by leaf, each result in its param's dtype.

  A ``None`` update (a parameter that got no gradient) leaves its param as it is.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> fo.apply_updates({'a': jnp.ones(2, jnp.bfloat16), 'b': jnp.ones(1)},
    ...                  {'a': jnp.full(2, 0.5), 'b': None})['a'].dtype
    dtype(bfloat16)
  """
  def add(path, u, p):
    if u is None or p is None:
      return p
    if jnp.shape(u) != jnp.shape(p):
      raise ValueError(f'update at {jax.tree_util.keystr(path)} has shape '
                       f'{jnp.shape(u)}, but its param has shape {jnp.shape(p)}')
    return jnp.asarray(p + u, dtype=jnp.result_type(p))

  return jax.tree_util.tree_map_with_path(add, updates, params, is_leaf=_is_none)
