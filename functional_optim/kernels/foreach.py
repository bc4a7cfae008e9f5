"""Runs an elementwise optimizer's math over packed buffers: one kernel per dtype.

The packed ("foreach") and fused implementations of
:func:`~functional_optim.kernels.elementwise.elementwise_transformation` keep
their state packed between steps (see :mod:`functional_optim.kernels.packing`):
a buffer per state field and dtype, and the per-param ``step`` (and 0-d state
such as NAdam's ``mu_product``) as one vector per dtype. A step packs the
gradients (and the params, if the math reads them), evaluates the per-param
scalars as vectors over the leaves, spreads them over rows with the static row →
leaf index, runs the math once per buffer and cuts the update back into leaves.

The result equals the per-leaf loop's: the same math on the same numbers, in the
same order. A param whose gradient is None keeps its state, as in the loop; its
rows are masked out with a static mask.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.kernels.packing import (
    Group, Packed, PackSpec, PerLeaf, pack_group, unpack_group)

#: ``(math, grad, param, buffers, scalars) -> (update, buffers)`` over one group's buffers.
GroupKernel = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def init_packed(params, *, buffers: Mapping[str, Callable | None],
                scalar_state: Mapping[str, float], step_dtype) -> tuple[PackSpec, dict]:
  """The packed per-param fields of a fresh state: ``step``, each buffer, each 0-d field."""
  spec = PackSpec.of(params)
  leaves = jax.tree.leaves(params)
  fields: dict[str, Any] = {'step': PerLeaf.full(spec, 0, step_dtype)}
  for name, make in buffers.items():
    if make is None:
      fields[name] = None
    else:
      made = [make(leaf) for leaf in leaves]
      fields[name] = Packed([pack_group(made, g) for g in spec.groups], spec)
  for name, value in scalar_state.items():
    fields[name] = PerLeaf.full(spec, value, step_dtype)
  return spec, fields


def _per_row(value: jax.Array, group: Group) -> jax.Array:
  """A per-leaf vector as a ``[rows, 1]`` column; a 0-d value stays 0-d.

  A group of one leaf (params kept packed, one big tensor) gets its 0-d scalar:
  no gather, the same program as the per-leaf loop's.
  """
  value = jnp.asarray(value)
  if value.ndim == 0:
    return value
  if len(group.leaves) == 1:
    return value[0]
  return value[group.row_leaf][:, None]


def update_packed(
    grads: list, params: list | None, state_fields: Mapping[str, Any], hp, *,
    spec: PackSpec, kept: list[str], scalar_state: list[str],
    scalars: Callable, math: Callable, kernel: GroupKernel, step_dtype,
) -> tuple[list, dict[str, Any]]:
  """One packed step over the leaves ``grads`` (None: no gradient).

  Returns the update leaves (None where the gradient was None) and the new
  packed per-param fields (``step``, the kept buffers, the 0-d fields).
  """
  steps: PerLeaf = state_fields['step']
  updates: list = [None] * spec.num_leaves
  new_steps, new_buffers = [], {k: [] for k in kept}
  new_scalar_state = {k: [] for k in scalar_state}
  for g, group in enumerate(spec.groups):
    active = np.array([grads[i] is not None for i in group.leaves])
    old_buffers = {k: state_fields[k].buffers[g] for k in kept}
    old_scalars = {k: state_fields[k].values[g] for k in scalar_state}
    if not active.any():
      new_steps.append(steps.values[g])
      for k in kept:
        new_buffers[k].append(old_buffers[k])
      for k in scalar_state:
        new_scalar_state[k].append(old_scalars[k])
      continue

    step = steps.values[g] + jnp.asarray(active, step_dtype)
    leaf_scalars = scalars(step, hp, **old_scalars)
    row_scalars = {k: _per_row(v, group) for k, v in leaf_scalars.items()}
    grad = pack_group(grads, group)
    param = None if params is None else pack_group(params, group)
    update, buffers = kernel(math, grad, param, old_buffers, row_scalars)

    if not active.all():  # Static: only the rows of params without a gradient.
      row_active = active[group.row_leaf][:, None]
      buffers = {k: jnp.where(row_active, v, old_buffers[k]) for k, v in buffers.items()}
      step = jnp.where(active, step, steps.values[g])
    new_steps.append(step)
    for k in kept:
      new_buffers[k].append(buffers[k])
    for k in scalar_state:
      value = jnp.broadcast_to(jnp.asarray(leaf_scalars[k], step_dtype), step.shape)
      new_scalar_state[k].append(jnp.where(active, value, old_scalars[k]))
    unpack_group(update, group, spec, updates)
    for k, i in enumerate(group.leaves):
      if not active[k]:
        updates[i] = None

  fields = {'step': PerLeaf(new_steps, spec)}
  fields.update({k: Packed(v, spec) for k, v in new_buffers.items()})
  fields.update({k: PerLeaf(v, spec) for k, v in new_scalar_state.items()})
  return updates, fields
