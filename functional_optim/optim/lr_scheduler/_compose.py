"""Schedulers over other schedulers: ChainedScheduler (all at once), SequentialLR (one
after the other)."""

from __future__ import annotations

from typing import Any, Sequence

from functional_optim.optim.lr_scheduler._base import LRScheduler, group_values
from functional_optim.optim.lr_scheduler._plateau import ReduceLROnPlateau
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks
from functional_optim.schedules.formulas import PYTHON

__all__ = ['ChainedScheduler', 'SequentialLR']


def _check_children(owner: str, schedulers: Sequence[Any], optimizer: Any) -> None:
  """torch's checks of the schedulers a ChainedScheduler or SequentialLR drives."""
  for i, scheduler in enumerate(schedulers):
    if not hasattr(scheduler, 'optimizer'):
      raise TypeError(f'{owner} at index {i} should have `optimizer` as its attribute.')
    if isinstance(scheduler, ReduceLROnPlateau):
      raise ValueError(
          f'{owner} does not support `ReduceLROnPlateau` scheduler as it requires '
          'additional kwargs to be specified when calling `step`, but got one at index '
          f'{i} in the given schedulers sequence.')
    if optimizer != scheduler.optimizer:
      raise ValueError(
          f'{owner} expects all schedulers to belong to the same optimizer, but got '
          f'scheduler {type(scheduler).__name__} at index {i} has {scheduler.optimizer}, '
          f'which is different from {type(optimizer).__name__}.')


class _Composite(LRScheduler):
  """Saves and loads the children's states under ``_schedulers``, as torch does."""

  _schedulers: Sequence[LRScheduler]

  def state_dict(self) -> dict[str, Any]:
    """As torch: every attribute but the optimizer, with each child's
    ``state_dict()`` in a list under ``_schedulers``.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> sched = optim.lr_scheduler.ChainedScheduler([
      ...     optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2),
      ...     optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)])
      >>> saved = sched.state_dict()
      >>> sorted(saved), [child['last_epoch'] for child in saved['_schedulers']]
      (['_last_lr', '_schedulers'], [0, 0])
    """
    state = {k: v for k, v in self.__dict__.items() if k not in ('optimizer', '_schedulers')}
    state['_schedulers'] = [s.state_dict() for s in self._schedulers]
    return state

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes and each child's state; ``state_dict`` is left as given.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> def chained(opt):
      ...   return optim.lr_scheduler.ChainedScheduler([
      ...       optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2),
      ...       optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)])
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> sched = chained(opt)
      >>> for _ in range(3):
      ...   opt.step({'w': jnp.ones(1)})
      ...   sched.step()
      >>> resumed = chained(optim.SGD({'w': jnp.zeros(1)}, lr=1.0))
      >>> resumed.load_state_dict(sched.state_dict())
      >>> [round(lr, 6) for lr in resumed.get_last_lr()]
      [0.729]
    """
    self.__dict__.update({k: v for k, v in state_dict.items() if k != '_schedulers'})
    for scheduler, saved in zip(self._schedulers, state_dict['_schedulers']):
      scheduler.load_state_dict(saved)


class ChainedScheduler(_Composite):
  r"""``torch.optim.lr_scheduler.ChainedScheduler``: each ``step()`` steps every scheduler,
  in order, so their (recursive) factors multiply: with :math:`r_i(e)` the factor
  scheduler :math:`i`'s step applies to the current lr,

  .. math:: \eta_e = \eta_{e-1} \prod_i r_i(e)

  Nothing is stepped at construction: the schedulers already took their first step.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.ChainedScheduler([
    ...     optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2),
    ...     optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)])
    >>> lrs = []
    >>> for _ in range(4):
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs
    [0.5, 0.45, 0.81, 0.729]
  """

  def __init__(self, schedulers: Sequence[LRScheduler],
               optimizer: Optimizer | None = None) -> None:
    checks.check_schedulers_given(type(self).__name__, len(schedulers), ' to be chained')
    optimizer = optimizer or schedulers[0].optimizer
    _check_children(type(self).__name__, schedulers, optimizer)
    self._schedulers = schedulers
    self.optimizer = optimizer
    self._last_lr = group_values(schedulers[-1].optimizer, 'lr')

  def step(self) -> None:  # type: ignore[override]
    """Steps every scheduler."""
    for scheduler in self._schedulers:
      scheduler.step()
    self._last_lr = group_values(self._schedulers[-1].optimizer, 'lr')


class SequentialLR(_Composite):
  r"""``torch.optim.lr_scheduler.SequentialLR``: ``schedulers[i]`` runs from
  ``milestones[i-1]``, restarted at its epoch 0 there (``len(milestones) ==
  len(schedulers) - 1``):

  .. math:: \eta_e = S_i(e - m_{i-1}) \quad \text{for } m_{i-1} \le e < m_i,
     \quad m_{-1} = 0

  Construction resets the lrs to ``initial_lr``, takes back the first step of every
  scheduler and takes again only that of the one running at epoch 0.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
    >>> warmup = optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    >>> decay = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    >>> sched = optim.lr_scheduler.SequentialLR(opt, [warmup, decay], milestones=[3])
    >>> lrs = []
    >>> for _ in range(6):
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs
    [0.01, 0.04, 0.07, 0.1, 0.05, 0.025]
  """

  def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler],
               milestones: list[int], last_epoch: int = -1) -> None:
    checks.check_schedulers_given(type(self).__name__, len(schedulers))
    _check_children(type(self).__name__, schedulers, optimizer)
    checks.check_sequential_milestones(len(schedulers), len(milestones))
    self._schedulers = schedulers
    self._milestones = milestones
    self.last_epoch = last_epoch + 1
    self.optimizer = optimizer
    for group in optimizer.param_groups:
      group['lr'] = group['initial_lr']
    self.recursive_undo()
    first = schedulers[PYTHON.count_at_most(milestones, 0)]
    first._initial_step()
    self._last_lr = first.get_last_lr()

  def recursive_undo(self, sched: Any = None) -> None:
    """Takes back the construction step of every scheduler below ``sched`` (default: all).

    The constructor uses it: each child's ``last_epoch`` goes back by one.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> warmup = optim.lr_scheduler.ConstantLR(opt, factor=0.5)
      >>> decay = optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
      >>> sched = optim.lr_scheduler.SequentialLR(opt, [warmup, decay], milestones=[5])
      >>> warmup.last_epoch, decay.last_epoch  # only the running one keeps its step
      (0, -1)
      >>> sched.recursive_undo()
      >>> warmup.last_epoch, decay.last_epoch
      (-1, -2)
    """
    scheds = self if sched is None else sched
    if hasattr(scheds, '_schedulers'):
      for child in scheds._schedulers:
        self.recursive_undo(child)
    elif hasattr(scheds, 'last_epoch'):
      scheds.last_epoch -= 1

  def step(self) -> None:  # type: ignore[override]
    """Steps the scheduler of this epoch, restarting it at its epoch 0 on its milestone."""
    self.last_epoch += 1
    i = PYTHON.count_at_most(self._milestones, self.last_epoch)  # the running scheduler
    scheduler = self._schedulers[i]
    if i > 0 and self._milestones[i - 1] == self.last_epoch:
      scheduler._update_lr(0)
    else:
      scheduler.step()
    self._last_lr = scheduler.get_last_lr()
