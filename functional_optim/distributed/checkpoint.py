"""Checkpoints of optimizer state with orbax-checkpoint, sharded, onto any mesh.

Each process writes its own shards, and restoring reads them onto the shardings
of a *target*: the abstract state (shapes, dtypes, shardings) that the resumed
run wants. The target also gives orbax the state's structure, so the restored
state comes back as the same NamedTuples (without one, orbax returns dicts and
lists). orbax is imported only when a checkpoint is written or read.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from functional_optim.core.transform import GradientTransformation
from functional_optim.distributed.sharding import _is_sharded, state_shardings

PyTree = Any


def abstract_state(tx: GradientTransformation, params: PyTree,
                   shardings: PyTree | None = None) -> PyTree:
  """The shape, dtype and sharding of each leaf of ``tx.init(params)``, uncomputed.

  ``shardings`` defaults to :func:`state_shardings` of the params when they are
  sharded (pass :func:`zero1_shardings`' for a ZeRO-1 run), else to none.

  Example:
    >>> import jax.numpy as jnp, functional_optim as fo
    >>> target = fo.distributed.abstract_state(fo.adam(lr=1e-3), {'w': jnp.zeros(3)})
    >>> target.exp_avg['w'].shape
    (3,)
  """
  state = jax.eval_shape(tx.init, params)
  if shardings is None and _is_sharded(params):
    shardings = state_shardings(tx, params)
  if shardings is None:
    return state
  return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      state, shardings)


def _as_target(target: PyTree) -> PyTree:
  """Concrete arrays stand for their own shape, dtype and sharding."""
  def abstract(leaf):
    if isinstance(leaf, jax.Array):
      return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf
  return jax.tree.map(abstract, target)


def save_state(directory: str | os.PathLike, state: PyTree, *, force: bool = False) -> None:
  """Writes ``state`` (any pytree of arrays, sharded or not) to ``directory``.

  Blocks until the checkpoint is complete. ``force`` overwrites an existing one.

  Example:
    >>> import tempfile, os, jax.numpy as jnp, functional_optim as fo
    >>> tx = fo.adam(lr=1e-3)
    >>> state = tx.init({'w': jnp.ones(3)})
    >>> path = os.path.join(tempfile.mkdtemp(), 'opt')
    >>> fo.distributed.save_state(path, state)
    >>> restored = fo.distributed.restore_state(path, state)
    >>> type(restored).__name__, restored.exp_avg['w'].shape
    ('AdamState', (3,))
  """
  import orbax.checkpoint as ocp
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), state, force=force)
  checkpointer.wait_until_finished()


def restore_state(directory: str | os.PathLike, target: PyTree) -> PyTree:
  """Reads a state written by :func:`save_state` onto ``target``'s structure and shardings.

  Args:
    directory: where :func:`save_state` wrote it.
    target: a state, or its abstract form (:func:`abstract_state`), with the
      structure and the shardings to restore onto; the mesh may differ from the
      one that saved it.

  Raises:
    ValueError: the checkpoint does not match the target's structure or shapes.

  Example: resume on params placed as the new run wants them.

    >>> import tempfile, os, jax.numpy as jnp, functional_optim as fo
    >>> tx = fo.sgd(lr=0.1, momentum=0.9)
    >>> params = {'w': jnp.ones(3)}
    >>> path = os.path.join(tempfile.mkdtemp(), 'opt')
    >>> fo.distributed.save_state(path, tx.init(params))
    >>> state = fo.distributed.restore_state(path, fo.distributed.abstract_state(tx, params))
    >>> type(state).__name__, state.momentum_buffer['w'].shape
    ('SGDState', (3,))
  """
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(os.path.abspath(directory), _as_target(target))


def _group_hyperparams(group: dict[str, Any]) -> dict[str, Any]:
  """The JSON-able part of a param group: everything but its arrays."""
  def plain(value):
    if isinstance(value, (tuple, list)):
      return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
      return np.asarray(value).item()
    return value
  return {k: plain(v) for k, v in group.items() if k != 'params'}


def save_optimizer(directory: str | os.PathLike, optimizer: Any, *, force: bool = False) -> None:
  """Writes a facade optimizer's state (sharded as it is) and its param groups' settings.

  Together with the params (checkpointed by the model's own code), this is what
  :func:`restore_optimizer` needs to resume training exactly.

  Example:
    >>> import tempfile, os, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim import optim
    >>> opt = optim.Adam({'w': jnp.ones(3)}, lr=1e-3)
    >>> opt.step({'w': jnp.ones(3)})
    >>> path = os.path.join(tempfile.mkdtemp(), 'opt')
    >>> fo.distributed.save_optimizer(path, opt)
    >>> resumed = optim.Adam({'w': opt.params['w']}, lr=0.5)
    >>> fo.distributed.restore_optimizer(path, resumed)
    >>> resumed.param_groups[0]['lr'], int(resumed.state[0]['step'])
    (0.001, 1)
  """
  import orbax.checkpoint as ocp
  groups = [_group_hyperparams(group) for group in optimizer.param_groups]
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(os.path.abspath(directory), ocp.args.Composite(
      state=ocp.args.StandardSave(list(optimizer._states)),
      param_groups=ocp.args.JsonSave(groups)), force=force)


def restore_optimizer(directory: str | os.PathLike, optimizer: Any) -> None:
  """Loads what :func:`save_optimizer` wrote into ``optimizer``, onto its current
  shardings (build it over the params of the resumed run, on any mesh).

  Raises:
    ValueError: a different number of param groups, or a state that does not
      match the optimizer's (the optimizer is then left as it was).

  Example:
    >>> import tempfile, os, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.ones(2)}, lr=0.1, momentum=0.9)
    >>> opt.step({'w': jnp.ones(2)})
    >>> path = os.path.join(tempfile.mkdtemp(), 'opt')
    >>> fo.distributed.save_optimizer(path, opt)
    >>> resumed = optim.SGD({'w': opt.params['w']}, lr=0.1, momentum=0.9)
    >>> fo.distributed.restore_optimizer(path, resumed)
    >>> resumed.state[0]['momentum_buffer']
    array([1., 1.], dtype=float32)
  """
  import orbax.checkpoint as ocp
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  restored = checkpointer.restore(os.path.abspath(directory), ocp.args.Composite(
      state=ocp.args.StandardRestore(_as_target(list(optimizer._states))),
      param_groups=ocp.args.JsonRestore()))
  groups = restored['param_groups']
  if len(groups) != len(optimizer.param_groups):
    raise ValueError(f'the checkpoint has {len(groups)} param groups, the optimizer '
                     f'{len(optimizer.param_groups)}')
  optimizer._states = list(restored['state'])
  for live, saved in zip(optimizer.param_groups, groups):
    for key, value in saved.items():
      live[key] = tuple(value) if isinstance(live.get(key), tuple) else value
