"""torch's scheduler formulas, written once for Python floats and for traced JAX arrays.

Every function takes a namespace ``xp`` (:data:`PYTHON` or :data:`JAX`) for the
few operations that differ between the two, and otherwise uses plain operators in
torch's order of operations, so the torch-like classes in
``functional_optim.optim.lr_scheduler`` (Python floats, bit-identical to torch)
and the pure schedules in ``functional_optim.schedules`` (jnp, traced step
counts) compute the same expressions. A rule either side needs goes here, once.
"""

from __future__ import annotations

import bisect
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp


class Namespace(NamedTuple):
  """The operations a formula needs beyond ``+ - * / ** //``."""
  cos: Callable[[Any], Any]
  log: Callable[[Any], Any]
  floor: Callable[[Any], Any]
  minimum: Callable[[Any, Any], Any]
  maximum: Callable[[Any, Any], Any]
  # ``select(cond, if_true, if_false)`` takes thunks, so Python evaluates only the
  # branch torch takes (the other may divide by zero); JAX evaluates both.
  select: Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
  # How many entries of a sorted sequence are <= x (``bisect_right``).
  count_at_most: Callable[[Sequence[Any], Any], Any]
  # ``a / b`` rounded once. XLA turns a division by a constant into a
  # multiplication by its reciprocal (two roundings): where torch's quotient is
  # exactly 1, as ``min(T, e) / T`` from ``e = T`` on, that leaves ``1 - q`` at
  # 1e-17 instead of 0, and ``0 ** 0.5`` becomes 4e-9.
  divide: Callable[[Any, Any], Any]


PYTHON = Namespace(
    cos=math.cos,
    log=math.log,
    floor=math.floor,
    minimum=min,
    maximum=max,
    select=lambda cond, if_true, if_false: if_true() if cond else if_false(),
    count_at_most=bisect.bisect_right,
    divide=lambda a, b: a / b,
)

JAX = Namespace(
    cos=jnp.cos,
    log=jnp.log,
    floor=jnp.floor,
    minimum=jnp.minimum,
    maximum=jnp.maximum,
    select=lambda cond, if_true, if_false: jnp.where(cond, if_true(), if_false()),
    count_at_most=lambda values, x: _traced_bisect_right(values, x),
    divide=lambda a, b: a / jax.lax.optimization_barrier(jnp.asarray(b, jnp.result_type(a))),
)


def _traced_bisect_right(values: Sequence[Any], x):
  """``bisect.bisect_right`` of a static sequence at a traced ``x``, step for
  step, so an unsorted sequence gives what Python's bisect gives."""
  table = jnp.asarray(values if len(values) else [0])
  lo, hi = jnp.zeros_like(x, jnp.int32), jnp.full_like(x, len(values), jnp.int32)
  for _ in range(len(values).bit_length()):
    mid = (lo + hi) // 2
    searching, below = lo < hi, x < table[jnp.minimum(mid, len(values) - 1)]
    hi = jnp.where(searching & below, mid, hi)
    lo = jnp.where(searching & ~below, mid + 1, lo)
  return lo


# ----------------------------------------------------------------------------
# Closed forms (torch's ``_get_closed_form_lr``): the lr at epoch ``e`` from the
# base lr ``base``.


def step_lr(xp: Namespace, base, e, step_size, gamma):
  del xp
  return base * gamma ** (e // step_size)


def multi_step_lr(xp: Namespace, base, e, milestones: Sequence[int], gamma):
  """``milestones`` sorted, a repeated milestone listed once per repeat."""
  return base * gamma ** xp.count_at_most(milestones, e)


def constant_lr(xp: Namespace, base, e, factor, total_iters):
  del xp
  return base * (factor + (e >= total_iters) * (1 - factor))


def linear_lr(xp: Namespace, base, e, start_factor, end_factor, total_iters):
  return base * (start_factor + xp.divide((end_factor - start_factor)
                                          * xp.minimum(total_iters, e), total_iters))


def exponential_lr(xp: Namespace, base, e, gamma):
  del xp
  return base * gamma ** e


def polynomial_lr(xp: Namespace, base, e, total_iters, power):
  return base * (1.0 - xp.divide(xp.minimum(total_iters, e), total_iters)) ** power


def cosine_annealing_lr(xp: Namespace, base, e, T_max, eta_min):
  return eta_min + (base - eta_min) * (1 + xp.cos(math.pi * e / T_max)) / 2


# ----------------------------------------------------------------------------
# Schedules torch computes from the base lr at every step (no recursion).


def warm_restart_period(xp: Namespace, e, T_0: int, T_mult: int, *, settle: bool):
  """CosineAnnealingWarmRestarts's ``(T_cur, T_i)`` at epoch ``e``: the epochs since
  the current period started, and its length. Its lr is then
  :func:`cosine_annealing_lr` at ``T_cur`` with ``T_max = T_i``.

  Period ``n`` (from 0) lasts ``T_0 * T_mult ** n`` epochs and starts once those
  before it have passed, at ``T_0 * (T_mult ** n - 1) / (T_mult - 1)``, so ``n`` is
  a logarithm, which can land an ulp below an integer: at epoch 121 with
  ``T_0=1, T_mult=3``, ``log(243, 3)`` is ``4.999999999999999``.

  Args:
    xp: :data:`PYTHON` or :data:`JAX`.
    e: the epoch, ``>= 0`` (torch's ``step(epoch)`` comes here only from ``T_0`` on).
    T_0: the first period.
    T_mult: how many times longer each period is than the one before.
    settle: move ``n`` to the period ``e`` lies in. torch's ``step()``, which
      counts the epochs one by one, restarts at epoch 121 above (``T_cur = 0``,
      ``T_i = 243``: the base lr), while its ``step(121)`` truncates the logarithm
      and lands at the end of period 4 (``T_cur = T_i = 81``: ``eta_min``). The
      pure schedules give the lr after ``e`` calls of ``step()`` (``True``); the
      facade's ``step(epoch)`` gives torch's ``step(epoch)`` (``False``).
  """
  if T_mult == 1:
    return e % T_0, T_0
  start = lambda n: T_0 * (T_mult ** n - 1) / (T_mult - 1)  # first epoch of period n
  # torch's math.log(x, T_mult), which CPython computes as log(x) / log(T_mult).
  n = xp.floor(xp.log(e / T_0 * (T_mult - 1) + 1) / xp.log(float(T_mult)))
  if settle:  # The logarithm can land an ulp either side of an integer.
    n = xp.select(start(n + 1) <= e, lambda: n + 1,
                  lambda: xp.select(start(n) > e, lambda: n - 1, lambda: n))
  return e - start(n), T_0 * T_mult ** n


def cyclic_step_sizes(step_size_up, step_size_down) -> tuple[float, float]:
  """CyclicLR's ``(total_size, step_ratio)``: a cycle's length, and the part of it
  spent going up (``step_size_down=None`` goes down as fast as up)."""
  up = float(step_size_up)
  down = float(step_size_down) if step_size_down is not None else up
  total_size = up + down
  return total_size, up / total_size


def cyclic_position(xp: Namespace, e, total_size, step_ratio, scale_mode: str):
  """CyclicLR's ``(height, x)`` at iteration ``e``: where in its cycle (0 at the
  base, 1 at the peak), and the scale function's argument: the cycle number (from
  1) for ``scale_mode='cycle'``, else ``e``."""
  cycle = xp.floor(1 + e / total_size)
  x = 1.0 + e / total_size - cycle
  height = xp.select(x <= step_ratio, lambda: x / step_ratio,
                     lambda: (x - 1) / (step_ratio - 1))
  return height, cycle if scale_mode == 'cycle' else e


def triangular_scale(x):
  del x
  return 1.0


def triangular2_scale(x):
  return 1 / (2.0 ** (x - 1))


def exp_range_scale(gamma, x):
  return gamma ** x


def cyclic_mode_scale(mode: str, gamma) -> tuple[Callable[[Any], Any], str]:
  """A CyclicLR ``mode``'s ``(scale_fn, scale_mode)``: ``'triangular'`` keeps the
  amplitude, ``'triangular2'`` halves it each cycle, ``'exp_range'`` scales it by
  ``gamma ** iteration``."""
  return {
      'triangular': (triangular_scale, 'cycle'),
      'triangular2': (triangular2_scale, 'cycle'),
      'exp_range': (functools.partial(exp_range_scale, gamma), 'iterations'),
  }[mode]


def cyclic_lr_at(base_lr, max_lr, height, scale):
  """CyclicLR's lr: up from ``base_lr`` by ``height`` of the scaled amplitude."""
  return base_lr + (max_lr - base_lr) * height * scale


def cyclic_momentum_at(base_momentum, max_momentum, height, scale):
  """CyclicLR's momentum: down from ``max_momentum`` as the lr goes up."""
  return max_momentum - (max_momentum - base_momentum) * height * scale


def one_cycle_lr_bounds(max_lr, div_factor, final_div_factor):
  """OneCycleLR's ``(initial_lr, min_lr)``: where it starts and where it ends."""
  initial_lr = max_lr / div_factor
  return initial_lr, initial_lr / final_div_factor


def one_cycle_anneal(xp: Namespace, strategy: str, start, end, pct):
  """OneCycleLR's anneal from ``start`` (pct 0) to ``end`` (pct 1)."""
  if strategy == 'cos':
    return end + (start - end) / 2.0 * (xp.cos(math.pi * pct) + 1)
  return (end - start) * pct + start


def one_cycle_phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
  """The last step of each OneCycleLR phase, as torch computes them."""
  if three_phase:
    return [float(pct_start * total_steps) - 1, float(2 * pct_start * total_steps) - 2,
            total_steps - 1]
  return [float(pct_start * total_steps) - 1, total_steps - 1]


def one_cycle_value(xp: Namespace, strategy: str, step, ends: Sequence[float],
                    values: Sequence[tuple[Any, Any]]):
  """OneCycleLR at ``step``: the first phase with ``step <= end`` (else the last)
  anneals from its start value to its end value; ``values[i] = (start, end)``."""
  def phase(i, start_step=0.0):
    pct = (step - start_step) / (ends[i] - start_step)
    here = lambda: one_cycle_anneal(xp, strategy, values[i][0], values[i][1], pct)
    if i == len(ends) - 1:
      return here()
    return xp.select(step <= ends[i], here, lambda: phase(i + 1, ends[i]))
  return phase(0)


def one_cycle_phases(three_phase: bool, start, peak, end) -> list[tuple[Any, Any]]:
  """OneCycleLR's ``(start, end)`` per phase: up to the peak, then down to the end
  (with three phases, back to the start before the end).

  lr: ``start, peak, end = initial_lr, max_lr, min_lr``; momentum:
  ``max_momentum, base_momentum, max_momentum``.
  """
  if three_phase:
    return [(start, peak), (peak, start), (start, end)]
  return [(start, peak), (peak, end)]


# ----------------------------------------------------------------------------
# ReduceLROnPlateau.


def plateau_mode_worse(mode: str) -> float:
  """The best metric before the first: the worst there is in ``mode``."""
  return math.inf if mode == 'min' else -math.inf


def plateau_is_better(mode: str, threshold_mode: str, threshold, a, best):
  """Whether metric ``a`` improves on ``best`` by more than the threshold."""
  if mode == 'min' and threshold_mode == 'rel':
    return a < best * (1.0 - threshold)
  if mode == 'min':
    return a < best - threshold
  if threshold_mode == 'rel':
    return a > best * (threshold + 1.0)
  return a > best + threshold


def plateau_count(xp: Namespace, better, current, best, num_bad_epochs, cooldown_counter):
  """ReduceLROnPlateau's ``(best, num_bad_epochs, cooldown_counter)`` after metric
  ``current``, before any cut: an improvement (``better``, from
  :func:`plateau_is_better`) becomes the best and resets the count of bad epochs,
  and during a cooldown the counter runs down and bad epochs do not count."""
  best = xp.select(better, lambda: current, lambda: best)
  num_bad_epochs = xp.select(better, lambda: 0, lambda: num_bad_epochs + 1)
  in_cooldown = cooldown_counter > 0
  cooldown_counter = xp.select(in_cooldown, lambda: cooldown_counter - 1,
                               lambda: cooldown_counter)
  num_bad_epochs = xp.select(in_cooldown, lambda: 0, lambda: num_bad_epochs)
  return best, num_bad_epochs, cooldown_counter


def plateau_cut_decision(xp: Namespace, num_bad_epochs, cooldown_counter, *, patience,
                         cooldown):
  """``(cut, num_bad_epochs, cooldown_counter)``: whether to cut the lrs (more than
  ``patience`` bad epochs), and the counters after it: a cut starts a cooldown and
  a new count. torch sets them after the cut, which may raise."""
  cut = num_bad_epochs > patience
  return (cut, xp.select(cut, lambda: 0, lambda: num_bad_epochs),
          xp.select(cut, lambda: cooldown, lambda: cooldown_counter))


def plateau_reduced_lr(xp: Namespace, lr, factor, min_lr, eps):
  """``(new_lr, changed)``: one group's cut lr, ``max(lr * factor, min_lr)``, and
  whether torch applies it (it changes the lr by more than ``eps``)."""
  new_lr = xp.maximum(lr * factor, min_lr)
  return new_lr, lr - new_lr > eps


# ----------------------------------------------------------------------------
# SWALR.


def swa_anneal_step(xp: Namespace, step, anneal_epochs: int):
  """The step SWALR's anneal is at: with ``anneal_epochs=0`` the anneal is over
  from the start (torch counts that step as 1)."""
  return xp.maximum(1, step) if anneal_epochs == 0 else step


def swa_alpha(xp: Namespace, strategy: str, step, anneal_epochs: int):
  """How far SWALR's anneal is at ``step``: 0 at the start, 1 from ``anneal_epochs`` on."""
  t = xp.maximum(0, xp.minimum(1, step / max(1, anneal_epochs)))
  if strategy == 'cos':
    return (1 - xp.cos(math.pi * t)) / 2
  return t


def swa_initial_lr(xp: Namespace, lr, swa_lr, alpha):
  """The lr SWALR started from, recovered from the current ``lr`` at ``alpha``."""
  return xp.select(alpha == 1, lambda: swa_lr, lambda: (lr - alpha * swa_lr) / (1 - alpha))


def swa_lr_at(swa_lr, initial_lr, alpha):
  """SWALR's lr: ``initial_lr`` annealed towards ``swa_lr`` by ``alpha``."""
  return swa_lr * alpha + initial_lr * (1 - alpha)
