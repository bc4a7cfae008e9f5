"""torch.optim's per-param state against ours: one converter per torch class.

torch keeps, for each param, a dict of tensors under its keys (``step``,
``exp_avg``, ...); our states keep one field per key, each a tree that mirrors
the params. A converter (:class:`TorchStateFormat`) reads one param group's
entries out of a state and writes them in, with torch's rules for its class:
which keys exist for which options, when an entry appears (at the first step, or
at construction for Adagrad), and what types it holds (SparseAdam's ``step`` is a
Python int; LBFGS keeps everything under its first param, in Python lists).

The facade's ``state_dict``/``load_state_dict`` and
:func:`functional_optim.interop.torch.state_from_torch` /
:func:`~functional_optim.interop.torch.state_to_torch` use the same converters.
Everything here is numpy: torch is not imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim import optimizers
from functional_optim.kernels.packing import edit_per_leaf, unpack_state

PyTree = Any
Entry = dict[str, Any]

#: State fields that are ours alone: torch keeps the step count per param and the
#: hyperparameters in its param groups.
OURS_ONLY = ('count', 'hyperparams')


def to_numpy(value) -> np.ndarray:
  """A copy of a torch tensor, jax array, numpy array or number as a numpy array.

  Always a copy: ``tensor.numpy()`` shares torch's memory (torch updates its state
  in place). Works without importing torch.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.interop.torch_state import to_numpy
    >>> to_numpy(jnp.ones(2, jnp.bfloat16)).dtype
    dtype(bfloat16)
  """
  if hasattr(value, 'detach') and hasattr(value, 'cpu'):  # a torch.Tensor
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      return np.asarray(value.float().numpy()).astype(jnp.bfloat16)
    return value.numpy().copy()
  return np.array(value)


def casts_to(source, target) -> bool:
  """Whether a loaded state value of dtype ``source`` may be stored as ``target``.

  torch casts loaded floating-point state to the param's dtype, so real numbers
  go into any buffer; complex only into a complex one (the cast to real would
  drop the imaginary part), and nothing that is not a number.

  Example:
    >>> import numpy as np
    >>> from functional_optim.interop.torch_state import casts_to
    >>> casts_to(np.float64, np.float32), casts_to(np.complex64, np.float32)
    (True, False)
  """
  kinds: list[Any] = [jnp.bool_, jnp.integer, jnp.floating]
  if jnp.issubdtype(target, jnp.complexfloating):
    kinds.append(jnp.complexfloating)
  return any(jnp.issubdtype(source, kind) for kind in kinds)


def _nonzero(value) -> bool:
  return bool(np.any(to_numpy(value) != 0))


@dataclasses.dataclass(frozen=True)
class TorchStateFormat:
  """How one torch class keeps its per-param state (the default: as our fields).

  Attributes:
    has_step: torch keeps ``step`` (SGD and Muon keep none; ours then marks a
      param with state as stepped once).
    int_step: torch keeps ``step`` as a Python int (SparseAdam), else a float32
      0-d tensor.
    from_construction: torch makes the entries in its constructor (Adagrad), so
      they exist before the first step.
    gated: a buffer torch keeps only while an option is nonzero
      (``{'momentum_buffer': 'momentum'}`` for SGD and RMSprop).
  """
  has_step: bool = True
  int_step: bool = False
  from_construction: bool = False
  gated: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def keys(self, state, options: Mapping[str, Any]) -> list[str]:
    """torch's keys for a group with ``options`` (its settings) and our ``state``."""
    keys = []
    for field in state._fields:
      if field in OURS_ONLY or getattr(state, field) is None:
        continue
      if field == 'step' and not self.has_step:
        continue
      gate = self.gated.get(field)
      if gate is not None and gate in options and not _nonzero(options[gate]):
        continue
      keys.append(field)
    return keys

  def entries(self, state, treedef, options: Mapping[str, Any],
              order: Sequence[int]) -> list[Entry | None]:
    """torch's per-param dicts, one per leaf of ``treedef`` (None: torch has none yet).

    ``state`` may be packed (foreach/fused); arrays are numpy copies. ``order`` is
    torch's order of the leaves (``order[0]``: its first param).
    """
    state = unpack_state(state)
    keys = self.keys(state, options)
    columns = {k: treedef.flatten_up_to(getattr(state, k)) for k in keys}
    steps = treedef.flatten_up_to(state.step)
    out: list[Entry | None] = []
    for i, step in enumerate(steps):
      if not keys or (float(step) == 0 and not self.from_construction):
        out.append(None)
        continue
      # A field a param does not keep (Adafactor's factored vs full) is None.
      entry: Entry = {k: np.array(columns[k][i]) for k in keys if columns[k][i] is not None}
      if self.int_step and 'step' in entry:
        entry['step'] = int(entry['step'])
      out.append(entry)
    return out

  def fill(self, fresh, treedef, entries: Sequence[Entry | None], options: Mapping[str, Any],
           order: Sequence[int], describe: Callable[[int], str]) -> Any:
    """``fresh`` (a state from ``init``) with torch's ``entries`` (one per leaf) in it.

    Checked entry by entry; ``describe(i)`` names leaf ``i`` in messages ("param
    3", "param 'h.0.w'"). The state keeps ``fresh``'s layout (packed or not), and
    its ``count`` becomes the largest ``step``.

    Raises:
      KeyError: an entry lacks a key torch keeps for these options.
      TypeError: an entry holds something that is not a number, or complex data
        for a real buffer.
      ValueError: an entry's shape differs from the buffer's.
    """
    return edit_per_leaf(fresh, lambda plain: self._filled(plain, treedef, entries, options,
                                                           describe))

  def _filled(self, fresh, treedef, entries, options, describe):
    """``fill`` on the per-leaf view of the state."""
    keys = self.keys(fresh, options)
    columns = {f: treedef.flatten_up_to(getattr(fresh, f)) for f in fresh._fields
               if f not in OURS_ONLY and getattr(fresh, f) is not None}
    for i, entry in enumerate(entries):
      if entry is None:
        continue
      for key in keys:
        like = columns[key][i]
        if like is None:  # not kept for this param
          continue
        if key not in entry:
          raise KeyError(f'state of {describe(i)} has no {key!r} (it has {sorted(entry)})')
        try:
          value = to_numpy(entry[key])
        except (TypeError, ValueError) as error:
          raise TypeError(f'state {key!r} of {describe(i)} is not an array or a number '
                          f'({type(entry[key]).__name__})') from error
        if not casts_to(value.dtype, like.dtype):
          raise TypeError(f'state {key!r} of {describe(i)} has dtype {value.dtype}, but '
                          f'the optimizer keeps {like.dtype}')
        if value.shape != np.shape(like):
          raise ValueError(f'state {key!r} of {describe(i)} has shape {value.shape}, but '
                           f'the optimizer expects {np.shape(like)}')
        columns[key][i] = jnp.asarray(value, dtype=like.dtype)
      if not self.has_step:  # torch keeps none: an entry means it stepped
        columns['step'][i] = jnp.ones_like(columns['step'][i])
    steps = [float(s) for s in columns['step']]
    return fresh._replace(
        count=jnp.asarray(max(steps, default=0), jnp.int32),
        **{f: treedef.unflatten(leaves) for f, leaves in columns.items()})


class LBFGSFormat(TorchStateFormat):
  """torch's LBFGS keeps all of its state under its first param: Python numbers for
  the counters, lists (oldest pair first) for the history."""

  def entries(self, state, treedef, options: Mapping[str, Any],
              order: Sequence[int]) -> list[Entry | None]:
    out: list[Entry | None] = [None] * treedef.num_leaves
    if int(state.func_evals) == 0:
      return out  # torch makes the entry at the first step
    old_dirs, old_stps, ro = (np.array(x) for x in state.history())
    out[order[0]] = {
        'func_evals': int(state.func_evals), 'n_iter': int(state.n_iter),
        'd': np.array(state.d), 't': float(state.t),
        'old_dirs': list(old_dirs), 'old_stps': list(old_stps), 'ro': list(ro),
        'H_diag': np.array(state.H_diag), 'prev_flat_grad': np.array(state.prev_flat_grad),
        'prev_loss': float(state.prev_loss),
        'al': [None] * int(options.get('history_size', fresh_history_size(state))),
    }
    return out

  def fill(self, fresh, treedef, entries, options, order, describe):
    entry = entries[order[0]] if entries else None
    if entry is None:
      return fresh
    for key in ('func_evals', 'n_iter', 'd', 't', 'old_dirs', 'old_stps', 'ro', 'H_diag',
                'prev_flat_grad', 'prev_loss'):
      if key not in entry:
        raise KeyError(f'state of {describe(order[0])} has no {key!r} '
                       f'(it has {sorted(entry)})')
    as_array = lambda x, like: jnp.asarray(to_numpy(x), like.dtype).reshape(like.shape)
    pairs = len(entry['old_dirs'])
    size = fresh.ro.shape[0]
    if pairs > size:
      raise ValueError(f'the loaded LBFGS history holds {pairs} pairs, more than '
                       f'history_size={size}')

    def ring(rows, like):
      if not pairs:
        return like
      return like.at[:pairs].set(jnp.stack([as_array(r, like[0]) for r in rows]))

    return fresh._replace(
        count=jnp.asarray(entry['n_iter'], jnp.int32),
        func_evals=jnp.asarray(entry['func_evals'], jnp.int32),
        n_iter=jnp.asarray(entry['n_iter'], jnp.int32),
        d=as_array(entry['d'], fresh.d), t=as_array(entry['t'], fresh.t),
        old_dirs=ring(entry['old_dirs'], fresh.old_dirs),
        old_stps=ring(entry['old_stps'], fresh.old_stps),
        ro=ring(entry['ro'], fresh.ro),
        H_diag=as_array(entry['H_diag'], fresh.H_diag),
        prev_flat_grad=as_array(entry['prev_flat_grad'], fresh.prev_flat_grad),
        prev_loss=as_array(entry['prev_loss'], fresh.prev_loss),
        history_count=jnp.asarray(pairs, jnp.int32),
        history_start=jnp.zeros([], jnp.int32))


def fresh_history_size(state) -> int:
  return int(state.ro.shape[0])


#: The converter of each torch class (by its name); the default where not listed.
FORMATS: dict[str, TorchStateFormat] = {
    'SGD': TorchStateFormat(has_step=False, gated={'momentum_buffer': 'momentum'}),
    'RMSprop': TorchStateFormat(gated={'momentum_buffer': 'momentum'}),
    'Adagrad': TorchStateFormat(from_construction=True),
    'SparseAdam': TorchStateFormat(int_step=True),
    'Muon': TorchStateFormat(has_step=False),
    'LBFGS': LBFGSFormat(),
}

#: The torch class of each of our optimizers' state classes: ``<TorchName>State``.
TORCH_CLASS_OF_STATE = {name: name.removesuffix('State') for name in optimizers.__all__
                        if name.endswith('State')}


def format_of(torch_name: str) -> TorchStateFormat:
  """The converter of the torch class named ``torch_name`` (``'Adam'``).

  Example:
    >>> from functional_optim.interop.torch_state import format_of
    >>> format_of('SGD').has_step, format_of('Adam').has_step
    (False, True)
  """
  return FORMATS.get(torch_name, TorchStateFormat())


def optimizer_states(state: PyTree) -> list[tuple[tuple, Any]]:
  """``(path, state)`` of every optimizer state of ours inside ``state`` (any nesting).

  Example:
    >>> import jax, jax.numpy as jnp, optax, functional_optim as fo
    >>> from functional_optim.interop.torch_state import optimizer_states
    >>> state = fo.chain(optax.clip(1.0), fo.adam()).init({'w': jnp.zeros(2)})
    >>> [(jax.tree_util.keystr(path), type(s).__name__) for path, s in optimizer_states(state)]
    [('[1]', 'AdamState')]
  """
  is_ours = lambda x: type(x).__name__ in TORCH_CLASS_OF_STATE and hasattr(x, '_fields')
  return [(tuple(path), node) for path, node in
          jax.tree_util.tree_flatten_with_path(state, is_leaf=is_ours)[0] if is_ours(node)]
