"""Schedulers driven by a function of the epoch: LambdaLR (the lr from the initial lr)
and MultiplicativeLR (the lr from the current lr)."""

from __future__ import annotations

import types
from typing import Any, Callable

from functional_optim.optim.lr_scheduler._base import LRScheduler
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks

__all__ = ['LambdaLR', 'MultiplicativeLR']

LrLambda = Callable[[int], float]


class _LambdaScheduler(LRScheduler):
  """A scheduler driven by one function of the epoch per group."""

  def __init__(self, optimizer: Optimizer, lr_lambda: LrLambda | list[LrLambda],
               last_epoch: int = -1) -> None:
    self.optimizer = optimizer
    groups = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
      if len(lr_lambda) != groups:
        raise ValueError(f'Expected {groups} lr_lambdas, but got {len(lr_lambda)}')
      self.lr_lambdas = list(lr_lambda)
    else:
      self.lr_lambdas = [lr_lambda] * groups
    self._check_lambdas()
    super().__init__(optimizer, last_epoch)

  def _check_lambdas(self) -> None:
    pass

  def state_dict(self) -> dict[str, Any]:
    """As torch: a plain function is saved as ``None``, a callable object as its ``__dict__``.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> class Decay:
      ...   def __init__(self, rate):
      ...     self.rate = rate
      ...   def __call__(self, epoch):
      ...     return self.rate ** epoch
      >>> opt = optim.SGD([{'params': [jnp.zeros(1)]}, {'params': [jnp.zeros(2)]}], lr=1.0)
      >>> sched = optim.lr_scheduler.LambdaLR(opt, [lambda epoch: 1.0, Decay(0.5)])
      >>> sched.state_dict()['lr_lambdas']
      [None, {'rate': 0.5}]
    """
    state = {k: v for k, v in self.__dict__.items() if k not in ('optimizer', 'lr_lambdas')}
    state['lr_lambdas'] = [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
                           for fn in self.lr_lambdas]
    return state

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes and the callable objects' ``__dict__``; ``state_dict`` is
    left as given.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> class Decay:
      ...   def __init__(self, rate):
      ...     self.rate = rate
      ...   def __call__(self, epoch):
      ...     return self.rate ** epoch
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> saved = optim.lr_scheduler.LambdaLR(opt, Decay(0.5)).state_dict()
      >>> decay = Decay(0.9)
      >>> sched = optim.lr_scheduler.LambdaLR(opt, decay)
      >>> sched.load_state_dict(saved)
      >>> decay.rate, saved['lr_lambdas']
      (0.5, [{'rate': 0.5}])
    """
    state = {k: v for k, v in state_dict.items() if k != 'lr_lambdas'}
    self.__dict__.update(state)
    for fn, saved in zip(self.lr_lambdas, state_dict['lr_lambdas']):
      if saved is not None:
        fn.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
  r"""``torch.optim.lr_scheduler.LambdaLR``: ``lr = initial_lr · lr_lambda(epoch)``.

  ``lr_lambda`` is one function for every group or a list with one per group.

  .. math:: \eta_e = \eta_0\,\lambda(e)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (epoch + 1))
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.25]
  """

  def get_lr(self) -> list[Any]:
    """``initial_lr · lr_lambda(last_epoch)`` for each group; called by :meth:`step`."""
    self._warn_if_outside_step()
    return [base * fn(self.last_epoch)
            for fn, base in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_LambdaScheduler):
  r"""``torch.optim.lr_scheduler.MultiplicativeLR``: ``lr ← lr · lr_lambda(epoch)`` each step.

  .. math:: \eta_e = \eta_{e-1}\,\lambda(e) = \eta_0 \prod_{k=1}^{e} \lambda(k)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.MultiplicativeLR(opt, lambda epoch: 0.5)
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.125]
  """

  def _check_lambdas(self) -> None:
    for fn in self.lr_lambdas:
      checks.check_lr_lambda(fn)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``lr_lambda(last_epoch)`` (unchanged at construction);
    called by :meth:`step`."""
    self._warn_if_outside_step()
    if self._is_initial:
      return self._current_lrs()
    return [group['lr'] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)]
