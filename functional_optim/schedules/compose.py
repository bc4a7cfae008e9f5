"""Schedules made of schedules: ChainedScheduler and SequentialLR."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from functional_optim.schedules import checks, formulas
from functional_optim.schedules.base import TorchSchedule, as_epoch


def _check_schedules(schedules, owner: str) -> list[TorchSchedule]:
  schedules = list(schedules)
  checks.check_schedulers_given(owner, len(schedules))
  for i, schedule in enumerate(schedules):
    if not isinstance(schedule, TorchSchedule):
      raise TypeError(f'{owner} at index {i} should be a functional_optim.schedules '
                      f'schedule, but got {type(schedule).__name__}')
  return schedules


def chained(schedules: Sequence[TorchSchedule]) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.ChainedScheduler``: every schedule steps the same lr.

  torch steps each scheduler in turn on the shared lr. Schedules whose step
  multiplies the lr (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR,
  PolynomialLR, MultiplicativeLR, CosineAnnealingLR with ``eta_min=0``) compose
  as a product of their factors; a schedule that sets the lr from its base
  (LambdaLR, CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts) overrides the
  ones before it, and the ones after it apply their per-step factor on top.

  .. math:: \eta_e = \eta \prod_i f_i(e)

  Raises:
    ValueError: no schedules; a CosineAnnealingLR with ``eta_min > 0`` among
      several (torch's step for it is affine, with no closed form in a chain);
      multiplicative schedules with different base lrs and nothing that sets
      the lr.

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.chained([schedules.constant_lr(1.0, factor=0.5, total_iters=2),
    ...                        schedules.exponential_lr(1.0, gamma=0.9)])
    >>> [round(float(s(e)), 4) for e in range(5)]
    [0.5, 0.45, 0.81, 0.729, 0.6561]
  """
  schedules = _check_schedules(schedules, 'chained')
  if len(schedules) > 1:
    for i, schedule in enumerate(schedules):
      if not schedule.composable:
        raise ValueError(
            f'chained: the schedule at index {i} ({schedule!r}) steps the lr affinely '
            '(CosineAnnealingLR with eta_min > 0), which has no closed form in a '
            'chain; use eta_min=0, sequential_lr, or the stateful '
            'optim.lr_scheduler.ChainedScheduler')
  setters = [i for i, s in enumerate(schedules) if s.factor is None]
  if setters:
    last = setters[-1]
    head, tail = schedules[last], schedules[last + 1:]

    def value(e):
      lr = head._value(e)
      for schedule in tail:
        lr = lr * schedule.step_factor(e)
      return lr
    return TorchSchedule(value, head.base_lr, momentum=head.momentum, name='chained')

  base_lr = schedules[0].base_lr
  if any(s.base_lr != base_lr for s in schedules):
    raise ValueError('chained: the schedules drive one lr, so they need the same base '
                     f'lr; got {[s.base_lr for s in schedules]}')

  def factor(e):
    product = schedules[0].factor(e)
    for schedule in schedules[1:]:
      product = product * schedule.factor(e)
    return product
  return TorchSchedule(lambda e: base_lr * factor(e), base_lr, factor=factor,
                       name='chained')


def sequential_lr(schedules: Sequence[TorchSchedule], milestones: Sequence[int]) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.SequentialLR``: one schedule after another.

  Schedule ``i`` runs from ``milestones[i-1]`` on, restarted at its own epoch 0
  there as torch restarts it (its closed form from its base lr; a
  MultiplicativeLR continues from the lr the previous schedule reached):

  .. math:: \eta_e = S_i(e - m_{i-1}) \quad \text{for } m_{i-1} \le e < m_i,
     \quad m_{-1} = 0

  Raises:
    ValueError: no schedules, or ``len(milestones) != len(schedules) - 1``.

  Example:
    >>> from functional_optim import schedules
    >>> warmup = schedules.linear_lr(0.1, start_factor=0.1, total_iters=3)
    >>> decay = schedules.exponential_lr(0.1, gamma=0.5)
    >>> s = schedules.sequential_lr([warmup, decay], milestones=[3])
    >>> [round(float(s(e)), 4) for e in range(7)]
    [0.01, 0.04, 0.07, 0.1, 0.05, 0.025, 0.0125]
  """
  schedules = _check_schedules(schedules, 'sequential_lr')
  milestones = list(milestones)
  checks.check_sequential_milestones(len(schedules), len(milestones))

  def segment_value(i, e):
    if i == 0:
      return schedules[0]._value(e)
    start = milestones[i - 1]
    schedule = schedules[i]
    if schedule.resume is not None and start > 0:
      return schedule.resume(value(as_epoch(start - 1), segments=i), e - start)
    return schedule._value(e - start)

  def value(e, segments=len(schedules)):
    """The lr at ``e``, of the first ``segments`` schedules only (all by default)."""
    segment = formulas.JAX.count_at_most(milestones, e)
    lr = segment_value(segments - 1, e)
    for i in reversed(range(segments - 1)):
      lr = jnp.where(segment == i, segment_value(i, e), lr)
    return lr

  return TorchSchedule(value, schedules[0].base_lr, name='sequential_lr')
