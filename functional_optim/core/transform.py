"""The transformation protocol: optax's own types, ``chain`` and ``apply_updates``.

Every transformation here is an ``optax.GradientTransformationExtraArgs``: an
``init(params) -> state`` and an ``update(updates, state, params=None, **extra)
-> (updates, state)`` pair. So ours go into ``optax.chain``, ``optax.MultiSteps``,
``optax.inject_hyperparams``, ``flax.nnx.Optimizer`` and flax's ``TrainState``
with their extra arguments intact, and optax's go into ours. ``chain`` is
optax's.

Updates are what gets *added* to the params (optax's sign convention)::

    updates, state = tx.update(grads, state, params)
    params = apply_updates(params, updates)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

PyTree = Any

#: optax's protocol types; our builders return the extra-args kind.
GradientTransformation = optax.GradientTransformation
GradientTransformationExtraArgs = optax.GradientTransformationExtraArgs

class TorchOptimizer(optax.GradientTransformationExtraArgs):
  """The transformation of one of our optimizers: optax's type, plus what torch needs.

  Attributes:
    torch_name: the ``torch.optim`` class it mirrors (``'Adam'``).
    options: the arguments it was built with, by name (the builder's signature
      bound, defaults applied): torch's param-group keys
      (``interop.torch.state_to_torch`` writes them).

  Example:
    >>> import functional_optim as fo
    >>> tx = fo.adam(lr=0.1, amsgrad=True)
    >>> tx.torch_name, tx.options['lr'], tx.options['amsgrad']
    ('Adam', 0.1, True)
  """
  torch_name: str
  options: dict[str, Any]


#: ``chain(*transforms)``: optax's. Extra keyword arguments (``value=loss``)
#: reach every transformation that takes them.
chain = optax.chain

#: ``with_extra_args_support(tx)``: optax's wrapper that lets a transformation
#: without ``**extra_args`` be handed (and ignore) them.
with_extra_args_support = optax.with_extra_args_support


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
  """Returns ``params + updates`` leaf by leaf, each result in its param's dtype.

  A ``None`` update (a parameter that got no gradient) leaves its param as it is.
  That is where this differs from ``optax.apply_updates``, which takes ``None``
  for an absent param, not an absent update: our optimizers return a ``None``
  update for a ``None`` gradient, as torch skips a param whose ``.grad`` is None.
  A shape mismatch is an error that names the param, not a silent broadcast.

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

  return jax.tree_util.tree_map_with_path(add, updates, params,
                                          is_leaf=lambda x: x is None)


def one_per_entry(transforms: Sequence[GradientTransformation]) -> GradientTransformationExtraArgs:
  """One transformation over a list of trees, ``transforms[i]`` on entry ``i``.

  Params, updates and the returned updates are lists; the state is a tuple of
  the transformations' states. The facade's :attr:`~functional_optim.optim.Optimizer.
  transformation` with several param groups is this over the groups.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.core.transform.one_per_entry([fo.sgd(lr=0.1), fo.sgd(lr=1.0)])
    >>> params = [jnp.zeros(1), jnp.zeros(1)]
    >>> updates, state = tx.update([jnp.ones(1), jnp.ones(1)], tx.init(params), params)
    >>> updates
    [Array([-0.1], dtype=float32), Array([-1.], dtype=float32)]
  """
  transforms = list(transforms)

  def init(params):
    return tuple(tx.init(p) for tx, p in zip(transforms, params))

  def update(updates, state, params=None, **extra):
    params = [None] * len(transforms) if params is None else params
    out = [tx.update(u, s, p, **extra) for tx, u, s, p in zip(transforms, updates, state, params)]
    return [u for u, _ in out], tuple(s for _, s in out)

  return GradientTransformationExtraArgs(init, update)
