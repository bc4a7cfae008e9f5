"""ReduceLROnPlateau: cut the lr when a metric stops improving."""

from __future__ import annotations

import warnings
from typing import Any, Literal, SupportsFloat

from functional_optim.optim.lr_scheduler._base import (
    EPOCH_DEPRECATION_WARNING, LRScheduler, check_optimizer, group_values)
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks, formulas
from functional_optim.schedules.formulas import PYTHON

__all__ = ['ReduceLROnPlateau']


class ReduceLROnPlateau(LRScheduler):
  r"""``torch.optim.lr_scheduler.ReduceLROnPlateau``: ``step(metric)`` multiplies the lrs by
  ``factor`` after more than ``patience`` steps without improvement.

  An improvement beats the best metric by more than ``threshold`` (relative or
  absolute, per ``threshold_mode``) in ``mode`` ``'min'`` or ``'max'``. After a cut,
  ``cooldown`` steps pass before bad steps count again. A group's lr never goes
  below its ``min_lr`` (one for all or a list), and a cut smaller than ``eps`` is
  skipped. Unlike the other schedulers it takes no step at construction. For
  ``mode='min'`` (``'max'`` mirrors it):

  .. math::
     \text{better}(x) &= x < \text{best}\,(1 - \tau) \ \text{(rel)}, \quad
       x < \text{best} - \tau \ \text{(abs)} \\
     \eta &\leftarrow \max(\eta f, \eta_{min}) \quad
       \text{after more than } p \text{ steps in a row that are not better}

  with :math:`\tau` = ``threshold``, :math:`f` = ``factor``, :math:`p` =
  ``patience``.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    >>> lrs = []
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]:
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step(loss)
    ...   lrs.append(sched.get_last_lr()[0])
    >>> lrs
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
  """

  def __init__(self, optimizer: Optimizer, mode: Literal['min', 'max'] = 'min',
               factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
               threshold_mode: Literal['rel', 'abs'] = 'rel', cooldown: int = 0,
               min_lr: list[float] | float = 0, eps: float = 1e-8) -> None:
    checks.check_plateau_factor(factor)
    self.factor = factor
    check_optimizer(optimizer)
    self.optimizer = optimizer
    groups = len(optimizer.param_groups)
    if isinstance(min_lr, (list, tuple)):
      if len(min_lr) != groups:
        raise ValueError(f'expected {groups} min_lrs, got {len(min_lr)}')
      self.default_min_lr = None
      self.min_lrs = list(min_lr)
    else:
      self.default_min_lr = min_lr
      self.min_lrs = [min_lr] * groups
    self.patience = patience
    self.cooldown = cooldown
    self.eps = eps
    self.last_epoch = 0
    self._last_lr = group_values(optimizer, 'lr')
    self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
    self._reset()

  def _reset(self) -> None:
    self.best = self.mode_worse
    self.cooldown_counter = 0
    self.num_bad_epochs = 0

  def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
    """Takes the epoch's metric (a number or a 0-d array)."""
    current = float(metrics)
    if epoch is None:
      epoch = self.last_epoch + 1
    else:
      warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
    self.last_epoch = epoch
    better = self._is_better(current, self.best)  # a subclass may override it, as torch's
    self.best, self.num_bad_epochs, self.cooldown_counter = formulas.plateau_count(
        PYTHON, better, current, self.best, self.num_bad_epochs, self.cooldown_counter)
    cut, num_bad_epochs, cooldown_counter = formulas.plateau_cut_decision(
        PYTHON, self.num_bad_epochs, self.cooldown_counter, patience=self.patience,
        cooldown=self.cooldown)
    if cut:
      self._reduce_lr()
    # Reset after the cut, as torch: a cut that raises leaves them counted, not reset.
    self.num_bad_epochs, self.cooldown_counter = num_bad_epochs, cooldown_counter
    self._last_lr = group_values(self.optimizer, 'lr')

  def _reduce_lr(self) -> None:
    groups = self.optimizer.param_groups
    if len(groups) != len(self.min_lrs):
      if self.default_min_lr is None:
        raise RuntimeError(
            f'The number of param groups in the `optimizer` ({len(groups)}) differs from '
            f'when `ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due '
            'to a new param group being added to the optimizer. Please modify the '
            '`min_lrs` field to match the length of the `optimizer` param groups.')
      self.min_lrs = [self.default_min_lr] * len(groups)
    for group, min_lr in zip(groups, self.min_lrs):
      new_lr, changed = formulas.plateau_reduced_lr(PYTHON, float(group['lr']), self.factor,
                                                    min_lr, self.eps)
      if changed:  # else the group keeps its lr as it is, not as a float
        group['lr'] = new_lr

  @property
  def in_cooldown(self) -> bool:
    """Whether a cut was fewer than ``cooldown`` steps ago (bad steps do not count).

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> sched = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, cooldown=2)
      >>> for loss in (1.0, 1.0):  # the second is no better: a cut
      ...   sched.step(loss)
      >>> sched.get_last_lr(), sched.in_cooldown
      ([0.1], True)
      >>> for loss in (1.0, 1.0):
      ...   sched.step(loss)
      >>> sched.get_last_lr(), sched.in_cooldown
      ([0.1], False)
    """
    return self.cooldown_counter > 0

  def _is_better(self, a: float, best: float) -> bool:
    return formulas.plateau_is_better(self.mode, self.threshold_mode, self.threshold, a, best)

  def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
    checks.check_plateau_modes(mode, threshold_mode)
    self.mode_worse = formulas.plateau_mode_worse(mode)
    self.mode = mode
    self.threshold = threshold
    self.threshold_mode = threshold_mode

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes saved by :meth:`state_dict` (ours or torch's).

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> sched = optim.lr_scheduler.ReduceLROnPlateau(opt, mode='max')
      >>> sched.step(0.5)
      >>> resumed = optim.lr_scheduler.ReduceLROnPlateau(opt)
      >>> resumed.load_state_dict(sched.state_dict())
      >>> resumed.mode, resumed.best, resumed.last_epoch
      ('max', 0.5, 1)
    """
    self.__dict__.update(state_dict)
    self._init_is_better(mode=self.mode, threshold=self.threshold,
                         threshold_mode=self.threshold_mode)
