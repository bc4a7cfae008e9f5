"""Per-param scalars kept once per group of params that hold the same value.

torch keeps a ``step`` per param (and NAdam a ``mu_product``, ASGD an ``eta`` and
a ``mu``): a param without a gradient does not step. Kept as one 0-d array per
leaf, every step computes each leaf's bias corrections on its own, and XLA:CPU
compiles a small kernel for each of those scalar computations and for each new
``step``: seven kernels per leaf for Adam where optax's shared ``count`` needs
three, and a compile that takes twice as long on trees of hundreds of leaves.

Params that always stepped together hold the same values, and that is known when
the step is traced: every param starts at 0, and only a gradient that is None
for some params of a group (static under ``jit``) makes their values part. So the
per-leaf layout keeps these scalars in a :class:`SharedPerLeaf`: one 0-d array per
group, the groups static. A step computes each group's scalars once and splits a
group when some of its params have no gradient. A state built from values (a
torch ``state_dict``, :func:`~functional_optim.kernels.pack_state`) is grouped by
equal values. Either way each param's value is exactly torch's.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
#: Each group's leaf indices (in the params' flattening order), in order of their
#: first leaf; together they hold every leaf once.
Groups = tuple[tuple[int, ...], ...]


@jax.tree_util.register_pytree_node_class
class SharedPerLeaf:
  """One 0-d value per leaf of a params tree, stored once per group of leaves.

  The leaves of a group hold the same value. :meth:`tree` gives the tree of 0-d
  arrays (a value per param); indexing and iterating read that tree, so
  ``state.step['w']`` works as it would on a tree.

  Attributes:
    values: one 0-d array per group.
    groups: each group's leaf indices (static).
    treedef: the params' tree structure (static).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.core.shared_scalars import SharedPerLeaf
    >>> steps = SharedPerLeaf.full(jax.tree.structure({'b': 0, 'w': 0}), 0.0, jnp.float32)
    >>> steps.groups, float(steps['w'])
    (((0, 1),), 0.0)
  """

  def __init__(self, values: Sequence[Any], groups: Groups, treedef):
    self.values = tuple(values)
    self.groups = groups
    self.treedef = treedef

  @classmethod
  def full(cls, treedef, value, dtype) -> 'SharedPerLeaf':
    """Every leaf at ``value``: one group (no leaves: none)."""
    groups = (tuple(range(treedef.num_leaves)),) if treedef.num_leaves else ()
    return cls([jnp.full([], value, dtype) for _ in groups], groups, treedef)

  @classmethod
  def of_leaves(cls, leaves: Sequence[Any], groups: Groups, treedef) -> 'SharedPerLeaf':
    """The values of ``leaves`` (one per leaf, equal within each group)."""
    return cls([leaves[group[0]] for group in groups], groups, treedef)

  def leaves(self) -> list:
    """The value of each leaf, in flattening order (a group's leaves share one array)."""
    out: list = [None] * self.treedef.num_leaves
    for value, group in zip(self.values, self.groups):
      for i in group:
        out[i] = value
    return out

  def tree(self) -> PyTree:
    """The tree of 0-d values, shaped like the params."""
    return self.treedef.unflatten(self.leaves())

  def __getitem__(self, key):
    return self.tree()[key]

  def __iter__(self) -> Iterator:
    return iter(self.tree())

  def __len__(self) -> int:
    return len(self.tree())

  def tree_flatten(self):
    return self.values, (self.groups, self.treedef)

  @classmethod
  def tree_unflatten(cls, aux, values):
    return cls(values, *aux)

  def __repr__(self) -> str:
    return f'SharedPerLeaf({self.tree()!r})'


def _key(value) -> Any:
  """A hashable stand-in for a concrete 0-d value; None for a traced one."""
  if isinstance(value, jax.core.Tracer):
    return None
  value = np.asarray(value)
  return value.dtype.str, value.tobytes()


def groups_of_equal(columns: Sequence[Sequence[Any]]) -> Groups:
  """The leaves grouped by their values in every column (each a value per leaf).

  Leaves join a group when every column holds the same bits for them. Traced
  values are not known, so each such leaf is a group of its own: the step is
  exact, only slower to compile.
  """
  num_leaves = len(columns[0]) if columns else 0
  by_key: dict[Any, list[int]] = {}
  singles = 0
  for i in range(num_leaves):
    keys = tuple(_key(column[i]) for column in columns)
    if any(k is None for k in keys):
      keys, singles = ('traced', singles), singles + 1
    by_key.setdefault(keys, []).append(i)
  return tuple(sorted((tuple(g) for g in by_key.values()), key=lambda g: g[0]))


def common_groups(fields: Sequence[SharedPerLeaf]) -> Groups:
  """The coarsest groups within which every field's groups agree (static)."""
  if len({f.groups for f in fields}) == 1:
    return fields[0].groups
  indices = [_group_index(f.groups) for f in fields]
  label = [tuple(index[i] for index in indices) for i in range(fields[0].treedef.num_leaves)]
  by_label: dict[tuple, list[int]] = {}
  for i, key in enumerate(label):
    by_label.setdefault(key, []).append(i)
  return tuple(sorted((tuple(g) for g in by_label.values()), key=lambda g: g[0]))


def _group_index(groups: Groups) -> list[int]:
  index = [0] * sum(len(g) for g in groups)
  for k, group in enumerate(groups):
    for i in group:
      index[i] = k
  return index


def as_shared(field: Any, treedef, groups: Groups | None = None) -> SharedPerLeaf:
  """``field`` (a :class:`SharedPerLeaf` or a tree of 0-d values) as ``groups``.

  With ``groups`` None, a tree is grouped by its values (:func:`groups_of_equal`).
  """
  leaves = field.leaves() if isinstance(field, SharedPerLeaf) else treedef.flatten_up_to(field)
  if groups is None:
    groups = field.groups if isinstance(field, SharedPerLeaf) else groups_of_equal([leaves])
  return SharedPerLeaf.of_leaves(leaves, groups, treedef)


def _is_shared(x) -> bool:
  return isinstance(x, SharedPerLeaf)


def in_groups_of(old: PyTree, new: PyTree) -> PyTree:
  """``old`` (a state) with each :class:`SharedPerLeaf` in the groups of ``new``'s.

  A step only splits groups, so each group of ``new`` lies within one of ``old``:
  ``old``'s values re-expressed exactly, and the two states have one structure
  again, to be selected between (``jnp.where(ok, new, old)``, a skipped step).
  """
  new_leaves, treedef = jax.tree.flatten(new, is_leaf=_is_shared)
  old_leaves = treedef.flatten_up_to(old)

  def follow(o, n):
    if not (_is_shared(o) and _is_shared(n)) or o.groups == n.groups:
      return o
    return SharedPerLeaf.of_leaves(o.leaves(), n.groups, n.treedef)
  return treedef.unflatten([follow(o, n) for o, n in zip(old_leaves, new_leaves)])


def expand_shared(state: PyTree) -> PyTree:
  """``state`` with each :class:`SharedPerLeaf` as its tree of values: a layout that
  does not depend on the grouping (what a checkpoint holds). Inverse:
  :func:`regroup_shared`."""
  return jax.tree.map(lambda x: x.tree() if _is_shared(x) else x, state, is_leaf=_is_shared)


def regroup_shared(state: PyTree, like: PyTree) -> PyTree:
  """``state`` (``like``'s structure with trees where ``like`` has
  :class:`SharedPerLeaf`) with those trees shared again, grouped by their values.

  The fields over one params structure are grouped together: leaves share a group
  when every such field holds the same value for them.
  """
  templates, treedef = jax.tree.flatten(like, is_leaf=lambda x: _is_shared(x) or x is None)
  values = treedef.flatten_up_to(state)
  shared = [k for k, t in enumerate(templates) if _is_shared(t)]
  columns = {k: values[k].leaves() if _is_shared(values[k])
             else templates[k].treedef.flatten_up_to(values[k]) for k in shared}
  for k in shared:  # in the template's dtype (a tree may hold Python numbers)
    dtype = templates[k].values[0].dtype if templates[k].values else None
    columns[k] = [jnp.asarray(v, dtype) for v in columns[k]]
  by_structure: dict[Any, list[int]] = {}
  for k in shared:
    by_structure.setdefault(templates[k].treedef, []).append(k)
  out = list(values)
  for fields in by_structure.values():
    groups = groups_of_equal([columns[k] for k in fields])
    for k in fields:
      out[k] = SharedPerLeaf.of_leaves(columns[k], groups, templates[k].treedef)
  return treedef.unflatten(out)
