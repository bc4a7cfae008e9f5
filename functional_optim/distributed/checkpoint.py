"""Checkpoints of optimizer state with orbax-checkpoint, sharded, onto any mesh.

Each process writes its own shards, and restoring reads them onto the shardings
of a *target*: the abstract state (shapes, dtypes, shardings) that the resumed
run wants. The target also gives orbax the state's structure, so the restored
state comes back as the same NamedTuples (without one, orbax returns dicts and
lists). orbax is imported only when a checkpoint is written or read.

Replacing a checkpoint (``force=True``) is atomic: the new one is written beside
the old (``<dir>.partial``) and swapped in by two renames, the old one kept as
``<dir>.replaced`` between them; a process killed at any moment leaves either
checkpoint restorable at ``<dir>`` (restoring falls back to ``<dir>.replaced``
when a swap was cut short). Restoring checks the checkpoint's metadata against
the target first: a missing or damaged file, another structure, shape or dtype
is a ``ValueError`` that names it, and nothing is cast.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from typing import Any, Callable

import jax
import numpy as np

from functional_optim.core.shared_scalars import expand_shared, regroup_shared
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


# ----------------------------------------------------------------------------
# Writing: a new checkpoint appears whole, a replaced one is swapped atomically.

_PARTIAL, _REPLACED = '.partial', '.replaced'


def _sibling(path: pathlib.Path, suffix: str) -> pathlib.Path:
  return path.with_name(path.name + suffix)


def _sync(name: str) -> None:
  """Waits for every process (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f'functional_optim.checkpoint.{name}')


def _write_atomically(directory: str | os.PathLike, write: Callable[[str], None],
                      force: bool) -> None:
  """Runs ``write(path)`` (orbax's save, on every process) so that a process
  killed at any moment leaves a restorable checkpoint at ``directory``.

  orbax writes a new checkpoint into a temporary directory and renames it when it
  is complete, but replaces one (``force``) by deleting it first. Here the new one
  is written beside the old one and swapped in by process 0.
  """
  path = pathlib.Path(os.path.abspath(directory))
  partial, replaced = _sibling(path, _PARTIAL), _sibling(path, _REPLACED)
  if jax.process_index() == 0 and replaced.exists():
    if path.exists():  # an earlier swap completed but not its cleanup
      shutil.rmtree(replaced)
    else:  # an earlier swap was cut short between its renames: the old one goes back
      os.replace(replaced, path)
  _sync('recovered')
  if path.exists() and not force:
    raise ValueError(f'a checkpoint already exists at {path}; pass force=True to replace it')
  if not path.exists():
    write(str(path))
    return
  write(str(partial))
  if jax.process_index() == 0:
    os.replace(path, replaced)
    os.replace(partial, path)
    shutil.rmtree(replaced)
  _sync('swapped')


def save_state(directory: str | os.PathLike, state: PyTree, *, force: bool = False) -> None:
  """Writes ``state`` (any pytree of arrays, sharded or not) to ``directory``.

  Blocks until the checkpoint is complete. ``force`` replaces an existing one,
  atomically: until the new checkpoint is complete the old one is what
  :func:`restore_state` reads.

  Raises:
    ValueError: a checkpoint exists at ``directory`` and ``force`` is False.

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

  state = expand_shared(state)  # per-param steps as trees: whatever their grouping

  def write(path: str) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, state, force=True)
    checkpointer.wait_until_finished()
  _write_atomically(directory, write, force)


# ----------------------------------------------------------------------------
# Reading: the checkpoint's metadata is checked against the target first.

def _checkpoint_at(directory: str | os.PathLike) -> pathlib.Path:
  """Where the checkpoint saved at ``directory`` is (see :func:`_write_atomically`)."""
  path = pathlib.Path(os.path.abspath(directory))
  if path.exists():
    return path
  if _sibling(path, _REPLACED).exists():  # a replacing save was killed mid-swap
    return _sibling(path, _REPLACED)
  raise FileNotFoundError(f'no checkpoint at {path}')


def _damaged(root: pathlib.Path, file: pathlib.Path | str, why: str) -> ValueError:
  name = file.relative_to(root) if isinstance(file, pathlib.Path) else file
  return ValueError(f'the checkpoint at {root} is damaged: {name} {why}')


def _read_json(file: pathlib.Path, root: pathlib.Path) -> Any:
  try:
    return json.loads(file.read_bytes())
  except FileNotFoundError:
    raise _damaged(root, file, 'is missing') from None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise _damaged(root, file, f'is not valid JSON ({e})') from e


def _saved_arrays(item: pathlib.Path, root: pathlib.Path) -> dict[tuple, Any]:
  """The metadata (shape, dtype) of each array saved under ``item``, by path.

  The JSON files orbax reads are parsed here first, so that damage to one is
  reported by name rather than as a decoding or pytree error from inside orbax.
  """
  import orbax.checkpoint as ocp
  from etils import epath
  _read_json(item / '_METADATA', root)
  for file in sorted((item / 'array_metadatas').glob('*')):
    _read_json(file, root)
  tree = _read_arrays(lambda: ocp.StandardCheckpointHandler().metadata(epath.Path(item)).tree,
                      root)
  return {k: v for k, v in ocp.tree.to_flat_dict(tree).items() if hasattr(v, 'shape')}


def _dotted(key: tuple) -> str:
  return '.'.join(str(k) for k in key)


def _check_matches(saved: dict[tuple, Any], target: PyTree, root: pathlib.Path) -> None:
  """Raises unless the checkpoint holds exactly the target's arrays, with its
  shapes and dtypes (a restore would otherwise cast: an exp_avg of 0.19 read
  into an int32 target is 0)."""
  import orbax.checkpoint as ocp
  wanted = {k: v for k, v in ocp.tree.to_flat_dict(target).items() if hasattr(v, 'shape')}
  missing = sorted(map(_dotted, set(wanted) - set(saved)))
  unexpected = sorted(map(_dotted, set(saved) - set(wanted)))
  if missing or unexpected:
    raise ValueError(f'the checkpoint at {root} and the target do not match: the target '
                     f'has {missing} that the checkpoint lacks, the checkpoint has '
                     f'{unexpected} that the target lacks')
  for key, want in wanted.items():
    got = saved[key]
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(f'the checkpoint at {root} and the target do not match: '
                       f'{_dotted(key)} has shape {tuple(got.shape)} there and '
                       f'{tuple(want.shape)} in the target')
    if np.dtype(got.dtype) != np.dtype(want.dtype):
      raise ValueError(f'the checkpoint at {root} holds {_dotted(key)} as {np.dtype(got.dtype)} '
                       f'and the target as {np.dtype(want.dtype)}: restoring would cast it; '
                       f'restore onto a {np.dtype(got.dtype)} target and cast the result '
                       f'if a cast is what you want')


def _read_arrays(read: Callable[[], Any], root: pathlib.Path) -> Any:
  """``read()`` (of orbax's metadata or arrays), with tensorstore's errors about a
  damaged file naming the file."""
  try:
    return read()
  except ValueError as e:  # tensorstore's DATA_LOSS, NOT_FOUND, OUT_OF_RANGE
    files = re.findall(r'local file "([^"]+)"', str(e))
    file = pathlib.Path(files[-1]) if files else None
    if file is not None and file.is_dir() and not (file / 'manifest.ocdbt').exists():
      raise _damaged(root, file / 'manifest.ocdbt', 'is missing') from e
    named = (file.relative_to(root) if file is not None and file.is_relative_to(root)
             else 'its array data (manifest.ocdbt, d/)')
    raise _damaged(root, str(named), f'could not be read: {str(e).splitlines()[0]}') from e


def restore_state(directory: str | os.PathLike, target: PyTree) -> PyTree:
  """Reads a state written by :func:`save_state` onto ``target``'s structure and shardings.

  Args:
    directory: where :func:`save_state` wrote it.
    target: a state, or its abstract form (:func:`abstract_state`), with the
      structure and the shardings to restore onto; the mesh may differ from the
      one that saved it.

  Raises:
    FileNotFoundError: no checkpoint at ``directory``.
    ValueError: the checkpoint does not match the target's structure, shapes or
      dtypes (nothing is cast), or one of its files is damaged (named).

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
  root = _checkpoint_at(directory)
  like = _as_target(target)
  target = expand_shared(like)
  _check_matches(_saved_arrays(root, root), target, root)
  restored = _read_arrays(lambda: ocp.StandardCheckpointer().restore(str(root), target), root)
  return regroup_shared(restored, like)


# ----------------------------------------------------------------------------
# The facade: its state and its param groups' settings.

def _group_hyperparams(group: dict[str, Any]) -> dict[str, Any]:
  """The JSON-able part of a param group: everything but its arrays."""
  def plain(value):
    if isinstance(value, (tuple, list)):
      return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
      return np.asarray(value).item()
    return value
  return {k: plain(v) for k, v in group.items() if k != 'params'}


def _group_states(optimizer: Any) -> list:
  states = optimizer.opt_state
  return [states] if len(optimizer.param_groups) == 1 else list(states)


def save_optimizer(directory: str | os.PathLike, optimizer: Any, *, force: bool = False) -> None:
  """Writes a facade optimizer's state (sharded as it is) and its param groups' settings.

  Together with the params (checkpointed by the model's own code), this is what
  :func:`restore_optimizer` needs to resume training exactly. ``force`` replaces
  an existing checkpoint atomically (see :func:`save_state`).

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
  states = [expand_shared(state) for state in _group_states(optimizer)]
  groups = [_group_hyperparams(group) for group in optimizer.param_groups]

  def write(path: str) -> None:
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    checkpointer.save(path, ocp.args.Composite(state=ocp.args.StandardSave(states),
                                               param_groups=ocp.args.JsonSave(groups)),
                      force=True)
  _write_atomically(directory, write, force)


def _saved_group(g: int, saved: Any, live: dict, root: pathlib.Path) -> dict[str, Any]:
  """Saved group ``g`` with the live group's tuples as tuples (JSON has lists).

  Raises:
    ValueError: it is not a group, or it names other params than the live one.
  """
  if not isinstance(saved, dict):
    raise _damaged(root, 'param_groups/metadata', f'holds {saved!r} as group {g}')
  saved_names, live_names = saved.get('param_names'), live.get('param_names')
  if saved_names is not None and live_names is not None and set(saved_names) != set(live_names):
    raise ValueError(
        f'the checkpoint at {root} is of other params: its param group {g} has '
        f'{sorted(set(saved_names) - set(live_names))} that the optimizer lacks, the '
        f'optimizer {sorted(set(live_names) - set(saved_names))} that it lacks')
  return {k: tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v
          for k, v in saved.items()}


def restore_optimizer(directory: str | os.PathLike, optimizer: Any) -> None:
  """Loads what :func:`save_optimizer` wrote into ``optimizer``, onto its current
  shardings (build it over the params of the resumed run, on any mesh).

  All or nothing, with ``load_state_dict``'s checks: the saved settings are
  checked as the constructor checks them (torch's errors), options an older save
  lacks take their defaults, the optimizer keeps its own class's fixed options
  (an AdamW stays AdamW) and param names, and the state must match the one those
  settings make, shapes and dtypes included.

  Raises:
    FileNotFoundError: no checkpoint at ``directory``.
    ValueError: another number of param groups, other param names, a state that
      does not match (shapes and dtypes included), or a damaged file (named).
    TypeError, ValueError: settings the constructor would refuse (its errors).

    The optimizer is then left as it was.

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
  root = _checkpoint_at(directory)
  saved_groups = _read_json(root / 'param_groups' / 'metadata', root)
  if not isinstance(saved_groups, list):
    raise _damaged(root, 'param_groups/metadata', f'holds {type(saved_groups).__name__}, '
                   'not a list of param groups')
  if len(saved_groups) != len(optimizer.param_groups):
    raise ValueError(f'the checkpoint at {root} has {len(saved_groups)} param groups, the '
                     f'optimizer {len(optimizer.param_groups)}')
  saved_groups = [_saved_group(g, saved, live, root)
                  for g, (saved, live) in enumerate(zip(saved_groups, optimizer.param_groups))]

  def read_states(targets: list) -> list:
    expanded = [expand_shared(target) for target in targets]
    _check_matches(_saved_arrays(root / 'state', root), expanded, root)
    restored = _read_arrays(lambda: ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
        str(root), ocp.args.Composite(state=ocp.args.StandardRestore(expanded))), root)
    return [regroup_shared(s, t) for s, t in zip(restored['state'], targets)]

  try:
    optimizer.load_param_groups(saved_groups, read_states)
  except KeyError as e:  # a setting of this optimizer's that no saved group has
    raise ValueError(f'the checkpoint at {root} does not fit this '
                     f'{type(optimizer).__name__}: {e.args[0]}') from e
