"""Cyclical schedules: CyclicLR and OneCycleLR, with their momentum cycles."""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from functional_optim.schedules import checks, formulas
from functional_optim.schedules.base import TorchSchedule, as_epoch


def cyclic_lr(base_lr: float, max_lr: float, step_size_up: int = 2000,
              step_size_down: int | None = None, mode: str = 'triangular',
              gamma: float = 1.0, scale_fn: Callable[[jax.Array], jax.Array] | None = None,
              scale_mode: str = 'cycle', cycle_momentum: bool = True,
              base_momentum: float = 0.8, max_momentum: float = 0.9) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.CyclicLR``: the lr cycles between two bounds.

  Each cycle rises from ``base_lr`` to ``max_lr`` over ``step_size_up`` steps and
  falls back over ``step_size_down`` (default: the same), with the amplitude
  scaled by ``mode``: ``'triangular'`` (constant), ``'triangular2'`` (halved each
  cycle), ``'exp_range'`` (``gamma ** step``), or a custom ``scale_fn`` of the
  cycle number (``scale_mode='cycle'``) or of the step (``'iterations'``),
  written with ``jnp`` operations.

  .. math::
     c = \lfloor 1 + e/(u+d) \rfloor,\quad x = 1 + e/(u+d) - c,\quad
     h = x/r \ (x \le r),\ (x-1)/(r-1) \ (\text{else}),\quad r = u/(u+d) \\
     \eta_e = \eta_{base} + (\eta_{max} - \eta_{base})\, h\, \text{scale}(c \text{ or } e)

  ``.momentum`` is the momentum schedule torch cycles inversely, from
  ``max_momentum`` down to ``base_momentum`` (``None`` if ``cycle_momentum`` is
  False): pass it as SGD's ``momentum`` or as the first of Adam's ``betas``.

  Raises:
    ValueError: an unknown ``mode`` without a ``scale_fn``.

  Example:
    >>> import functional_optim as fo
    >>> s = fo.schedules.cyclic_lr(0.1, 1.0, step_size_up=2)
    >>> [round(float(s(e)), 4) for e in range(5)]
    [0.1, 0.55, 1.0, 0.55, 0.1]
    >>> tx = fo.sgd(lr=s, momentum=s.momentum)
  """
  total_size, step_ratio = formulas.cyclic_step_sizes(step_size_up, step_size_down)
  checks.check_cyclic_mode(mode, scale_fn)
  if scale_fn is None:
    scale_fn, scale_mode = formulas.cyclic_mode_scale(mode, gamma)

  def scaled_height(e):
    height, x = formulas.cyclic_position(formulas.JAX, e, total_size, step_ratio, scale_mode)
    return height, scale_fn(x)

  def value(e):
    return formulas.cyclic_lr_at(base_lr, max_lr, *scaled_height(e))

  def momentum(count):
    return formulas.cyclic_momentum_at(base_momentum, max_momentum,
                                       *scaled_height(as_epoch(count)))

  return TorchSchedule(value, base_lr, momentum=momentum if cycle_momentum else None,
                       name='cyclic_lr')


def one_cycle_lr(max_lr: float, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = 'cos', cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.OneCycleLR``: the 1cycle policy.

  The lr anneals from ``max_lr / div_factor`` up to ``max_lr`` over the first
  ``pct_start`` of the ``total_steps`` (or ``epochs * steps_per_epoch``), then
  down to ``max_lr / div_factor / final_div_factor``; with ``three_phase`` it
  first comes back to the initial lr, symmetrically, before the final descent.
  Anneals are ``'cos'`` (:math:`e + (s - e)(1 + \cos \pi p)/2`) or ``'linear'``.
  ``.momentum`` anneals inversely between ``max_momentum`` and
  ``base_momentum`` (``None`` if ``cycle_momentum`` is False).

  torch computes one value past the last step (at ``total_steps``, where its
  annealing overshoots: a cosine goes back up, to ``5e-5`` after a final ``4e-7``)
  and raises at the next. A traced schedule cannot raise, so from the last step
  (``total_steps - 1``) on it holds the final value: training on past the
  schedule keeps its final lr.

  Raises:
    ValueError: neither ``total_steps`` nor both ``epochs`` and
      ``steps_per_epoch`` (positive ints), ``pct_start`` not a float in [0, 1],
      an unknown ``anneal_strategy``.

  Example:
    >>> import functional_optim as fo
    >>> s = fo.schedules.one_cycle_lr(1.0, total_steps=10, anneal_strategy='linear')
    >>> [round(float(s(e)), 4) for e in (0, 2, 9)]
    [0.04, 1.0, 0.0]
    >>> tx = fo.adam(lr=s, betas=(s.momentum, 0.999))
  """
  total_steps = checks.one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
  checks.check_one_cycle(pct_start, anneal_strategy)

  ends = formulas.one_cycle_phase_ends(total_steps, pct_start, three_phase)
  initial_lr, min_lr = formulas.one_cycle_lr_bounds(max_lr, div_factor, final_div_factor)
  lr_phases = formulas.one_cycle_phases(three_phase, initial_lr, max_lr, min_lr)
  momentum_phases = formulas.one_cycle_phases(three_phase, max_momentum, base_momentum,
                                              max_momentum)

  def along(phases, e):
    # Past its last step the schedule holds its final value (see the docstring).
    return formulas.one_cycle_value(formulas.JAX, anneal_strategy,
                                    jnp.minimum(e, total_steps - 1), ends, phases)

  def momentum(count):
    return along(momentum_phases, as_epoch(count))

  return TorchSchedule(partial(along, lr_phases), initial_lr,
                       momentum=momentum if cycle_momentum else None,
                       name='one_cycle_lr')
