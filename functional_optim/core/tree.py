"""Tree utilities shared by every transformation: gradient checks and None leaves.

A ``None`` gradient leaf means "this parameter got no gradient": torch skips a
parameter whose ``.grad is None``, and so do we (its value and state stay as they
are). The helpers here treat ``None`` as a leaf so that trees with holes line up
with the full params tree.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

PyTree = Any


def is_none(x: Any) -> bool:
  """Whether ``x`` is None: the ``is_leaf`` that keeps None leaves in a tree.

  Example:
    >>> import jax
    >>> from functional_optim.core.tree import is_none
    >>> jax.tree.leaves({'a': None, 'b': 1.0}, is_leaf=is_none)
    [None, 1.0]
  """
  return x is None


def is_gradient_leaf(x: Any) -> bool:
  """None (no gradient) and sparse ``BCOO`` gradients are leaves, not subtrees.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.experimental import sparse
    >>> from functional_optim.core.tree import is_gradient_leaf
    >>> grads = {'dense': jnp.ones(2), 'none': None,
    ...          'sparse': sparse.BCOO.fromdense(jnp.array([0.0, 1.0]))}
    >>> leaves = jax.tree.leaves(grads, is_leaf=is_gradient_leaf)  # BCOO kept whole
    >>> len(leaves), [is_gradient_leaf(g) for g in leaves]
    (3, [False, True, True])
  """
  return x is None or isinstance(x, sparse.BCOO)


def _first_difference(paths_a: list, paths_b: list) -> str:
  for a, b in zip(paths_a, paths_b):
    if a != b:
      return jax.tree_util.keystr(a)
  longer = paths_a if len(paths_a) > len(paths_b) else paths_b
  if len(paths_a) == len(paths_b):
    return '<tree root>'
  return jax.tree_util.keystr(longer[min(len(paths_a), len(paths_b))])


def _where_trees_part(paths: list, ref_paths: list, what: str, ref_what: str) -> str:
  """The first differing path, then the first path that only one of the trees has.

  The first difference alone can point at a path both trees have (a missing key
  shifts every later leaf), so the path one tree lacks is named too.
  """
  keys = [jax.tree_util.keystr(p) for p in paths]
  ref_keys = [jax.tree_util.keystr(p) for p in ref_paths]
  where = _first_difference(paths, ref_paths)
  lacking = [k for k in ref_keys if k not in set(keys)]
  extra = [k for k in keys if k not in set(ref_keys)]
  if lacking:
    where += f'; {ref_what} at {lacking[0]} has no {what}'
  if extra:
    where += f'; {what} at {extra[0]} has no {ref_what}'
  return where


def without_variables(tree: PyTree) -> PyTree:
  """``tree`` with each flax ``nnx.Variable`` replaced by its value.

  ``nnx.Optimizer`` hands ``init`` the model's ``nnx.Param`` variables and
  ``update`` their values: a layout computed from the params (the packed state's)
  must not depend on which. Without flax imported, ``tree`` is returned as it is.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from functional_optim.core.tree import without_variables
    >>> without_variables({'w': nnx.Param(jnp.ones(2))})
    {'w': Array([1., 1.], dtype=float32)}
  """
  nnx = sys.modules.get('flax.nnx')
  if nnx is None:
    return tree
  is_variable = lambda x: isinstance(x, nnx.Variable)
  return jax.tree.map(lambda x: x.get_value() if is_variable(x) else x, tree,
                      is_leaf=is_variable)


def check_gradient_tree(grads: PyTree, reference: PyTree, *, shapes: bool = True,
                        dense_only: str | None = None) -> None:
  """Raises a clear error when ``grads`` does not line up with ``reference``.

  ``reference`` has the params' structure (the params themselves, or a per-param
  state tree). With ``shapes=True`` its leaves also give the expected shape and
  dtype of each gradient. Runs on abstract values, so under ``jax.jit`` it costs
  nothing at run time. ``None`` gradient leaves are allowed anywhere; sparse
  ``BCOO`` gradients too, unless ``dense_only`` names an optimizer that takes
  dense gradients only.

  Raises:
    RuntimeError: a sparse gradient for a ``dense_only`` optimizer (torch's
      "<Name> does not support sparse gradients").
    ValueError: the tree structure differs (the message names the first
      differing path, and a path only one of the trees has) or a gradient's
      shape differs from its param's.
    TypeError: a gradient's dtype differs from its param's, or a gradient leaf is
      not an array.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.tree import check_gradient_tree
    >>> params = {'b': jnp.zeros(1), 'w': jnp.zeros(2)}
    >>> check_gradient_tree({'b': None, 'w': jnp.ones(2)}, params)  # fine: returns None
    >>> check_gradient_tree({'b': None, 'w': jnp.ones(3)}, params)
    Traceback (most recent call last):
      ...
    ValueError: gradient at ['w'] has shape (3,), but its param has shape (2,)
  """
  grad_leaves, grad_def = jax.tree_util.tree_flatten_with_path(grads, is_leaf=is_gradient_leaf)
  ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(reference)
  if grad_def != ref_def:
    where = _where_trees_part([p for p, _ in grad_leaves], [p for p, _ in ref_leaves],
                              'gradient', 'param')
    raise ValueError(
        f'gradient tree does not match the params tree; first difference at '
        f'{where}.\n  gradients: {grad_def}\n  params:    {ref_def}')
  for (path, g), (_, r) in zip(grad_leaves, ref_leaves):
    if g is None:
      continue
    if not (hasattr(g, 'shape') and hasattr(g, 'dtype')):  # a Python number, a string...
      raise TypeError(f'gradient at {jax.tree_util.keystr(path)} is a {type(g).__name__}, '
                      f'not an array')
    if dense_only and isinstance(g, sparse.BCOO):
      raise RuntimeError(f'{dense_only} does not support sparse gradients')
    if not shapes:
      continue
    if np.shape(g) != np.shape(r):
      raise ValueError(
          f'gradient at {jax.tree_util.keystr(path)} has shape {np.shape(g)}, but '
          f'its param has shape {np.shape(r)}')
    if g.dtype != r.dtype:
      raise TypeError(
          f'gradient at {jax.tree_util.keystr(path)} has dtype {g.dtype}, but its '
          f'param has dtype {r.dtype}')


def check_float_params(params: PyTree, name: str) -> None:
  """Raises a clear error at ``init`` for a param that is not floating point or complex.

  torch puts gradients on floating point and complex tensors only ("Only Tensors
  of floating point and complex dtype can require gradients"); an update of an
  integer or boolean param would be rounded away, so it is refused up front.

  Raises:
    TypeError: names the first such param's path and dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.tree import check_float_params
    >>> check_float_params({'w': jnp.zeros(2), 'z': jnp.zeros(1, jnp.complex64)}, 'sgd')
    >>> check_float_params({'w': jnp.zeros(2), 'n': jnp.zeros(1, jnp.int32)}, 'sgd')
    Traceback (most recent call last):
      ...
    TypeError: sgd can only optimize floating point and complex params, but the param at ['n'] has dtype int32
  """
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.result_type(p)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
          f'{name} can only optimize floating point and complex params, but the param '
          f'at {jax.tree_util.keystr(path) or "<tree root>"} has dtype {dtype}')


def check_state_tree(state_tree: PyTree, params: PyTree, name: str) -> None:
  """Raises a clear error when a per-param state tree was built for other params.

  Compares tree structures only, so under ``jax.jit`` it costs tracing time and
  nothing at run time.

  Raises:
    ValueError: the structures differ; the message names the first differing path.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.tree import check_state_tree
    >>> check_state_tree({'w': jnp.zeros([])}, {'w': jnp.ones(3)}, 'adam')  # fine
    >>> check_state_tree({'v': jnp.zeros([])}, {'w': jnp.ones(3)}, 'adam')
    Traceback (most recent call last):
      ...
    ValueError: adam: the state was built for params of another structure; first difference at ['v']; param at ['w'] has no state entry; state entry at ['v'] has no param.
      state:  PyTreeDef({'v': *})
      params: PyTreeDef({'w': *})
  """
  # flax Variables around leaves (nnx.Optimizer's, the model's) are no structure.
  state_tree, params = without_variables(state_tree), without_variables(params)
  state_def, params_def = jax.tree.structure(state_tree), jax.tree.structure(params)
  if state_def == params_def:
    return
  paths = lambda tree: [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  where = _where_trees_part(paths(state_tree), paths(params), 'state entry', 'param')
  raise ValueError(
      f'{name}: the state was built for params of another structure; first '
      f'difference at {where}.\n  state:  {state_def}\n  params: {params_def}')


def flatten_like(grads: PyTree, *trees: PyTree):
  """Flattens ``grads`` (None leaves included) and each tree up to its structure.

  Returns ``(treedef, grad_leaves, [leaves of each tree])``; a tree given as None
  yields a list of Nones.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.tree import flatten_like
    >>> grads = {'a': None, 'b': jnp.ones(1)}
    >>> treedef, grad_leaves, (steps, params) = flatten_like(grads, {'a': 3, 'b': 5}, None)
    >>> grad_leaves[0], steps, params
    (None, [3, 5], [None, None])
  """
  treedef = jax.tree.structure(grads, is_leaf=is_none)
  grad_leaves = treedef.flatten_up_to(grads)
  others = [[None] * len(grad_leaves) if t is None else treedef.flatten_up_to(t)
            for t in trees]
  return treedef, grad_leaves, others


def _key_name(entry) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def dotted_name(path) -> str:
  """A key path as torch names a param: keys joined by dots, list indices as numbers.

  Example:
    >>> import jax
    >>> from functional_optim.core.tree import dotted_name
    >>> path, _ = jax.tree_util.tree_flatten_with_path({'h': [{'w': 0}]})[0][0]
    >>> dotted_name(path)
    'h.0.w'
  """
  return '.'.join(_key_name(entry) for entry in path)


def insertion_order(tree: PyTree, is_leaf=None) -> list[int]:
  """The indices of ``tree``'s leaves (in JAX's order) in the order the tree was written.

  JAX flattens a dict in sorted key order; a torch module lists its params in
  the order they were defined (``named_parameters()``), and a user porting one
  writes dicts in that order. This walks mappings in insertion order (and every
  other node in JAX's order of its children), so
  ``[leaves[i] for i in insertion_order(tree)]`` are the leaves as written.

  Example:
    >>> import jax
    >>> from functional_optim.core.tree import insertion_order
    >>> tree = {'q': 1.0, 'k': 2.0, 'v': {'w': 3.0, 'b': 4.0}}
    >>> jax.tree.leaves(tree), insertion_order(tree)  # JAX sorts: k, q, v.b, v.w
    ([2.0, 1.0, 4.0, 3.0], [1, 0, 3, 2])
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  index = {jax.tree_util.keystr(path): i for i, (path, _) in enumerate(flat)}
  order: list[int] = []

  def walk(node, path):
    key = jax.tree_util.keystr(path)
    if key in index:  # a leaf
      order.append(index[key])
      return
    if isinstance(node, Mapping):
      children = [((jax.tree_util.DictKey(k),), v) for k, v in node.items()]
    else:  # one level of JAX's own flattening
      children = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)[0]
    for child_path, child in children:
      walk(child, path + tuple(child_path))

  walk(tree, ())
  if sorted(order) != list(range(len(flat))):  # a node whose keys differ: JAX's order
    return list(range(len(flat)))
  return order


def check_same_layout(new: Any, old: Any, what: str) -> None:
  """Raises a clear error unless ``new`` has ``old``'s structure, shapes and dtypes.

  Raises:
    ValueError: naming ``what`` (``'the state of group 0'``) and the difference.
  """
  if jax.tree.structure(new) != jax.tree.structure(old):
    raise ValueError(f'{what} has another structure than this optimizer\'s:\n  given: '
                     f'{jax.tree.structure(new)}\n  ours:  {jax.tree.structure(old)}')
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
    if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
      raise ValueError(f'{what} has a leaf of shape {np.shape(a)} and dtype '
                       f'{jnp.result_type(a)} where this optimizer keeps {np.shape(b)} '
                       f'{jnp.result_type(b)}')
