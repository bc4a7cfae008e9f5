"""Cyclical schedulers: CyclicLR and OneCycleLR, which recompute the lr from its bounds
every step (the formulas are :mod:`functional_optim.schedules.formulas`'s, on Python
floats).

Both also cycle the momentum inversely to the lr: a group's ``momentum``, or the
first of its ``betas`` when the optimizer has ``betas``.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Literal

from functional_optim.optim.lr_scheduler._base import LRScheduler, check_optimizer, per_group
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks, formulas
from functional_optim.schedules.formulas import PYTHON

__all__ = ['CyclicLR', 'OneCycleLR']


def _uses_beta1(optimizer: Optimizer) -> bool:
  """Whether momentum cycling drives ``betas[0]`` (else ``momentum``)."""
  if 'momentum' not in optimizer.defaults and 'betas' not in optimizer.defaults:
    raise ValueError('optimizer must support momentum or beta1 with `cycle_momentum` '
                     'option enabled')
  return 'betas' in optimizer.defaults


def _start_momentum(optimizer: Optimizer, use_beta1: bool, max_momentums: list[Any],
                    base_momentums: list[Any]) -> None:
  """A fresh start: each group at its max momentum, with both bounds recorded."""
  for top, bottom, group in zip(max_momentums, base_momentums, optimizer.param_groups,
                                strict=True):
    _set_momentum(group, use_beta1, top)
    group['max_momentum'] = top
    group['base_momentum'] = bottom


def _set_momentum(group: dict[str, Any], use_beta1: bool, momentum: Any) -> None:
  if use_beta1:
    group['betas'] = (momentum, *group['betas'][1:])
  else:
    group['momentum'] = momentum


class CyclicLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.CyclicLR``: the lr cycles between ``base_lr`` and
  ``max_lr`` (``step_size_up`` steps up, ``step_size_down`` down), the amplitude
  scaled by ``mode`` or ``scale_fn``; step it after every batch.

  ``mode``: ``'triangular'`` (constant amplitude), ``'triangular2'`` (halved each
  cycle), ``'exp_range'`` (times ``gamma ** iteration``). A ``scale_fn(x)`` replaces
  the mode; ``scale_mode`` says whether ``x`` is the cycle number (from 1) or the
  iteration. With ``cycle_momentum`` the momentum goes from ``max_momentum`` down
  to ``base_momentum`` as the lr goes up. With :math:`u, d` the steps up and
  down and :math:`e` the iteration:

  .. math::
     c = \lfloor 1 + e/(u+d) \rfloor,\quad x = 1 + e/(u+d) - c,\quad
     h = x/r \ (x \le r),\ (x-1)/(r-1) \ (\text{else}),\quad r = u/(u+d) \\
     \eta_e = \eta_{base} + (\eta_{max} - \eta_{base})\, h\, \text{scale}(c \text{ or } e),
     \quad
     m_e = m_{max} - (m_{max} - m_{base})\, h\, \text{scale}(c \text{ or } e)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0, momentum=0.9)
    >>> sched = optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2)
    >>> lrs = []
    >>> for _ in range(5):
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs, round(opt.param_groups[0]['momentum'], 6)
    ([0.1, 0.3, 0.5, 0.3, 0.1], 0.85)
  """

  def __init__(self, optimizer: Optimizer, base_lr: float | list[float],
               max_lr: float | list[float], step_size_up: int = 2000,
               step_size_down: int | None = None,
               mode: Literal['triangular', 'triangular2', 'exp_range'] = 'triangular',
               gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None,
               scale_mode: Literal['cycle', 'iterations'] = 'cycle',
               cycle_momentum: bool = True, base_momentum: float = 0.8,
               max_momentum: float = 0.9, last_epoch: int = -1) -> None:
    check_optimizer(optimizer)
    self.optimizer = optimizer
    base_lrs = per_group('base_lr', optimizer, base_lr)
    if last_epoch == -1:
      for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
        group['lr'] = lr
    self.max_lrs = per_group('max_lr', optimizer, max_lr)
    self.total_size, self.step_ratio = formulas.cyclic_step_sizes(step_size_up,
                                                                  step_size_down)
    checks.check_cyclic_mode(mode, scale_fn)
    self.mode = mode
    self.gamma = gamma
    self._scale_fn_custom = scale_fn
    self.scale_mode = scale_mode
    self._init_scale_fn()
    self.cycle_momentum = cycle_momentum
    if cycle_momentum:
      self.use_beta1 = _uses_beta1(optimizer)
      self.base_momentums = per_group('base_momentum', optimizer, base_momentum)
      self.max_momentums = per_group('max_momentum', optimizer, max_momentum)
      if last_epoch == -1:
        _start_momentum(optimizer, self.use_beta1, self.max_momentums, self.base_momentums)
    super().__init__(optimizer, last_epoch)
    self.base_lrs = base_lrs

  def _init_scale_fn(self) -> None:
    # A mode's scale function is rebuilt from ``mode`` and ``gamma``, never saved.
    if self._scale_fn_custom is not None:
      return
    self._scale_fn_ref, self.scale_mode = formulas.cyclic_mode_scale(self.mode, self.gamma)

  def scale_fn(self, x: float) -> float:
    """The amplitude's scale at ``x`` (the cycle or the iteration, per ``scale_mode``).

    ``'triangular'``: 1; ``'triangular2'``: ``1 / 2 ** (x - 1)``; ``'exp_range'``:
    ``gamma ** x``; or the ``scale_fn`` given.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0, momentum=0.9)
      >>> sched = optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, mode='triangular2')
      >>> [sched.scale_fn(cycle) for cycle in (1, 2, 3)]
      [1.0, 0.5, 0.25]
    """
    if self._scale_fn_custom is not None:
      return self._scale_fn_custom(x)
    return self._scale_fn_ref(x)

  def get_lr(self) -> list[Any]:
    """The lrs of this step (the formula above); also sets the groups' momentum when
    ``cycle_momentum``. Called by :meth:`step`."""
    self._warn_if_outside_step()
    height, x = formulas.cyclic_position(PYTHON, self.last_epoch, self.total_size,
                                         self.step_ratio, self.scale_mode)
    lrs = [formulas.cyclic_lr_at(low, high, height, self.scale_fn(x))
           for low, high in zip(self.base_lrs, self.max_lrs, strict=True)]
    if self.cycle_momentum:
      momentums = [formulas.cyclic_momentum_at(low, high, height, self.scale_fn(x))
                   for low, high in zip(self.base_momentums, self.max_momentums, strict=True)]
      for group, momentum in zip(self.optimizer.param_groups, momentums, strict=True):
        _set_momentum(group, self.use_beta1, momentum)
    return lrs

  def state_dict(self) -> dict[str, Any]:
    """As torch: a custom ``scale_fn`` is saved as ``None`` (a function) or its
    ``__dict__`` (a callable object); a mode's scale function is not saved.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0, momentum=0.9)
      >>> sched = optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, scale_fn=lambda x: 0.5 ** x)
      >>> saved = sched.state_dict()
      >>> saved['_scale_fn_custom'], saved['max_lrs']
      (None, [1.0])
    """
    state = super().state_dict()
    state.pop('_scale_fn_ref', None)
    fn = state['_scale_fn_custom']
    state['_scale_fn_custom'] = (
        None if fn is None or isinstance(fn, types.FunctionType) else fn.__dict__.copy())
    return state

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes, a callable ``scale_fn``'s ``__dict__``, and the mode's
    scale function; ``state_dict`` is left as given.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> class Scale:
      ...   def __init__(self, base):
      ...     self.base = base
      ...   def __call__(self, x):
      ...     return self.base ** x
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0, momentum=0.9)
      >>> saved = optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, scale_fn=Scale(0.5)).state_dict()
      >>> scale = Scale(0.9)
      >>> sched = optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, scale_fn=scale)
      >>> sched.load_state_dict(saved)
      >>> scale.base, sched.scale_fn(2)
      (0.5, 0.25)
    """
    saved_fn = state_dict['_scale_fn_custom']
    super().load_state_dict({k: v for k, v in state_dict.items() if k != '_scale_fn_custom'})
    if saved_fn is not None:
      self._scale_fn_custom.__dict__.update(saved_fn)
    self._init_scale_fn()


class OneCycleLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.OneCycleLR``: the 1cycle policy, stepped after every batch.

  The lr anneals (``anneal_strategy`` ``'cos'`` or ``'linear'``) from
  ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of
  ``total_steps`` (or ``epochs * steps_per_epoch``), then down to
  ``initial_lr / final_div_factor``; ``three_phase`` comes back to the initial lr
  before the final descent. With ``cycle_momentum`` the momentum moves inversely,
  between ``max_momentum`` and ``base_momentum``. In two phases, with
  :math:`T` = ``total_steps`` and :math:`e_1 = \text{pct\_start} \cdot T - 1`:

  .. math::
     \eta_0 = \eta_{max} / \text{div\_factor}, \quad
     \eta_{min} = \eta_0 / \text{final\_div\_factor} \\
     \eta_e = a\big(\eta_0, \eta_{max}, e / e_1\big) \ (e \le e_1), \quad
     \eta_e = a\big(\eta_{max}, \eta_{min}, (e - e_1) / (T - 1 - e_1)\big) \ (e > e_1) \\
     a_{cos}(s, t, p) = t + \tfrac12(s - t)(1 + \cos \pi p), \quad
     a_{linear}(s, t, p) = s + (t - s)\,p

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.Adam({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5,
    ...                                      pct_start=0.4, anneal_strategy='linear')
    >>> lrs = []
    >>> for _ in range(4):
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs, opt.param_groups[0]['betas']
    ([0.04, 1.0, 0.666668, 0.333336], (0.95, 0.999))
  """

  def __init__(self, optimizer: Optimizer, max_lr: float | list[float],
               total_steps: int | None = None, epochs: int | None = None,
               steps_per_epoch: int | None = None, pct_start: float = 0.3,
               anneal_strategy: Literal['cos', 'linear'] = 'cos', cycle_momentum: bool = True,
               base_momentum: float | list[float] = 0.85,
               max_momentum: float | list[float] = 0.95, div_factor: float = 25.0,
               final_div_factor: float = 1e4, three_phase: bool = False,
               last_epoch: int = -1) -> None:
    check_optimizer(optimizer)
    self.optimizer = optimizer
    self.total_steps = checks.one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
    self._schedule_phases = self._phases(pct_start, three_phase)
    checks.check_one_cycle(pct_start, anneal_strategy)
    self._anneal_func_type = anneal_strategy
    max_lrs = per_group('max_lr', optimizer, max_lr)
    if last_epoch == -1:
      for peak, group in zip(max_lrs, optimizer.param_groups):
        initial_lr, min_lr = formulas.one_cycle_lr_bounds(peak, div_factor, final_div_factor)
        group['initial_lr'] = initial_lr
        group['max_lr'] = peak
        group['min_lr'] = min_lr
    self.cycle_momentum = cycle_momentum
    if cycle_momentum:
      self.use_beta1 = _uses_beta1(optimizer)
      max_momentums = per_group('max_momentum', optimizer, max_momentum)
      base_momentums = per_group('base_momentum', optimizer, base_momentum)
      if last_epoch == -1:
        _start_momentum(optimizer, self.use_beta1, max_momentums, base_momentums)
    super().__init__(optimizer, last_epoch)

  def _phases(self, pct_start: float, three_phase: bool) -> list[dict[str, Any]]:
    """torch's phase table: each phase's last step and the group keys holding its
    start and end lr and momentum."""
    ends = formulas.one_cycle_phase_ends(self.total_steps, pct_start, three_phase)
    lrs = formulas.one_cycle_phases(three_phase, 'initial_lr', 'max_lr', 'min_lr')
    momentums = formulas.one_cycle_phases(three_phase, 'max_momentum', 'base_momentum',
                                          'max_momentum')
    return [{'end_step': end, 'start_lr': lr[0], 'end_lr': lr[1],
             'start_momentum': momentum[0], 'end_momentum': momentum[1]}
            for end, lr, momentum in zip(ends, lrs, momentums)]

  def _anneal(self, group: dict[str, Any], quantity: str) -> Any:
    """The group's ``quantity`` (``'lr'`` or ``'momentum'``) at this step."""
    phases = self._schedule_phases
    values = [(group[p[f'start_{quantity}']], group[p[f'end_{quantity}']]) for p in phases]
    return formulas.one_cycle_value(PYTHON, self._anneal_func_type, self.last_epoch,
                                    [p['end_step'] for p in phases], values)

  def get_lr(self) -> list[Any]:
    """The lrs of this step (the formula above); also sets the groups' momentum when
    ``cycle_momentum``. Called by :meth:`step`; raises ``ValueError`` past
    ``total_steps``."""
    self._warn_if_outside_step()
    if self.last_epoch > self.total_steps:
      raise ValueError(f'Tried to step {self.last_epoch} times. The specified number of '
                       f'total steps is {self.total_steps}')
    lrs = []
    for group in self.optimizer.param_groups:
      lrs.append(self._anneal(group, 'lr'))
      if self.cycle_momentum:
        _set_momentum(group, self.use_beta1, self._anneal(group, 'momentum'))
    return lrs
