"""Optimizer state that follows its params' sharding, and ZeRO-1 state sharding.

Under ``jax.jit`` a buffer made by ``zeros_like(param)`` has no data dependence on
the param, so with a mesh of ``Auto`` axes XLA gives it no sharding: a jitted
``init`` of sharded params returns *replicated* state, a full copy on every
device. (With ``Explicit`` axes, the default of ``jax.make_mesh``, sharding is
part of the type and ``init`` already follows the params.) :func:`state_shardings`
derives each state leaf's sharding from the params' by JAX's own typing rules,
evaluated on an explicit copy of the mesh; pass it as ``out_shardings`` of
``init`` and as in/out shardings of the train step.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from functional_optim.core.transform import GradientTransformation

PyTree = Any


def _mesh_of(params: PyTree) -> Mesh:
  meshes = {leaf.sharding.mesh for leaf in jax.tree.leaves(params)
            if isinstance(getattr(leaf, 'sharding', None), NamedSharding)}
  if len(meshes) != 1:
    raise ValueError('state_shardings needs params placed with NamedShardings on one '
                     f'mesh (jax.device_put(params, shardings)); found {len(meshes)} meshes')
  mesh, = meshes
  return mesh


def _spec(leaf) -> P:
  sharding = getattr(leaf, 'sharding', None)
  return sharding.spec if isinstance(sharding, NamedSharding) else P()


def state_shardings(tx: GradientTransformation, params: PyTree) -> PyTree:
  """The sharding of each leaf of ``tx.init(params)``, following the params'.

  A buffer shaped like its param (Adam's ``exp_avg``, SGD's ``momentum_buffer``)
  gets the param's sharding, a factored one (Adafactor's row and column
  statistics) what JAX's sharding rules give it, scalars (``step``, ``count``,
  hyperparameters) are replicated.

  Args:
    tx: the transformation.
    params: arrays (or ``jax.ShapeDtypeStruct`` values), each with a ``NamedSharding`` on one
      mesh.

  Returns:
    A tree with the structure of the state, a ``NamedSharding`` at each leaf.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> import functional_optim as fo
    >>> mesh = jax.make_mesh((1,), ('data',))
    >>> params = {'w': jax.device_put(jnp.zeros((4, 2)), NamedSharding(mesh, P('data')))}
    >>> shardings = fo.distributed.state_shardings(fo.adam(lr=1e-3), params)
    >>> shardings.exp_avg['w'].spec, shardings.count.spec
    (P('data', None), P())
  """
  mesh = _mesh_of(params)
  explicit = Mesh(mesh.devices, mesh.axis_names,
                  axis_types=(AxisType.Explicit,) * len(mesh.axis_names))
  abstract = jax.tree.map(
      lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=NamedSharding(explicit, _spec(p))),
      params)
  with jax.set_mesh(explicit):
    state = jax.eval_shape(tx.init, abstract)
  return jax.tree.map(lambda s: NamedSharding(mesh, _spec(s)), state)


def _add_axis(spec: P, shape: tuple[int, ...], axis: str, sizes: dict[str, int]) -> P:
  """``spec`` with ``axis`` added to the first dimension that it divides evenly."""
  entries = list(spec) + [None] * (len(shape) - len(spec))
  as_tuple = lambda e: () if e is None else (e if isinstance(e, tuple) else (e,))
  if any(axis in as_tuple(e) for e in entries):
    return spec
  for d, (entry, length) in enumerate(zip(entries, shape)):
    existing = as_tuple(entry)
    if length % (sizes[axis] * math.prod(sizes[a] for a in existing)) == 0:
      entries[d] = (*existing, axis) if existing else axis
      return P(*entries)
  return spec


def zero1_shardings(state_shardings_tree: PyTree, state: PyTree, axis: str = 'data') -> PyTree:
  """ZeRO-1: shard every optimizer-state buffer over the data-parallel ``axis`` too.

  Params stay as they are (replicated over ``axis``, as data parallelism keeps
  them); each state leaf with a dimension that ``axis`` divides is split over it,
  so each device holds ``1/mesh.shape[axis]`` of the state. Inside a jitted step
  with these shardings, XLA updates each shard where it lives and all-gathers the
  new params. Scalars, and buffers no dimension of which divides, stay as they are.

  Args:
    state_shardings_tree: the state's shardings (e.g. from :func:`state_shardings`).
    state: the state or its abstract shape (``jax.eval_shape(tx.init, params)``),
      for the leaves' shapes.
    axis: the mesh axis to shard over.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> import functional_optim as fo
    >>> mesh = jax.make_mesh((1,), ('data',))
    >>> params = {'w': jax.device_put(jnp.zeros((4, 2)), NamedSharding(mesh, P()))}
    >>> tx = fo.adam(lr=1e-3)
    >>> zero = fo.distributed.zero1_shardings(fo.distributed.state_shardings(tx, params),
    ...                                       jax.eval_shape(tx.init, params))
    >>> zero.exp_avg['w'].spec
    P('data', None)
  """
  def shard(sharding, leaf):
    if not isinstance(sharding, NamedSharding) or not getattr(leaf, 'shape', ()):
      return sharding
    return NamedSharding(sharding.mesh,
                         _add_axis(sharding.spec, leaf.shape, axis, dict(sharding.mesh.shape)))
  return jax.tree.map(shard, state_shardings_tree, state)


def _is_sharded(params: PyTree) -> bool:
  return any(isinstance(getattr(leaf, 'sharding', None), NamedSharding)
             and len(leaf.sharding.device_set) > 1 for leaf in jax.tree.leaves(params))


def init_sharded(tx: GradientTransformation, params: PyTree) -> PyTree:
  """``jax.jit(tx.init)(params)``, with the state sharded like ``params``.

  Params placed on one device take the plain jitted ``init``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> import functional_optim as fo
    >>> mesh = jax.make_mesh((1,), ('data',))
    >>> params = {'w': jax.device_put(jnp.zeros((4, 2)), NamedSharding(mesh, P('data')))}
    >>> state = fo.distributed.init_sharded(fo.sgd(lr=0.1, momentum=0.9), params)
    >>> state.momentum_buffer['w'].shape
    (4, 2)
  """
  if not _is_sharded(params):
    return jax.jit(tx.init)(params)
  return jax.jit(tx.init, out_shardings=state_shardings(tx, params))(params)
