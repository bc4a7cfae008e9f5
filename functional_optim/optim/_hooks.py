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


class HookRegistries:
  """torch's per-optimizer hooks: step pre/post, state_dict pre/post, load pre/post.

  The optimizer runs them; each ``register_*`` returns a :class:`RemovableHandle`.
  """

  def _init_hooks(self) -> None:
    self._step_pre_hooks: OrderedDict = OrderedDict()
    self._step_post_hooks: OrderedDict = OrderedDict()
    self._state_dict_pre_hooks: OrderedDict = OrderedDict()
    self._state_dict_post_hooks: OrderedDict = OrderedDict()
    self._load_state_dict_pre_hooks: OrderedDict = OrderedDict()
    self._load_state_dict_post_hooks: OrderedDict = OrderedDict()

  def register_step_pre_hook(self, hook) -> RemovableHandle:
    """Registers ``hook(opt, args, kwargs) -> None | (new_args, new_kwargs)``, run before
    each step; a returned pair replaces the step's arguments.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> def halve(opt, args, kwargs):
      ...   (grads,) = args
      ...   return ({'w': grads['w'] / 2},), kwargs
      >>> handle = opt.register_step_pre_hook(halve)
      >>> opt.step({'w': jnp.ones(2)})
      >>> handle.remove()
      >>> opt.step({'w': jnp.ones(2)})
      >>> opt.params['w']
      Array([-1.5, -1.5], dtype=float32)
    """
    return register(self._step_pre_hooks, hook)

  def register_step_post_hook(self, hook) -> RemovableHandle:
    """Registers ``hook(opt, args, kwargs)``, run after each step.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> seen = []
      >>> handle = opt.register_step_post_hook(
      ...     lambda opt, args, kwargs: seen.append(float(opt.params['w'][0])))
      >>> for _ in range(2):
      ...   opt.step({'w': jnp.ones(2)})
      >>> seen
      [-1.0, -2.0]
    """
    return register(self._step_post_hooks, hook)

  def register_state_dict_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt)``, run before :meth:`state_dict` builds the dict (first
    among the others when ``prepend``).

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_state_dict_pre_hook(lambda opt: print('saving'))
      >>> saved = opt.state_dict()
      saving
    """
    return register(self._state_dict_pre_hooks, hook, prepend)

  def register_state_dict_post_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt, state_dict) -> state_dict | None``, run on the dict
    :meth:`state_dict` built; a returned dict replaces it.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> def add_epoch(opt, state_dict):
      ...   return {**state_dict, 'epoch': 3}
      >>> handle = opt.register_state_dict_post_hook(add_epoch)
      >>> opt.state_dict()['epoch']
      3
    """
    return register(self._state_dict_post_hooks, hook, prepend)

  def register_load_state_dict_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt, state_dict) -> state_dict | None``, run before
    :meth:`load_state_dict` loads; a returned dict is loaded instead.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> def keep_current_lr(opt, state_dict):
      ...   lr = opt.param_groups[0]['lr']
      ...   groups = [{**group, 'lr': lr} for group in state_dict['param_groups']]
      ...   return {**state_dict, 'param_groups': groups}
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_load_state_dict_pre_hook(keep_current_lr)
      >>> opt.load_state_dict(optim.SGD({'w': jnp.zeros(2)}, lr=0.1).state_dict())
      >>> opt.param_groups[0]['lr']
      1.0
    """
    return register(self._load_state_dict_pre_hooks, hook, prepend)

  def register_load_state_dict_post_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt)``, run after :meth:`load_state_dict` has loaded.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_load_state_dict_post_hook(
      ...     lambda opt: print('lr', opt.param_groups[0]['lr']))
      >>> opt.load_state_dict(opt.state_dict())
      lr 1.0
    """
    return register(self._load_state_dict_post_hooks, hook, prepend)
