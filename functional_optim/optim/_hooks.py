"""Removable hook registries with torch's semantics (``torch.utils.hooks.RemovableHandle``)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Callable

_next_id = itertools.count()


class RemovableHandle:
  """What every ``register_*_hook`` returns: ``handle.remove()`` unregisters the hook.

  Also a context manager, as torch's handle is.
  """

  def __init__(self, registry: OrderedDict):
    self._registry = registry
    self.id = next(_next_id)

  def remove(self) -> None:
    self._registry.pop(self.id, None)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.remove()


def register(registry: OrderedDict, hook: Callable, prepend: bool = False) -> RemovableHandle:
  """Adds ``hook`` to ``registry`` (first when ``prepend``) and returns its handle."""
  handle = RemovableHandle(registry)
  registry[handle.id] = hook
  if prepend:
    registry.move_to_end(handle.id, last=False)
  return handle


_global_step_pre_hooks: OrderedDict = OrderedDict()
_global_step_post_hooks: OrderedDict = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
  """A step pre-hook for every optimizer: ``hook(opt, args, kwargs) -> None | (args, kwargs)``.

  Global pre-hooks run before each optimizer's own pre-hooks. The handle
  returned unregisters it (``handle.remove()``, or at the end of a ``with``
  block).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> def log(opt, args, kwargs):
    ...   print('stepping', type(opt).__name__)
    >>> with optim.register_optimizer_step_pre_hook(log):
    ...   opt.step({'w': jnp.ones(2)})
    stepping SGD
    >>> opt.step({'w': jnp.ones(2)})  # unregistered at the end of the block
  """
  return register(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
  """A step post-hook for every optimizer: ``hook(opt, args, kwargs)``; runs after its own.

  The handle returned unregisters it (``handle.remove()``, or at the end of a
  ``with`` block).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> steps = []
    >>> with optim.register_optimizer_step_post_hook(lambda *_: steps.append(1)):
    ...   opt.step({'w': jnp.ones(2)})
    ...   opt.step({'w': jnp.ones(2)})
    >>> opt.step({'w': jnp.ones(2)})
    >>> len(steps)
    2
  """
  return register(_global_step_post_hooks, hook)
