"""Hyperparameters as data.

Every numeric hyperparameter (``lr``, ``betas``, ``eps``, ``weight_decay``,
``momentum``, ...) is given as a Python number, a 0-d array or a schedule
``count -> value``, and lives in the optimizer state as a 0-d array in the
``hyperparams`` dict. Changing it between steps changes data, not the program, so
a jitted train step never recompiles.

Numbers are stored in JAX's default float dtype (float64 when ``jax_enable_x64`` is
on): scalar arithmetic on them (bias corrections, step sizes) then runs in the
precision torch uses for its Python-float hyperparameters, and only the final
scalar is rounded to each parameter's dtype. An array keeps its own floating
dtype, as a torch tensor hyperparameter does: ``lr=jnp.float32(1e-3)`` under x64
runs the scalar arithmetic torch runs on ``lr=torch.tensor(1e-3)`` in float32
(see :func:`given_dtype`).

``count`` is the number of ``update`` calls so far; a schedule is evaluated at the
count of the step it drives, so the first step uses ``schedule(0)``, as a torch
scheduler applies its epoch-0 value at construction.

Read and write them between steps with :func:`get_hyperparams` and
:func:`set_hyperparams`::

    >>> import functional_optim as fo, jax.numpy as jnp
    >>> state = fo.adam(lr=1e-3).init({'w': jnp.zeros(3)})
    >>> print(fo.get_hyperparams(state)['lr'])
    0.001
    >>> state = fo.set_hyperparams(state, lr=1e-4)
    >>> print(fo.get_hyperparams(state)['lr'])
    0.0001
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import jax
import jax.numpy as jnp
import numpy as np

Schedule = Callable[[jax.Array], Any]
ScalarOrSchedule = Union[float, jax.Array, Schedule]
PyTree = Any


def hyperparam_dtype() -> np.dtype:
  """The dtype hyperparameters are stored in: float64 under x64, else float32.

  That is JAX's default float dtype, the dtype of ``jnp.asarray(1.0)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import hyperparam_dtype
    >>> hyperparam_dtype() == jnp.asarray(1.0).dtype
    True
    >>> with jax.enable_x64(True):
    ...   print(hyperparam_dtype())
    float64
  """
  return jax.dtypes.canonicalize_dtype(jnp.float64)


def is_schedule(value: Any) -> bool:
  """Whether ``value`` is a schedule: any callable ``count -> value``.

  Numbers and arrays are constants; everything callable is evaluated at each
  step's count.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import is_schedule
    >>> is_schedule(lambda count: 0.1 * 0.9 ** count), is_schedule(jnp.float32(0.1))
    (True, False)
  """
  return callable(value)


def given_dtype(value: Any) -> np.dtype:
  """The dtype a constant hyperparameter is kept in: an array's own floating dtype,
  else :func:`hyperparam_dtype`.

  torch does the scalar arithmetic of a tensor hyperparameter (``lr=torch.tensor(1e-3)``)
  in the tensor's dtype where it does not call ``.item()`` (``lr / bias_correction1``
  is a float32 tensor), and that of a Python float in double precision; keeping
  the given dtype lets the optimizers follow both. Numbers and integer arrays take
  :func:`hyperparam_dtype`.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from functional_optim.core.hyperparams import given_dtype
    >>> with jax.enable_x64(True):
    ...   print(given_dtype(1e-3), given_dtype(np.float32(1e-3)), given_dtype(jnp.int32(1)))
    float64 float32 float64
  """
  dtype = getattr(value, 'dtype', None)
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
    return jax.dtypes.canonicalize_dtype(dtype)
  return hyperparam_dtype()


def array_dtype(value: Any) -> np.dtype | None:
  """The floating dtype of a hyperparameter given as an array, else None.

  The math of Muon and Adafactor uses it where torch multiplies a tensor lr by a
  Python float inside the step (``lr * adjusted_ratio``), which runs in the
  tensor's dtype; None (a number or a schedule) means double precision.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import array_dtype
    >>> array_dtype(1e-3), array_dtype(jnp.float32(1e-3)), array_dtype(lambda c: 0.1)
    (None, dtype('float32'), None)
  """
  dtype = getattr(value, 'dtype', None)
  if is_schedule(value) or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    return None
  return np.dtype(dtype)


def _as_hyperparam(value, dtype=None) -> jax.Array:
  """A 0-d array in ``dtype`` (default: :func:`given_dtype`); torch's 1-element
  tensors (shape ``(1,)``) count as scalars."""
  value = jnp.asarray(value, dtype=given_dtype(value) if dtype is None else dtype)
  return value.reshape(()) if value.ndim else value


def initial_hyperparams(spec: Mapping[str, PyTree]) -> dict[str, PyTree]:
  """The values the first step uses: constants as they are, schedules at count 0.

  Each leaf of ``spec`` becomes a 0-d array (in :func:`given_dtype`; a schedule's
  value in :func:`hyperparam_dtype`): :math:`h = s(0)` for a schedule :math:`s`,
  else :math:`h = s`.

  Example:
    >>> from functional_optim.core.hyperparams import initial_hyperparams
    >>> hp = initial_hyperparams({'lr': lambda count: 0.5 / (count + 1),
    ...                           'betas': (0.5, 0.25)})
    >>> float(hp['lr']), [float(b) for b in hp['betas']]
    (0.5, [0.5, 0.25])
  """
  return current_hyperparams(spec, None, jnp.zeros([], jnp.int32))


def current_hyperparams(spec: Mapping[str, PyTree], stored: Mapping[str, PyTree] | None,
                        count: jax.Array) -> dict[str, PyTree]:
  r"""The values for the step at ``count``: schedules evaluated, the rest as stored.

  ``spec`` is what the builder was given (numbers, arrays, schedules, or tuples of
  them such as ``betas``); ``stored`` is the state's ``hyperparams`` dict, which
  holds the values a user may have set since. Leaf by leaf:
  :math:`h = s(\text{count})` for a schedule :math:`s`, else the stored value
  (the given one when ``stored`` is None).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import current_hyperparams
    >>> spec = {'lr': lambda count: 0.5 ** count, 'eps': 1e-8}
    >>> stored = {'lr': jnp.float32(9.0), 'eps': jnp.float32(0.25)}  # eps set by hand
    >>> hp = current_hyperparams(spec, stored, jnp.int32(2))
    >>> float(hp['lr']), float(hp['eps'])
    (0.25, 0.25)
  """
  def resolve(given, kept=None):
    if is_schedule(given):
      return _as_hyperparam(given(count), hyperparam_dtype())
    return _as_hyperparam(given if kept is None else kept)

  if stored is None:
    return {name: jax.tree.map(resolve, value) for name, value in spec.items()}
  return {name: jax.tree.map(resolve, value, stored[name])
          for name, value in spec.items()}


# ----------------------------------------------------------------------------
# Reading and writing hyperparameters of a state (of any nesting of chains).


def _has_hyperparams(node: Any) -> bool:
  return (isinstance(node, tuple) and hasattr(node, '_fields')
          and 'hyperparams' in node._fields and isinstance(node.hyperparams, dict))


def _rebuild(node: Any, fn: Callable[[Any], Any]) -> Any:
  """Applies ``fn`` to every state carrying ``hyperparams`` inside ``node``."""
  if _has_hyperparams(node):
    node = fn(node)
  if isinstance(node, tuple) and hasattr(node, '_fields'):
    return type(node)(*(child if name == 'hyperparams' else _rebuild(child, fn)
                        for name, child in zip(node._fields, node)))
  if isinstance(node, (tuple, list)):
    return type(node)(_rebuild(child, fn) for child in node)
  if type(node) is dict:
    return {key: _rebuild(child, fn) for key, child in node.items()}
  return node


def _hyperparam_states(state: Any) -> list[Any]:
  found = []
  def collect(node):
    found.append(node)
    return node
  _rebuild(state, collect)
  return found


def get_hyperparams(state: Any) -> dict[str, PyTree]:
  """The current hyperparameters of an optimizer state, by name.

  Works on the state of one optimizer or of a :func:`chain` (at any depth). Each
  value is the one the last step used (or, before the first step, the one the
  first step will use). A name carried by two transformations of one chain is
  ambiguous: read it from that transformation's own state (``state[i]``).

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> state = fo.sgd(lr=0.1, momentum=0.9).init({'w': jnp.zeros(2)})
    >>> sorted(fo.get_hyperparams(state))
    ['dampening', 'lr', 'momentum']
  """
  merged: dict[str, PyTree] = {}
  for node in _hyperparam_states(state):
    for name, value in node.hyperparams.items():
      if name in merged:
        raise ValueError(
            f'hyperparameter {name!r} belongs to more than one transformation in '
            f'this state; read it from the state of one of them (state[i] of a '
            f'chain, state.inner_states[label] of a partition)')
      merged[name] = value
  if not _hyperparam_states(state):
    raise ValueError('this state has no hyperparameters (no functional_optim '
                     'optimizer state inside it)')
  return merged


def set_hyperparams(state: Any, **values: PyTree) -> Any:
  """Returns ``state`` with the named hyperparameters replaced; the next step uses them.

  Values keep the stored dtype; tuples such as ``betas`` are given whole. Works
  under ``jax.jit`` (values may be traced), so a schedule computed outside the
  optimizer changes the learning rate without recompiling. A hyperparameter that
  was given as a schedule is recomputed from it at every step, so setting it has no
  lasting effect; give a constant to control it by hand.

  Raises:
    KeyError: a name is no hyperparameter of this state.
    ValueError: a name belongs to more than one transformation of a chain.

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> state = fo.adam(lr=1e-3).init({'w': jnp.zeros(2)})
    >>> state = fo.set_hyperparams(state, lr=3e-4, betas=(0.9, 0.95))
    >>> [round(float(b), 6) for b in fo.get_hyperparams(state)['betas']]
    [0.9, 0.95]
  """
  owners = {name: 0 for name in values}
  for node in _hyperparam_states(state):
    for name in node.hyperparams:
      if name in owners:
        owners[name] += 1
  for name, n in owners.items():
    if n == 0:
      known = sorted(get_hyperparams(state)) if _hyperparam_states(state) else []
      raise KeyError(f'{name!r} is not a hyperparameter of this state; it has '
                     f'{known}')
    if n > 1:
      raise ValueError(
          f'hyperparameter {name!r} belongs to more than one transformation in '
          f'this state; set it on the state of one of them (state[i] of a chain, '
          f'state.inner_states[label] of a partition)')

  def replace(node):
    hyperparams = dict(node.hyperparams)
    for name, value in values.items():
      if name in hyperparams:
        old = hyperparams[name]
        if jax.tree.structure(old) != jax.tree.structure(value):
          raise ValueError(f'{name!r} expects the structure of {old!r}, got {value!r}')
        hyperparams[name] = jax.tree.map(
            lambda o, v: jnp.asarray(v, dtype=o.dtype), old, value)
    return node._replace(hyperparams=hyperparams)

  return _rebuild(state, replace)
