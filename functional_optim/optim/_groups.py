"""The facade's param groups: torch's dicts, their hyperparameters as data.

A group's numeric hyperparameters (``Optimizer._dynamic``) are data of the
compiled step; everything else in it is structural (part of the program). These
helpers tell the two apart and turn a group's values into what the step takes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import jax
import numpy as np

from functional_optim.core.hyperparams import given_dtype
from functional_optim.interop.torch_state import to_numpy
from functional_optim.optim._params import ParamSource


def freeze(value):
  """``value`` hashable: lists and tuples as tuples, dicts as sorted item tuples."""
  if isinstance(value, (list, tuple)):
    return tuple(freeze(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, freeze(v)) for k, v in value.items()))
  return value


def as_tuple(value):
  """A list as a tuple (betas edited or loaded as a list), anything else as it is."""
  return tuple(value) if isinstance(value, list) else value


def data_dtype(value) -> np.dtype:
  """The dtype a numeric hyperparameter runs in: a tensor's or array's own, a
  number's (``core.hyperparams.given_dtype``)."""
  return given_dtype(to_numpy(value) if hasattr(value, 'dtype') else value)


def as_data(value, name: str = 'a hyperparameter') -> np.ndarray:
  """A numeric hyperparameter of a param group as the array the compiled step takes.

  Raises:
    TypeError: not a number (torch's error type: its checks compare with floats).
  """
  if isinstance(value, (str, bytes)) or not (
      isinstance(value, (int, float, np.number)) or hasattr(value, 'dtype')):
    raise TypeError(f'{name} must be a number or a scalar array, got {value!r}')
  data = np.asarray(to_numpy(value))
  if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
    raise TypeError(f'{name} must be a number or a scalar array, got {value!r}')
  return data.astype(data_dtype(value), copy=False)


def is_immutable(value) -> bool:
  if isinstance(value, tuple):
    return all(map(is_immutable, value))
  return isinstance(value, (bool, int, float, np.generic, jax.Array))


class ParamGroup(dict):
  """A param group: torch's dict, which notices edits that change the program.

  An edit of a structural option (``amsgrad``, ``nesterov``, ``foreach``...) or a
  numeric hyperparameter changing kind (a float lr becoming a float32 tensor)
  rebuilds the group's step; other edits are data.
  """

  def __init__(self, values: dict, dynamic: Sequence[str]):
    super().__init__(values)
    self._dynamic = frozenset(dynamic)
    self.edited = False

  def __setitem__(self, key, value):
    if key not in self._dynamic or (key in self and kind_of(self[key]) != kind_of(value)):
      self.edited = True
    super().__setitem__(key, value)

  def _edit(name):
    def method(self, *args, **kwargs):
      self.edited = True
      return getattr(dict, name)(self, *args, **kwargs)
    return method

  update = _edit('update')
  setdefault = _edit('setdefault')
  pop = _edit('pop')
  popitem = _edit('popitem')
  clear = _edit('clear')
  __delitem__ = _edit('__delitem__')
  __ior__ = _edit('__ior__')
  del _edit


def kind_of(value):
  return type(value) if not hasattr(value, 'dtype') else ('array', str(value.dtype))


class ParamsView(Sequence):
  """``group['params']``: the group's current params in torch's order, read when
  asked (holding none, so a step may donate the buffers it owns)."""

  def __init__(self, source: ParamSource):
    self._source = source

  def __len__(self) -> int:
    return len(self._source.order)

  def __getitem__(self, k):
    if isinstance(k, slice):
      return [self[i] for i in range(len(self))[k]]
    leaf = self._source.order[k]
    variables = self._source.variables
    if variables is not None and variables[leaf] is not None:
      return variables[leaf]
    return self._source.leaves()[leaf]

  def __repr__(self) -> str:
    return f'<{len(self)} params>'


def class_defaults(cls) -> dict[str, Any]:
  """The defaults of an optimizer class's constructor (torch fills these in when a
  loaded group lacks them)."""
  try:
    parameters = inspect.signature(cls.__init__).parameters.values()
  except (TypeError, ValueError):
    return {}
  return {p.name: p.default for p in parameters
          if p.name not in ('self', 'params') and p.default is not inspect.Parameter.empty}


def signature(group: dict, defaults: dict, dynamic: Sequence[str]) -> tuple:
  """What in ``group`` decides its compiled program: the structural options'
  values and the numeric hyperparameters' dtypes.

  A numeric hyperparameter's value is data, its dtype is not: a Python float and
  a float32 tensor lr run different scalar arithmetic (``given_dtype``).
  """
  structural = tuple((k, freeze(group[k])) for k in defaults if k not in dynamic)
  dtypes = tuple((k, freeze(jax.tree.map(data_dtype, as_tuple(group[k])))) for k in dynamic)
  return structural + dtypes


def numeric_data(group: dict, dynamic: Sequence[str]) -> dict[str, Any]:
  """The group's numeric hyperparameters (``dynamic``) as the compiled step takes them.

  Converted (and put on the device) once per value: a step whose group holds the
  numbers of the last one reuses their arrays. Only immutable values are kept so
  (numbers, jax arrays): a numpy array or torch tensor may change in place.
  """
  values = [group[name] for name in dynamic]
  kept = getattr(group, '_data', None)
  if kept is not None and all(a is b for a, b in zip(kept[0], values)):
    return kept[1]
  data = {name: jax.tree.map(functools.partial(as_data, name=name), as_tuple(value))
          for name, value in zip(dynamic, values)}
  if isinstance(group, ParamGroup) and all(map(is_immutable, values)):
    data = jax.device_put(data)
    group._data = (values, data)
  return data
