"""Reading and writing the hyperparameters of an optimizer state, of any nesting.

The state of every transformation of the package (and of
``optax.inject_hyperparams``) holds its numeric hyperparameters as data
(:mod:`~functional_optim.core.hyperparams`). :func:`get_hyperparams`,
:func:`set_hyperparams` and :func:`map_hyperparams` find them wherever they are in
a state: inside ``chain``, ``partition``, ``mixed_precision``, an
``nnx.Optimizer``'s Variables; ``at=`` picks one of several.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.core.hyperparams import Hyperparams

PyTree = Any


class UnknownHyperparameterError(KeyError):
  """A name that is not a hyperparameter of the state (a ``KeyError``, plainly printed)."""

  def __str__(self) -> str:
    return str(self.args[0])


def _is_optax_injected(node: Any) -> bool:
  """optax's ``inject_hyperparams`` state: a NamedTuple with a ``hyperparams`` dict."""
  fields = getattr(node, '_fields', ())
  return (isinstance(node, tuple) and 'hyperparams' in fields
          and type(getattr(node, 'hyperparams')) is dict)


def _is_holder(node: Any) -> bool:
  return isinstance(node, Hyperparams) or _is_optax_injected(node)


def _values(holder) -> Mapping[str, PyTree]:
  return holder if isinstance(holder, Hyperparams) else holder.hyperparams


def _nnx():
  import sys
  return sys.modules.get('flax.nnx')


def _is_variable(x: Any) -> bool:
  nnx = _nnx()
  return nnx is not None and isinstance(x, nnx.Variable)


def _unwrap_optimizer(state: Any) -> Any:
  """The optax state inside a flax ``nnx.Optimizer`` (its ``opt_state``), else ``state``."""
  nnx = _nnx()
  if nnx is not None and isinstance(state, nnx.Optimizer):
    return state.opt_state
  return state


def _key_of(entry) -> Any:
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _matches(path, at) -> bool:
  """Whether ``at`` (a label, an index, or a tuple of them in order) names ``path``."""
  keys = [_key_of(entry) for entry in path]
  wanted = at if isinstance(at, tuple) else (at,)
  position = 0
  for key in keys:
    if position < len(wanted) and key == wanted[position]:
      position += 1
  return position == len(wanted)


def _find(tree: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
  """``(path, holder)`` of every holder of hyperparameters in ``tree``, outermost first.

  A path names the state that holds them: ``Hyperparams`` are its
  ``hyperparams`` field (dropped from the path); optax's injected state holds
  its own, and may wrap ours in its ``inner_state``.
  """
  for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_holder)[0]:
    path = prefix + tuple(path)
    if isinstance(node, Hyperparams):
      if path and _key_of(path[-1]) == 'hyperparams':
        path = path[:-1]
      yield path, node
    elif _is_optax_injected(node):
      yield path, node
      for field in node._fields:
        if field != 'hyperparams':
          yield from _find(getattr(node, field),
                           path + (jax.tree_util.GetAttrKey(field),))


def _holders(state: Any, at: Any) -> list[tuple[tuple, Any]]:
  found = list(_find(state))
  if not found:
    raise ValueError('this state has no hyperparameters (no functional_optim optimizer '
                     'state inside it)')
  if at is not None:
    found = [(path, node) for path, node in found if _matches(path, at)]
    if not found:
      raise ValueError(f'no transformation in this state is at {at!r} (a label of a '
                       f'partition, an index of a chain, or a tuple of them)')
  return found


def _path_name(path) -> str:
  return jax.tree_util.keystr(tuple(path)).lstrip('.') or '<root>'


def _value_of(x):
  return x.get_value() if _is_variable(x) else x


def get_hyperparams(state: Any, at: Any = None) -> dict[str, PyTree]:
  """The current hyperparameters of an optimizer state, by name.

  Works on the state of one optimizer, of any nesting of chains, partitions and
  wrappers, and on a flax ``nnx.Optimizer`` (or its ``opt_state``). Each value is
  the one the last step used (before the first step, the one it will use).

  Args:
    state: the state (or an ``nnx.Optimizer``).
    at: only the transformations at this label (of a partition), index (of a
      chain), or tuple of them in order.

  Returns:
    ``{name: value}``. A name that several transformations hold maps to
    ``{path: value}``, each path naming where in the state that transformation's
    state is (``"inner_states['adamw']"``, ``"[1]"``).

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> tx = fo.partition({'a': fo.adam(lr=1e-3), 'b': fo.sgd(lr=0.1, momentum=0.9)},
    ...                   {'w': 'a', 'b': 'b'})
    >>> hp = fo.get_hyperparams(tx.init({'w': jnp.zeros(2), 'b': jnp.zeros(1)}))
    >>> float(hp['momentum']), {path: float(lr) for path, lr in hp['lr'].items()}
    (0.9, {"inner_states['a']": 0.001, "inner_states['b']": 0.1})
  """
  found = _holders(_unwrap_optimizer(state), at)
  by_name: dict[str, list] = {}
  for path, node in found:
    for name, value in _values(node).items():
      value = jax.tree.map(_value_of, value, is_leaf=_is_variable)
      by_name.setdefault(name, []).append((path, value))
  return {name: held[0][1] if len(held) == 1 else
          {_path_name(path): value for path, value in held}
          for name, held in by_name.items()}


def _check_scalar(name: str, old: PyTree, value: PyTree) -> None:
  old = jax.tree.map(_value_of, old, is_leaf=_is_variable)
  if jax.tree.structure(old) != jax.tree.structure(value):
    raise ValueError(f'{name!r} expects the structure of {old!r}, got {value!r}')
  for leaf in jax.tree.leaves(value):
    if np.size(leaf) != 1:
      raise ValueError(f'{name!r} must be a scalar (one value for all the params it '
                       f'drives), got an array of shape {np.shape(leaf)}; give each '
                       f'group of params its own optimizer with functional_optim.partition')


def set_hyperparams(state: Any, at: Any = None, **values: PyTree) -> Any:
  """Returns ``state`` with the named hyperparameters set; the next step uses them.

  Works on the state of one optimizer or of any nesting of chains, partitions and
  wrappers: a name held by several transformations is set in all of them, unless
  ``at`` names one (a partition's label, a chain's index, or a tuple of them in
  order). Values keep the stored dtype; tuples such as ``betas`` are given whole;
  each value is a scalar. Works under ``jax.jit`` (values may be traced): no
  recompiling. A value set here holds until the optimizer's builder gives a new
  one (see the module docstring).

  A flax ``nnx.Optimizer`` (or its ``opt_state``) is updated in place and
  returned.

  Raises:
    KeyError: a name that is no hyperparameter of the selected state; for one that
      a Python ``0`` compiled out, the message says how to keep it.
    ValueError: a hyperparameter that a schedule drives (its value comes from the
      schedule at every step), a value that is not a scalar, or ``at`` naming no
      transformation.

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> state = fo.adam(lr=1e-3).init({'w': jnp.zeros(2)})
    >>> state = fo.set_hyperparams(state, lr=3e-4, betas=(0.9, 0.95))
    >>> [round(float(b), 6) for b in fo.get_hyperparams(state)['betas']]
    [0.9, 0.95]
  """
  return _rewrite(state, at, {name: (lambda _, v=value: v) for name, value in values.items()})


def map_hyperparams(state: Any, at: Any = None, **fns: Callable[[PyTree], PyTree]) -> Any:
  """Returns ``state`` with each named hyperparameter ``h`` replaced by ``fn(h)``,
  in every transformation that holds it (or those ``at`` names), each from its own.

  :func:`set_hyperparams` with a value computed from the current one:
  ``reduce_lr_on_plateau`` cuts every lr of a partition (torch's param groups) by
  its factor this way. The same checks and errors as :func:`set_hyperparams`.

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> from functional_optim.core.hyperparams_access import map_hyperparams
    >>> tx = fo.partition({'a': fo.adam(lr=1e-2), 'b': fo.sgd(lr=0.1)}, {'w': 'a', 'b': 'b'})
    >>> state = map_hyperparams(tx.init({'w': jnp.zeros(2), 'b': jnp.zeros(1)}),
    ...                         lr=lambda lr: lr / 2)
    >>> sorted(round(float(lr), 6) for lr in fo.get_hyperparams(state)['lr'].values())
    [0.005, 0.05]
  """
  return _rewrite(state, at, fns)


def _rewrite(state: Any, at: Any, fns: Mapping[str, Callable[[PyTree], PyTree]]) -> Any:
  """``state`` with ``fns[name](current value)`` written for each name, checked first."""
  target = _unwrap_optimizer(state)
  found = _holders(target, at)
  for name in fns:
    holders = [node for _, node in found if name in _values(node)]
    if not holders:
      gates = {gate for _, node in found if isinstance(node, Hyperparams)
               for off, gate in node.compiled_out if off == name}
      where = '' if at is None else f' at {at!r}'
      if gates:
        gate = sorted(gates)[0]
        raise UnknownHyperparameterError(
            f'{name!r} is not in this state{where}: the optimizer was built with '
            f'{gate}=0, a Python number, which leaves it out of the program. To set '
            f'it later, build with {gate}=jnp.asarray(0.0): an array keeps it (0 for now).')
      known = sorted({k for _, node in found for k in _values(node)})
      raise UnknownHyperparameterError(
          f'{name!r} is not a hyperparameter of this state{where}; it has {known}')
    for node in holders:
      driven = dict(node.scheduled) if isinstance(node, Hyperparams) else {}
      if name in driven:
        raise ValueError(
            f'{name!r} is set by its schedule at every step ({driven[name]}), so a '
            f'value set here would be ignored; build the optimizer with a constant '
            f'{name} to set it by hand')
  new_values = {}
  for _, node in found:
    held = _values(node)
    current = {name: jax.tree.map(_value_of, held[name], is_leaf=_is_variable)
               for name in fns if name in held}
    computed = {name: fns[name](value) for name, value in current.items()}
    for name, value in computed.items():
      _check_scalar(name, current[name], value)
    new_values[id(node)] = computed

  def cast(old, new):
    new = jnp.asarray(new, dtype=jnp.result_type(_value_of(old)))
    new = new.reshape(np.shape(_value_of(old)))
    if _is_variable(old):  # an nnx.Optimizer's state: written in place
      old.set_value(new)
      return old
    return new

  def with_values(node):
    held = _values(node)
    return {name: jax.tree.map(cast, held[name], value, is_leaf=_is_variable)
            for name, value in new_values[id(node)].items()}

  def replace(node):
    if isinstance(node, Hyperparams):
      return node.replace(with_values(node)) if id(node) in new_values else node
    if _is_optax_injected(node):
      inner = {f: jax.tree.map(replace, getattr(node, f), is_leaf=_is_holder)
               for f in node._fields if f != 'hyperparams'}
      if id(node) in new_values:
        inner['hyperparams'] = {**node.hyperparams, **with_values(node)}
      return node._replace(**inner)
    return node

  replaced = jax.tree.map(replace, target, is_leaf=_is_holder)
  return state if target is not state or _holds_variables(target) else replaced


def _holds_variables(tree) -> bool:
  return any(_is_variable(x) for x in jax.tree.leaves(tree, is_leaf=_is_variable))
