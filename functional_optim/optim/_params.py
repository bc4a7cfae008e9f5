"""Where a param group's params come from, and how to read and write them.

A group's params are kept as one pytree (its *structure*): the user's own pytree,
a list for ``(name, array)`` pairs, or the pure-array state of an nnx Module. The
functional optimizer state mirrors that pytree, and torch's integer param ids
follow the order of its leaves.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from functional_optim.core.tree import check_gradient_tree


def _is_nnx_variable(x) -> bool:
  nnx = _nnx_if_loaded()
  return nnx is not None and isinstance(x, nnx.Variable)


def _is_nnx_module(x) -> bool:
  nnx = _nnx_if_loaded()
  return nnx is not None and isinstance(x, nnx.Module)


def _nnx_if_loaded():
  # flax is an optional extra: only look at it when the user has imported it.
  if 'flax.nnx' not in sys.modules:
    return None
  return sys.modules['flax.nnx']


def _own_copy(x):
  # The compiled step donates its inputs; copying keeps the caller's arrays alive.
  return jnp.array(x, copy=True)


class ParamSource:
  """One group's params: their structure, names, and nnx Variables to write back."""

  def __init__(self, tree: Any, names: list[str] | None, variables: list | None,
               module: Any = None):
    self.tree = tree
    self.treedef = jax.tree.structure(tree)
    self.names = names
    self.variables = variables
    self.module = module

  @classmethod
  def from_params(cls, params: Any) -> 'ParamSource':
    """Reads ``params`` as torch reads a group's ``'params'`` entry."""
    if _is_nnx_module(params):
      return cls._from_module(params)
    if isinstance(params, jax.Array) or _is_nnx_variable(params):
      return cls._from_named([(None, params)])
    if isinstance(params, (set, frozenset)):
      raise TypeError(
          'optimizer parameters need to be organized in ordered collections, but '
          'the ordering of tensors in sets will change between runs. Please use a '
          'list instead.')
    if isinstance(params, Iterable) and not isinstance(params, (dict, tuple, list)):
      params = list(params)
    if isinstance(params, list) and params and all(isinstance(p, tuple) for p in params):
      return cls._from_named(params)
    if isinstance(params, list) and any(isinstance(p, tuple) for p in params):
      raise ValueError('all optimizer params should be with/without names. Some '
                       'param names are missing')
    if isinstance(params, list) and any(_is_nnx_variable(p) for p in params):
      return cls._from_named([(None, p) for p in params])
    return cls._from_tree(params)

  @classmethod
  def _from_tree(cls, tree):
    for leaf in jax.tree.leaves(tree):
      if not isinstance(leaf, (jax.Array,)) and not hasattr(leaf, '__array__'):
        raise TypeError('optimizer can only optimize Tensors, but one of the params '
                        f'is {type(leaf)}')
    return cls(jax.tree.map(_own_copy, tree), None, None)

  @classmethod
  def _from_named(cls, pairs):
    names, leaves, variables = [], [], []
    for name, value in pairs:
      names.append(name)
      variables.append(value if _is_nnx_variable(value) else None)
      value = value.get_value() if _is_nnx_variable(value) else value
      if not isinstance(value, jax.Array) and not hasattr(value, '__array__'):
        raise TypeError('optimizer can only optimize Tensors, but one of the params '
                        f'is {type(value)}')
      leaves.append(value if variables[-1] is not None else _own_copy(value))
    named = names if all(n is not None for n in names) else None
    has_variables = any(v is not None for v in variables)
    return cls(list(leaves), named, variables if has_variables else None)

  @classmethod
  def _from_module(cls, module):
    from flax import nnx
    state = nnx.state(module, nnx.Param)
    variables = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return cls(nnx.as_pure(state), None, variables, module)

  # --------------------------------------------------------------------------

  def leaves(self) -> list:
    return self.treedef.flatten_up_to(self.tree)

  def set_leaves(self, leaves: list) -> None:
    self.tree = self.treedef.unflatten(leaves)
    if self.variables is not None:
      for variable, value in zip(self.variables, leaves):
        if variable is not None:
          variable.set_value(value)

  def set_tree(self, tree) -> None:
    self.set_leaves(self.treedef.flatten_up_to(tree))

  def user_params(self):
    """The current params in the structure the user gave."""
    if self.names is not None:
      return dict(zip(self.names, self.leaves()))
    return self.tree

  def function_of_params(self, fn):
    """``fn`` of the user's params as a function of :attr:`tree` (traceable)."""
    if self.module is not None:
      from flax import nnx
      graphdef, _, rest = nnx.split(self.module, nnx.Param, ...)
      return lambda tree: fn(nnx.merge(graphdef, tree, rest))
    if self.names is not None:
      return lambda tree: fn(dict(zip(self.names, self.treedef.flatten_up_to(tree))))
    return fn

  def grads_tree(self, grads) -> Any:
    """The user's gradients as a tree shaped like :attr:`tree` (None = no gradient)."""
    if self.module is not None:
      from flax import nnx
      if isinstance(grads, nnx.State):
        grads = nnx.as_pure(grads)
    elif self.names is not None and isinstance(grads, dict):
      unknown = set(grads) - set(self.names)
      if unknown:
        raise KeyError(f'gradients for unknown params {sorted(unknown)}; the params '
                       f'are {self.names}')
      grads = [grads.get(name) for name in self.names]
    elif isinstance(self.tree, list) and isinstance(grads, tuple):
      grads = list(grads)
    check_gradient_tree(grads, self.tree)
    return grads
