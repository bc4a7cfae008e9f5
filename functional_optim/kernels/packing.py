"""Lays the leaves of a params tree out in flat buffers, one per dtype.

A packed update runs an optimizer's math once over a buffer that holds every
leaf of one dtype, instead of once per leaf: one kernel, however many leaves.
The layout is a :class:`PackSpec`, computed once from the tree's structure,
shapes and dtypes, and static under ``jit``:

* leaves are grouped by storage dtype (a complex leaf joins the group of its
  real dtype, as real/imaginary pairs: torch's ``view_as_real``);
* each buffer is a ``[rows, LANES]`` array; each leaf starts on a row of its
  own and is padded with zeros to whole rows, so a per-leaf scalar (a bias
  correction from the leaf's own ``step``) becomes a per-row scalar through a
  static row → leaf index, and a block of rows is the natural tile of a kernel;
* the row count is rounded up to a multiple of ``ROW_ALIGN``.

Zero padding is inert: every elementwise optimizer maps a zero gradient, zero
param and zero state to a zero update, and the padding is never read back.

Two pytrees carry packed data: :class:`Packed` (the buffers: a packed state
buffer, or params kept packed by the user) and :class:`PerLeaf` (one 0-d value
per leaf, per group: the per-param ``step``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_optim.core.tree import is_none, without_variables
from functional_optim.core.shared_scalars import SharedPerLeaf, regroup_shared

PyTree = Any

#: Elements per row: the lane width of GPU and TPU tiles.
LANES = 128
#: Buffers have a multiple of this many rows (a sublane tile; a GPU block, which
#: must divide the rows, has at least this many). Kept small: a single leaf whose
#: size is a multiple of ``ROW_ALIGN * LANES`` packs as a reshape, without a copy.
ROW_ALIGN = 8


def _real_dtype(dtype) -> np.dtype:
  return np.dtype(jnp.finfo(dtype).dtype) if jnp.issubdtype(dtype, jnp.complexfloating) \
      else np.dtype(dtype)


@dataclasses.dataclass(frozen=True)
class Group:
  """The leaves of one buffer.

  Attributes:
    dtype: the buffer's (real) dtype.
    leaves: indices of the leaves in the buffer, in tree order.
    sizes: real elements of each leaf (twice its size for a complex leaf).
    row_offsets: the row each leaf starts on.
    rows: rows of the buffer (a multiple of ``ROW_ALIGN``).
  """
  dtype: np.dtype
  leaves: tuple[int, ...]
  sizes: tuple[int, ...]
  row_offsets: tuple[int, ...]
  rows: int

  @functools.cached_property
  def row_leaf(self) -> np.ndarray:
    """For each row, the position in ``leaves`` of the leaf it holds (padding rows: the last)."""
    counts = np.diff([*self.row_offsets, self.rows])
    return np.repeat(np.arange(len(self.leaves), dtype=np.int32), counts)


@dataclasses.dataclass(frozen=True)
class PackSpec:
  """Where each leaf of a tree lives in the packed buffers (static, hashable).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.kernels.packing import PackSpec
    >>> spec = PackSpec.of({'w': jnp.zeros((3, 100)), 'b': jnp.zeros(3),
    ...                     'h': jnp.zeros(2, jnp.bfloat16)})
    >>> [(str(g.dtype), g.leaves, g.row_offsets, g.rows) for g in spec.groups]
    [('float32', (0, 2), (0, 1), 8), ('bfloat16', (1,), (0,), 8)]
  """
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  dtypes: tuple[np.dtype, ...]
  groups: tuple[Group, ...]

  @classmethod
  def of(cls, tree: PyTree) -> 'PackSpec':
    """The layout of ``tree``'s leaves (arrays or ``ShapeDtypeStruct``; no Nones;
    flax ``nnx.Variable`` s count as their values)."""
    leaves, treedef = jax.tree.flatten(without_variables(tree))
    shapes = tuple(tuple(np.shape(x)) for x in leaves)
    dtypes = tuple(np.dtype(x.dtype) for x in leaves)
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, dtype in enumerate(dtypes):
      by_dtype.setdefault(_real_dtype(dtype), []).append(i)
    groups = []
    for dtype, members in by_dtype.items():
      sizes = tuple(math.prod(shapes[i]) * (2 if jnp.issubdtype(dtypes[i], jnp.complexfloating)
                                            else 1) for i in members)
      rows_each = [-(-size // LANES) for size in sizes]
      offsets = tuple(int(o) for o in np.cumsum([0, *rows_each[:-1]]))
      rows = -(-sum(rows_each) // ROW_ALIGN) * ROW_ALIGN
      groups.append(Group(dtype, tuple(members), sizes, offsets, max(rows, ROW_ALIGN)))
    return cls(treedef, shapes, dtypes, tuple(groups))

  @property
  def num_leaves(self) -> int:
    return len(self.shapes)

  def abstract_tree(self) -> PyTree:
    """The tree this spec lays out, as ``ShapeDtypeStruct`` leaves."""
    return self.treedef.unflatten(
        [jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes)])


def _flat_real(x: jax.Array) -> jax.Array:
  if jnp.iscomplexobj(x):
    x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
  return x.reshape(-1)


def pack_group(leaves: Sequence[jax.Array | None], group: Group,
               dtype=None) -> jax.Array:
  """One group's ``[rows, LANES]`` buffer from the tree's leaves (None: zeros).

  ``leaves`` are all the tree's leaves; the group takes its own. A group of one
  leaf that fills whole rows is a reshape: no copy.
  """
  dtype = group.dtype if dtype is None else dtype
  parts, used = [], 0
  for i, size in zip(group.leaves, group.sizes):
    padded = -(-size // LANES) * LANES
    leaf = leaves[i]
    flat = (jnp.zeros([size], dtype) if leaf is None
            else _flat_real(jnp.asarray(leaf)).astype(dtype))
    parts.append(jnp.pad(flat, (0, padded - size)) if padded != size else flat)
    used += padded
  if used != group.rows * LANES:
    parts.append(jnp.zeros([group.rows * LANES - used], dtype))
  flat = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
  return flat.reshape(group.rows, LANES)


def unpack_group(buffer: jax.Array, group: Group, spec: PackSpec,
                 out: list, dtype=None) -> None:
  """Writes into ``out`` (indexed by leaf) each leaf of ``group`` cut from ``buffer``.

  A leaf comes back in its own dtype (or ``dtype``, for complex: the matching
  complex dtype).
  """
  for i, size, row in zip(group.leaves, group.sizes, group.row_offsets):
    rows = -(-size // LANES)
    block = buffer if (row == 0 and rows == group.rows) else \
        lax.slice_in_dim(buffer, row, row + rows, axis=0)
    flat = block.reshape(-1)
    if flat.shape[0] != size:
      flat = flat[:size]
    target = spec.dtypes[i]
    if jnp.issubdtype(target, jnp.complexfloating):
      pairs = flat.reshape(*spec.shapes[i], 2)
      leaf = lax.complex(pairs[..., 0], pairs[..., 1]).astype(target)
    else:
      leaf = flat.reshape(spec.shapes[i]).astype(target if dtype is None else dtype)
    out[i] = leaf


def pack_leaves(leaves: Sequence[jax.Array | None], spec: PackSpec) -> tuple[jax.Array, ...]:
  """Every group's buffer (see :func:`pack_group`)."""
  return tuple(pack_group(leaves, g) for g in spec.groups)


def unpack_leaves(buffers: Sequence[jax.Array], spec: PackSpec) -> list[jax.Array]:
  """The tree's leaves, in order, cut from ``buffers``."""
  out: list = [None] * spec.num_leaves
  for buffer, group in zip(buffers, spec.groups):
    unpack_group(buffer, group, spec, out)
  return out


# Compiled once per layout: run eagerly, the per-leaf pads and slices would each
# compile for their own shape (minutes for thousands of leaves). Inside a jit
# they inline.
_pack_compiled = jax.jit(pack_leaves, static_argnums=1)
_unpack_compiled = jax.jit(unpack_leaves, static_argnums=1)


@jax.tree_util.register_pytree_node_class
class Packed:
  r"""A tree's leaves laid out in ``[rows, LANES]`` buffers, one per dtype.

  A pytree whose leaves are the buffers (its :class:`PackSpec` is static), so it
  goes through ``jit``, ``grad`` and optimizers like any params tree: keeping
  params packed makes an optimizer step a handful of large kernels instead of one
  per leaf. :meth:`unpack` gives the tree back (inside a loss, under ``grad``,
  the gradient flows to the buffers). A complex leaf is stored as real pairs, so
  its gradient comes out as :math:`\partial L/\partial x + i\,\partial L/\partial y`,
  torch's convention and the one the optimizers take (``jax.grad`` of a complex
  leaf gives the conjugate).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> params = fo.kernels.pack({'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)})
    >>> [b.shape for b in params.buffers]
    [(8, 128)]
    >>> loss = lambda p: jnp.sum(p.unpack()['w'] ** 2)
    >>> grads = jax.grad(loss)(params)  # a Packed too
    >>> grads.unpack()['w']
    Array([[2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
  """

  def __init__(self, buffers: Sequence[jax.Array], spec: PackSpec):
    self.buffers = tuple(buffers)
    self.spec = spec

  @classmethod
  def pack(cls, tree: PyTree) -> 'Packed':
    spec = PackSpec.of(tree)
    return cls(_pack_compiled(tuple(jax.tree.leaves(tree)), spec), spec)

  def unpack(self) -> PyTree:
    return self.spec.treedef.unflatten(_unpack_compiled(self.buffers, self.spec))

  def tree_flatten(self):
    return self.buffers, self.spec

  @classmethod
  def tree_unflatten(cls, spec, buffers):
    return cls(buffers, spec)

  def __repr__(self) -> str:
    shapes = ', '.join(f'{b.dtype}{list(b.shape)}' if hasattr(b, 'shape') else repr(b)
                       for b in self.buffers)
    return f'Packed({self.spec.num_leaves} leaves in {shapes})'


@jax.tree_util.register_pytree_node_class
class PerLeaf:
  """One 0-d value per leaf of a packed tree: a vector per group (static spec).

  The packed form of per-param scalars such as torch's ``step``.
  :meth:`unpack` gives the tree of 0-d arrays that the per-leaf layout keeps.
  """

  def __init__(self, values: Sequence[jax.Array], spec: PackSpec):
    self.values = tuple(values)
    self.spec = spec

  @classmethod
  def full(cls, spec: PackSpec, value, dtype) -> 'PerLeaf':
    return cls([jnp.full([len(g.leaves)], value, dtype) for g in spec.groups], spec)

  @classmethod
  def pack(cls, tree: PyTree, spec: PackSpec) -> 'PerLeaf':
    leaves = spec.treedef.flatten_up_to(tree)
    return cls([jnp.stack([jnp.asarray(leaves[i]) for i in g.leaves]) for g in spec.groups],
               spec)

  def unpack(self) -> PyTree:
    out: list = [None] * self.spec.num_leaves
    for values, group in zip(self.values, self.spec.groups):
      for k, i in enumerate(group.leaves):
        out[i] = values[k]
    return self.spec.treedef.unflatten(out)

  def tree_flatten(self):
    return self.values, self.spec

  @classmethod
  def tree_unflatten(cls, spec, values):
    return cls(values, spec)

  def __repr__(self) -> str:
    return f'PerLeaf({list(self.values)})'


def pack(tree: PyTree) -> Packed:
  """``tree``'s leaves laid out in flat per-dtype buffers: see :class:`Packed`."""
  return Packed.pack(tree)


def _is_layout(x: Any) -> bool:
  return isinstance(x, (Packed, PerLeaf, SharedPerLeaf))


def unpack_state(state: Any) -> Any:
  """An optimizer state with every field as a tree that mirrors the params.

  Every :class:`Packed`, :class:`PerLeaf` and
  :class:`~functional_optim.core.shared_scalars.SharedPerLeaf` inside ``state``
  becomes the tree of its values; anything else is kept. A per-leaf transformation
  (``implementation='loop'``) takes the result as its state. The inverse is
  :func:`pack_state`.
  """
  def plain(x):
    return x.tree() if isinstance(x, SharedPerLeaf) else x.unpack()
  return jax.tree.map(lambda x: plain(x) if _is_layout(x) else x, state, is_leaf=_is_layout)


def pack_state(state: Any, like: Any) -> Any:
  """``state`` (fields as trees that mirror the params) laid out as ``like`` is.

  ``like`` is a state of the same optimizer: packed, or per-leaf with its shared
  per-param scalars, which are grouped by ``state``'s values (leaves whose 0-d
  fields are all equal share them).
  """
  def lay_out(template, value):
    if isinstance(template, Packed):
      leaves = template.spec.treedef.flatten_up_to(value)
      return Packed(pack_leaves(leaves, template.spec), template.spec)
    if isinstance(template, PerLeaf):
      return PerLeaf.pack(value, template.spec)
    return value
  is_template = lambda x: isinstance(x, (Packed, PerLeaf, SharedPerLeaf)) or is_none(x)
  leaves_like, treedef = jax.tree.flatten(like, is_leaf=is_template)
  values = treedef.flatten_up_to(state)
  packed = treedef.unflatten([lay_out(t, v) for t, v in zip(leaves_like, values)])
  return regroup_shared(packed, like)


def edit_per_leaf(state: Any, edit: Callable[[Any], Any]) -> Any:
  """``state`` with ``edit`` applied to its per-leaf view, in ``state``'s layout.

  ``edit`` gets the state with every field a tree that mirrors the params
  (:func:`unpack_state`) and returns one like it; the result is laid out as
  ``state`` was (packed, or per-leaf with shared per-param scalars): what loading
  torch's per-param state or carrying buffers across a layout change needs,
  without knowing the layout.
  """
  return pack_state(edit(unpack_state(state)), state)
