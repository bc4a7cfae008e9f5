"""The facade's state in torch's format: ``state_dict``, ``load_state_dict``, ``opt.state``.

torch's format: ``{'state': {id: {key: tensor}}, 'param_groups': [{..., 'params':
[ids], 'param_names': [...]}]}``, ids counting params in group order, each group
in torch's order of its params (``_params.ParamSource.order``). The per-param
entries come from the converter of the optimizer's torch class
(``interop.torch_state``).

Loading matches params by name when both the dict and the optimizer name them
(refusing, with the names, when they differ) and by position only when one side
has no names, as torch always does. Everything is checked before anything
changes: a dict that fails leaves the optimizer as it was.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from functional_optim.distributed.sharding import init_sharded
from functional_optim.interop.torch import as_saved
from functional_optim.interop.torch_state import Entry, format_of

if TYPE_CHECKING:
  from functional_optim.optim.optimizer import Optimizer


def group_entries(opt: 'Optimizer', g: int) -> list[Entry | None]:
  """torch's per-param dicts of group ``g``, in torch's order (None: none yet)."""
  source, group = opt._sources[g], opt.param_groups[g]
  entries = format_of(opt._torch_name).entries(opt._states[g], source.treedef, group,
                                                source.order)
  return [entries[i] for i in source.order]


def state_dict(opt: 'Optimizer') -> dict[str, Any]:
  """``opt.state_dict()`` (see :meth:`Optimizer.state_dict`)."""
  state, groups, next_id = {}, [], 0
  for g, group in enumerate(opt.param_groups):
    saved = {k: copy.deepcopy(v) for k, v in group.items()
             if k not in ('params', 'param_names')}
    ids = list(range(next_id, next_id + len(group['params'])))
    saved['params'] = ids
    if 'param_names' in group:
      saved['param_names'] = list(group['param_names'])
    groups.append(saved)
    for param_id, entry in zip(ids, group_entries(opt, g)):
      if entry is not None:
        state[param_id] = as_saved(entry)
    next_id += len(ids)
  return {'state': state, 'param_groups': groups}


def _matched_ids(g: int, saved: dict, live: dict) -> list:
  """The saved ids of group ``g``'s params, in the live group's order.

  By name when both sides name their params (torch saves ``param_names`` for
  named params); by position otherwise, as torch loads.

  Raises:
    ValueError: both name their params and the names differ.
  """
  ids = list(saved['params'])
  if 'param_names' not in saved or 'param_names' not in live:
    return ids
  saved_names, live_names = list(saved['param_names']), list(live['param_names'])
  if saved_names == live_names:
    return ids
  missing = [n for n in live_names if n not in saved_names]
  unexpected = [n for n in saved_names if n not in live_names]
  if missing or unexpected or len(set(saved_names)) != len(saved_names):
    raise ValueError(
        f'loaded param group {g} names other params than the optimizer: the optimizer '
        f'has {missing} that the dict lacks, the dict has {unexpected} that the optimizer '
        f'lacks; rename them (functional_optim.interop.torch.rename_params) or load by '
        f'position without names')
  position = {name: i for i, name in enumerate(saved_names)}
  return [ids[position[name]] for name in live_names]


def load_state_dict(opt: 'Optimizer', state_dict: dict[str, Any]) -> None:
  """``opt.load_state_dict(state_dict)`` (see :meth:`Optimizer.load_state_dict`)."""
  saved_groups = copy.deepcopy(list(state_dict['param_groups']))
  if len(saved_groups) != len(opt.param_groups):
    raise ValueError('loaded state dict has a different number of parameter groups')
  if any(len(s['params']) != len(g['params'])
         for s, g in zip(saved_groups, opt.param_groups)):
    raise ValueError("loaded state dict contains a parameter group that doesn't "
                     "match the size of optimizer's group")
  saved_state = state_dict['state']
  new_groups, transforms, states = [], [], []
  for g, (saved, live) in enumerate(zip(saved_groups, opt.param_groups)):
    group = opt._loaded_group(g, saved, live)
    source = opt._sources[g]
    ids = _matched_ids(g, saved, live)
    transform = opt._build(group)  # torch's checks of the loaded hyperparameters
    fresh = init_sharded(transform, source.tree)
    by_torch_order = [saved_state.get(i, saved_state.get(str(i))) for i in ids]
    entries: list[Entry | None] = [None] * len(by_torch_order)
    for k, leaf in enumerate(source.order):
      entries[leaf] = by_torch_order[k]

    def describe(leaf, ids=ids, source=source):
      k = source.order.index(leaf)
      name = f" ({source.names[leaf]!r})" if source.names else ''
      return f'param {ids[k]}{name}'
    states.append(format_of(opt._torch_name).fill(
        fresh, source.treedef, entries, group, source.order, describe))
    new_groups.append(group)
    transforms.append(transform)
  opt._commit_groups(new_groups, transforms, states)


class StateView:
  """``opt.state``: per-param torch-format state, looked up by id, name or nnx Variable.

  Entries are numpy copies; a param with no state yet (no step) is not ``in`` it
  and reads as ``{}``. Keys follow torch's order.
  """

  def __init__(self, opt: 'Optimizer'):
    self._opt = opt
    self._index: dict[Any, tuple[int, int]] = {}
    next_id = 0
    for g, source in enumerate(opt._sources):
      for k, leaf in enumerate(source.order):
        keys: list[Any] = [next_id]
        if source.names is not None:
          keys.append(source.names[leaf])
        if source.variables is not None and source.variables[leaf] is not None:
          keys.append(id(source.variables[leaf]))
        for key in keys:
          self._index[key] = (g, k)
        next_id += 1
    self._size = next_id
    self._entries: dict[int, list] = {}

  def _resolve(self, key) -> tuple[int, int]:
    if isinstance(key, (int, str)) and key in self._index:
      return self._index[key]
    if not isinstance(key, (int, str)) and id(key) in self._index:
      return self._index[id(key)]
    raise KeyError(key)

  def _entry(self, g: int, k: int):
    if g not in self._entries:
      self._entries[g] = group_entries(self._opt, g)
    return self._entries[g][k]

  def __getitem__(self, key) -> dict[str, Any]:
    return self._entry(*self._resolve(key)) or {}

  def __contains__(self, key) -> bool:
    try:
      g, k = self._resolve(key)
    except KeyError:
      return False
    return self._entry(g, k) is not None

  def __iter__(self):
    return (i for i in range(self._size) if i in self)

  def __len__(self) -> int:
    return sum(1 for _ in self)

  def items(self):
    return ((i, self[i]) for i in self)
