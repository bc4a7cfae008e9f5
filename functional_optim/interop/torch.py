"""Optimizer state between functional_optim and PyTorch (torch imported lazily).

* The facade: ``optim.X.load_state_dict`` reads torch's dicts as they are (tensors,
  ``param_names``), and ``optim.X.state_dict()`` returns tensors where torch is
  installed, so ``torch.save``/``torch.load`` work both ways.
* The functional API: :func:`state_from_torch` turns a torch optimizer's
  ``state_dict()`` into the state of one of ours (its ``count`` included, so a
  schedule continues), and :func:`state_to_torch` the reverse.
* A port whose params are named otherwise (flax's ``kernel``, transposed, for
  torch's ``weight``): :func:`rename_params`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.core.hyperparams import Hyperparams
from functional_optim.core.hyperparams_access import get_hyperparams, set_hyperparams
from functional_optim.core.tree import dotted_name, insertion_order
from functional_optim.interop.torch_state import (
    TORCH_CLASS_OF_STATE, format_of, optimizer_states, to_numpy)  # noqa: F401 (to_numpy: re-exported)

__all__ = ['rename_params', 'state_dict_to_torch', 'state_from_torch', 'state_to_torch']


def tensor_of(value, torch):
  """A numpy array (or number) as a torch tensor; bfloat16 through float32, which
  numpy's bfloat16 (ml_dtypes) cannot reach torch without."""
  array = np.asarray(value)
  if array.dtype.name == 'bfloat16':  # numpy's bfloat16 (ml_dtypes) is unknown to torch
    return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
  return torch.from_numpy(np.array(array))


def state_dict_to_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
  """Our ``state_dict()`` with every array turned into a torch tensor.

  ``step`` stays a 0-d float32 tensor, as torch keeps it; numbers and group
  hyperparameters are copied as they are.

  Example:
    >>> import torch, jax.numpy as jnp
    >>> from functional_optim import optim
    >>> from functional_optim.interop.torch import state_dict_to_torch
    >>> ours = optim.Adam([jnp.ones(2)], lr=0.1)
    >>> ours.step([jnp.ones(2)])
    >>> theirs = torch.optim.Adam([torch.ones(2, requires_grad=True)], lr=0.1)
    >>> theirs.load_state_dict(state_dict_to_torch(ours.state_dict()))
    >>> theirs.state_dict()['state'][0]['step']
    tensor(1.)
  """
  import torch

  def convert(value):
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items()}
    if isinstance(value, list):  # LBFGS's history lists
      return [convert(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, '__jax_array__') \
        or type(value).__module__.startswith('jax'):
      return tensor_of(value, torch)
    return value

  return {
      'state': {k: convert(v) for k, v in state_dict['state'].items()},
      'param_groups': [dict(g) for g in state_dict['param_groups']],
  }


def as_saved(value: Any) -> Any:
  """A state value as a ``state_dict()`` holds it: a torch tensor where torch is
  installed (so ``torch.save`` then a plain ``torch.load`` works), else numpy."""
  torch = _torch_or_none()
  if isinstance(value, dict):
    return {k: as_saved(v) for k, v in value.items()}
  if isinstance(value, list):
    return [as_saved(v) for v in value]
  if torch is None or not isinstance(value, (np.ndarray, np.generic)):
    return value
  return tensor_of(value, torch)


def _torch_or_none():
  """torch, where it is installed (imported on first use), else None."""
  import importlib.util
  if importlib.util.find_spec('torch') is None:
    return None
  import torch
  return torch


# ----------------------------------------------------------------------------
# Functional states <-> torch's state_dict


def _one_optimizer_state(state) -> tuple[tuple, Any]:
  found = optimizer_states(state)
  if len(found) != 1:
    where = ', '.join(jax.tree_util.keystr(p) or '<root>' for p, _ in found) or 'none'
    raise ValueError(f'this state holds {len(found)} optimizer states ({where}); torch\'s '
                     f'state_dict is one optimizer\'s: pass the transformation of one and '
                     f'its state (for a partition, one label\'s, with the params of its group)')
  return found[0]


def _replace_node(tree, old, new):
  return jax.tree.map(lambda x: new if x is old else x, tree, is_leaf=lambda x: x is old)


def _flat_named(params) -> tuple[list[str], list[int]]:
  names = [dotted_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return names, insertion_order(params)


def _plain(value):
  """A hyperparameter as torch keeps it in a group: Python numbers (tuples for betas)."""
  if isinstance(value, (tuple, list)):
    return tuple(_plain(v) for v in value)
  if hasattr(value, 'shape'):
    return float(np.asarray(value))
  return value


def state_from_torch(tx, params, state_dict: dict[str, Any], *, count: int | None = None):
  """A functional state that continues where ``torch_opt.state_dict()`` stopped.

  ``tx.init(params)`` with the per-param state of the dict written in (torch's
  tensors or numpy arrays), the hyperparameters of its group in effect (those a
  schedule does not drive), and ``count``, the number of updates so far, set to
  the largest ``step`` (so a schedule continues where torch's scheduler is). SGD
  and Muon keep no step in torch: pass ``count`` (torch's ``scheduler.last_epoch``)
  if a schedule drives them.

  Params are matched by name when the dict has ``param_names`` (torch saves them
  for named params; ours are the dotted paths of ``params``, e.g. ``'h.0.w'``),
  else by position, torch's order being the order ``params`` was written in
  (dict insertion order). ``tx`` holds one optimizer (chained with stateless
  transformations, e.g. clipping, is fine); a torch dict of several groups needs
  their hyperparameters equal.

  Raises:
    ValueError: several optimizers in ``tx``, a dict for another number of params,
      names that differ, or groups with different hyperparameters.
    KeyError, TypeError: an entry without a key, or of another dtype or shape
      (as ``optim.X.load_state_dict`` raises).

  Example:
    >>> import torch, jax.numpy as jnp, functional_optim as fo
    >>> from functional_optim.interop.torch import state_from_torch
    >>> w = torch.ones(2, requires_grad=True)
    >>> theirs = torch.optim.Adam([w], lr=0.1)
    >>> w.grad = torch.ones(2)
    >>> theirs.step()
    >>> tx = fo.adam(lr=0.1)
    >>> state = state_from_torch(tx, {'w': jnp.asarray(w.detach().numpy())},
    ...                          theirs.state_dict())
    >>> int(state.count), state.exp_avg['w']
    (1, Array([0.1, 0.1], dtype=float32))
  """

  full = tx.init(params)
  path, fresh = _one_optimizer_state(full)
  torch_name = TORCH_CLASS_OF_STATE[type(fresh).__name__]
  groups = list(state_dict['param_groups'])
  names, order = _flat_named(params)
  ids = [i for group in groups for i in group['params']]
  if len(ids) != len(order):
    raise ValueError(f'the state dict is for {len(ids)} params, these params are '
                     f'{len(order)}')
  saved_names = [n for group in groups for n in group.get('param_names', [])]
  if len(saved_names) == len(ids):
    live = [names[i] for i in order]
    if sorted(saved_names) != sorted(live):
      raise ValueError(f'the state dict names other params: it has '
                       f'{sorted(set(saved_names) - set(live))} that these params lack, '
                       f'these have {sorted(set(live) - set(saved_names))} that it lacks; '
                       f'rename them with rename_params')
    by_name = dict(zip(saved_names, ids))
    ids = [by_name[name] for name in live]
  options = {k: v for k, v in groups[0].items() if k not in ('params', 'param_names')}
  for group in groups[1:]:
    other = {k: v for k, v in group.items() if k not in ('params', 'param_names')}
    if _freeze(other) != _freeze(options):
      raise ValueError('the state dict\'s param groups have different hyperparameters, '
                       'which one transformation cannot hold: use a partition, and one '
                       'state_from_torch per group')
  saved = state_dict['state']
  entries: list = [None] * len(order)
  for k, leaf in enumerate(order):
    entries[leaf] = saved.get(ids[k], saved.get(str(ids[k])))
  treedef = jax.tree.structure(params)
  filled = format_of(torch_name).fill(
      fresh, treedef, entries, options, order,
      lambda leaf: f'param {ids[order.index(leaf)]} ({names[leaf]!r})')
  if count is not None:
    filled = filled._replace(count=jnp.asarray(count, jnp.int32))
  if isinstance(filled.hyperparams, Hyperparams):
    driven = dict(filled.hyperparams.scheduled)
    values = {k: options[k] for k in filled.hyperparams if k in options and k not in driven}
    if values:
      filled = set_hyperparams(filled, **values)
  return _replace_node(full, fresh, filled)


def _freeze(value):
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  if hasattr(value, 'shape'):
    return float(np.asarray(value))
  return value


def state_to_torch(tx, params, state) -> dict[str, Any]:
  """``state`` (of our optimizer ``tx``) as ``torch.optim.<tx's class>.state_dict()`` has it.

  One param group: ``tx``'s arguments (torch's group keys) with the
  hyperparameters in effect, ``params`` numbered in the order they were written
  (dict insertion order) and named by their dotted paths (``param_names``). Load
  it into the torch optimizer made with the same options
  (``torch_opt.load_state_dict(...)``); arrays are tensors where torch is
  installed.

  Raises:
    TypeError: ``tx`` is not one of our optimizers.

  Example:
    >>> import torch, jax.numpy as jnp, functional_optim as fo
    >>> from functional_optim.interop.torch import state_to_torch
    >>> tx = fo.sgd(lr=0.1, momentum=0.9)
    >>> params = {'w': jnp.ones(2)}
    >>> _, state = tx.update({'w': jnp.ones(2)}, tx.init(params), params)
    >>> theirs = torch.optim.SGD([torch.ones(2, requires_grad=True)], lr=0.5, momentum=0.9)
    >>> theirs.load_state_dict(state_to_torch(tx, params, state))
    >>> theirs.param_groups[0]['lr'], theirs.state_dict()['state'][0]['momentum_buffer']
    (0.1, tensor([1., 1.]))
  """
  if not (hasattr(tx, 'torch_name') and hasattr(tx, 'options')):
    raise TypeError('state_to_torch needs one of our optimizers (fo.adam(...), ...), whose '
                    'arguments are torch\'s group keys; got a transformation without them')
  _, state = _one_optimizer_state(state)
  names, order = _flat_named(params)
  group = {k: v for k, v in tx.options.items() if k != 'implementation'}
  group.update({k: _plain(v) for k, v in get_hyperparams(state).items() if k in group})
  entries = format_of(tx.torch_name).entries(state, jax.tree.structure(params), group, order)
  saved = {k: as_saved(entries[leaf]) for k, leaf in enumerate(order)
           if entries[leaf] is not None}
  group['params'] = list(range(len(order)))
  group['param_names'] = [names[leaf] for leaf in order]
  return {'state': saved, 'param_groups': [group]}


def rename_params(state_dict: dict[str, Any], rename) -> dict[str, Any]:
  """A torch state dict with its ``param_names`` renamed, and state converted to match.

  For a port whose params are named otherwise than torch's (flax's ``kernel`` for
  torch's ``weight``, stored transposed). ``rename`` maps a torch name to ours: a
  dict or a function, giving a name, or ``(name, fn)`` where ``fn`` converts each
  non-scalar state value of that param (``np.transpose`` for a Linear weight), or
  None (a function's way of keeping the name). Names it does not know are kept.

  Example:
    >>> import numpy as np
    >>> from functional_optim.interop.torch import rename_params
    >>> saved = {'state': {0: {'step': np.float32(1), 'exp_avg': np.ones((2, 3))}},
    ...          'param_groups': [{'lr': 0.1, 'params': [0], 'param_names': ['fc.weight']}]}
    >>> out = rename_params(saved, {'fc.weight': ('fc.kernel', np.transpose)})
    >>> out['param_groups'][0]['param_names'], out['state'][0]['exp_avg'].shape
    (['fc.kernel'], (3, 2))
  """
  lookup = rename.get if isinstance(rename, dict) else rename
  state = dict(state_dict['state'])
  groups = []
  for group in state_dict['param_groups']:
    group = dict(group)
    if 'param_names' in group:
      names = []
      for param_id, name in zip(group['params'], group['param_names']):
        new = lookup(name)
        fn = None
        if isinstance(new, tuple):
          new, fn = new
        names.append(name if new is None else new)
        key = param_id if param_id in state else str(param_id)
        if fn is not None and key in state:
          state[key] = {k: fn(to_numpy(v)) if np.ndim(v) else v
                        for k, v in state[key].items()}
      group['param_names'] = names
    groups.append(group)
  return {**state_dict, 'state': state, 'param_groups': groups}
