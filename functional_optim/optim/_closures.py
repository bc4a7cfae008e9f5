"""``step(closure)``: one compiled program per closure *code*, its captured arrays as data.

torch's documented idiom defines the closure inside the training loop, so each
batch brings a new closure object, capturing that batch::

    for x, y in loader:
      def closure(params):
        return loss_fn(params, x, y)
      opt.step(closure)

Compiling per closure object would compile every step. :func:`split_closure`
takes a closure apart into what names its program (its code, and what it
captured that is not an array: functions, modules, numbers, all by identity or
value) and what is data (the arrays it captured, a pytree of them, or a
``functools.partial``'s array arguments), and gives back a function that builds
the closure again from traced data inside ``jit``. The facade caches one
compiled step per key, in a small LRU cache.
"""

from __future__ import annotations

import collections
import functools
import types
from typing import Any, Callable, Hashable

import jax
import numpy as np

#: Compiled closure steps kept per optimizer (least recently used dropped first).
CACHE_SIZE = 8


def _is_data(value) -> bool:
  """Arrays, or a non-empty pytree whose leaves are all arrays: passed as data."""
  leaves = jax.tree.leaves(value)
  return bool(leaves) and all(isinstance(x, (jax.Array, np.ndarray, np.generic))
                              for x in leaves)


def _static_key(value) -> Hashable:
  try:
    hash(value)
  except TypeError:
    return ('id', id(value))
  if isinstance(value, (int, float, complex, str, bytes, bool, type(None))):
    return ('value', type(value), value)
  return ('id', id(value))


def split_closure(fn: Callable) -> tuple[Hashable, Any, Callable[[Any], Callable]]:
  """``(key, data, rebuild)``: ``rebuild(data)`` is ``fn``, and ``key`` names its program.

  Two closures with the same code that captured other arrays (of the same
  shapes) get the same key; ``rebuild`` of traced data gives a traceable ``fn``.
  Anything else than a plain function or a ``functools.partial`` of one is one
  program per object.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optim._closures import split_closure
    >>> def make(x):
    ...   return lambda w: jnp.sum((w - x) ** 2)
    >>> key1, data1, rebuild = split_closure(make(jnp.ones(2)))
    >>> key2, data2, _ = split_closure(make(jnp.zeros(2)))
    >>> key1 == key2, float(rebuild(data2)(jnp.ones(2)))
    (True, 2.0)
  """
  if isinstance(fn, functools.partial):
    inner_key, inner_data, inner_rebuild = split_closure(fn.func)
    args = [(i, a) for i, a in enumerate(fn.args)]
    kwargs = sorted(fn.keywords.items())
    data_args = {i: a for i, a in args if _is_data(a)}
    data_kwargs = {k: v for k, v in kwargs if _is_data(v)}
    static = (tuple((i, _static_key(a)) for i, a in args if i not in data_args),
              tuple((k, _static_key(v)) for k, v in kwargs if k not in data_kwargs))
    key = ('partial', inner_key, static, jax.tree.structure((data_args, data_kwargs)),
           len(fn.args))
    held = (fn.args, fn.keywords)

    def rebuild_partial(data):
      inner_data_, (args_data, kwargs_data) = data
      call_args = [args_data[i] if i in args_data else a for i, a in enumerate(held[0])]
      call_kwargs = {**held[1], **kwargs_data}
      return functools.partial(inner_rebuild(inner_data_), *call_args, **call_kwargs)
    return key, (inner_data, (data_args, data_kwargs)), rebuild_partial

  if not isinstance(fn, types.FunctionType):
    return ('object', _static_key(fn)), None, lambda data: fn
  cells = fn.__closure__ or ()
  contents = []
  for cell in cells:
    try:
      contents.append(cell.cell_contents)
    except ValueError:  # an empty cell (a name bound later)
      return ('object', _static_key(fn)), None, lambda data: fn
  data = {i: c for i, c in enumerate(contents) if _is_data(c)}
  static = tuple((i, _static_key(c)) for i, c in enumerate(contents) if i not in data)
  key = ('function', fn.__code__, id(fn.__globals__), static,
         _static_key(fn.__defaults__), jax.tree.structure(data))

  def rebuild(traced):
    new_cells = tuple(types.CellType(traced[i] if i in traced else c)
                      for i, c in enumerate(contents))
    rebuilt = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__,
                                 fn.__defaults__, new_cells)
    rebuilt.__kwdefaults__ = fn.__kwdefaults__
    return rebuilt
  return key, data, rebuild


class ClosureCache:
  """A bounded LRU cache of compiled closure steps (:data:`CACHE_SIZE` entries).

  Example:
    >>> from functional_optim.optim._closures import ClosureCache
    >>> cache = ClosureCache(size=2)
    >>> [cache.get(k, lambda k=k: k * 10) for k in (1, 2, 1, 3)], sorted(cache.keys())
    ([10, 20, 10, 30], [1, 3])
  """

  def __init__(self, size: int = CACHE_SIZE):
    self._size = size
    self._entries: collections.OrderedDict = collections.OrderedDict()

  def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
    if key in self._entries:
      self._entries.move_to_end(key)
      return self._entries[key]
    value = self._entries[key] = make()
    if len(self._entries) > self._size:
      self._entries.popitem(last=False)
    return value

  def keys(self):
    return self._entries.keys()

  def values(self):
    return self._entries.values()

  def clear(self) -> None:
    self._entries.clear()
