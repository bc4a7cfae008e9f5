"""torch's argument checks of its schedulers, shared by the pure schedules and the
facade's classes: same exception types, same messages, same order."""

from __future__ import annotations

from typing import Any


def check_lr_lambda(fn: Any) -> None:
  if not callable(fn):
    raise TypeError(f'lr_lambda should be a function, but got {type(fn).__name__}')


def check_constant_factor(factor: float) -> None:
  if factor > 1.0 or factor < 0:
    raise ValueError('Constant multiplicative factor expected to be between 0 and 1.')


def check_linear_factors(start_factor: float, end_factor: float) -> None:
  if start_factor > 1.0 or start_factor <= 0:
    raise ValueError('Starting multiplicative factor expected to be greater than 0 and '
                     'less or equal to 1.')
  if end_factor > 1.0 or end_factor < 0:
    raise ValueError('Ending multiplicative factor expected to be between 0 and 1.')


def check_warm_restarts(T_0: int, T_mult: int, eta_min: float) -> None:
  if T_0 <= 0 or not isinstance(T_0, int):
    raise ValueError(f'Expected positive integer T_0, but got {T_0}')
  if T_mult < 1 or not isinstance(T_mult, int):
    raise ValueError(f'Expected integer T_mult >= 1, but got {T_mult}')
  if not isinstance(eta_min, (float, int)):
    raise ValueError(f'Expected float or int eta_min, but got {eta_min} of type '
                     f'{type(eta_min)}')


def check_cyclic_mode(mode: str, scale_fn: Any) -> None:
  if mode not in ('triangular', 'triangular2', 'exp_range') and scale_fn is None:
    raise ValueError('mode is invalid and scale_fn is None')


def one_cycle_total_steps(total_steps: int | None, epochs: int | None,
                          steps_per_epoch: int | None) -> int:
  """OneCycleLR's step count: ``total_steps``, or ``epochs * steps_per_epoch``."""
  if total_steps is not None:
    if total_steps <= 0 or not isinstance(total_steps, int):
      raise ValueError(f'Expected positive integer total_steps, but got {total_steps}')
    return total_steps
  if epochs is not None and steps_per_epoch is not None:
    if not isinstance(epochs, int) or epochs <= 0:
      raise ValueError(f'Expected positive integer epochs, but got {epochs}')
    if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
      raise ValueError(f'Expected positive integer steps_per_epoch, but got {steps_per_epoch}')
    return epochs * steps_per_epoch
  raise ValueError('You must define either total_steps OR (epochs AND steps_per_epoch)')


def check_anneal_strategy(anneal_strategy: str) -> None:
  """OneCycleLR's and SWALR's anneals: ``'cos'`` or ``'linear'``."""
  if anneal_strategy not in ('cos', 'linear'):
    raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                     f'{anneal_strategy}')


def check_one_cycle(pct_start: float, anneal_strategy: str) -> None:
  if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
    raise ValueError(f'Expected float between 0 and 1 pct_start, but got {pct_start}')
  check_anneal_strategy(anneal_strategy)


def check_plateau_factor(factor: float) -> None:
  if factor >= 1.0:
    raise ValueError('Factor should be < 1.0.')


def check_plateau_modes(mode: str, threshold_mode: str) -> None:
  # ``+`` rather than an f-string: a mode that is not a str fails as in torch (TypeError).
  if mode not in {'min', 'max'}:
    raise ValueError('mode ' + mode + ' is unknown!')
  if threshold_mode not in {'rel', 'abs'}:
    raise ValueError('threshold mode ' + threshold_mode + ' is unknown!')


def check_schedulers_given(owner: str, count: int, what: str = '') -> None:
  """ChainedScheduler's (``what=' to be chained'``) and SequentialLR's check that
  they drive at least one scheduler."""
  if count < 1:
    raise ValueError(f'{owner} expects at least one scheduler{what}, but got no scheduler.')


def check_sequential_milestones(schedulers: int, milestones: int) -> None:
  """SequentialLR's check: one milestone between each two schedulers."""
  if milestones != schedulers - 1:
    raise ValueError(
        'Sequential Schedulers expects number of schedulers provided to be one more than '
        f'the number of milestone points, but got number of schedulers {schedulers} '
        f'and the number of milestones to be equal to {milestones}')


def check_divisor(value: Any, name: str, owner: str) -> None:
  """torch's scheduler raises ZeroDivisionError at its first step for a zero period;
  a pure schedule, which cannot raise under jit, raises when it is built."""
  if value == 0:
    raise ZeroDivisionError(f'{owner}: {name}=0 divides by zero (torch raises at its '
                            f'first step); give a positive {name}')
