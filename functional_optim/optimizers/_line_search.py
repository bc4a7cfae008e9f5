r"""torch's strong-Wolfe line search and its cubic interpolation, under ``jax.jit``.

This is the search ``torch.optim.LBFGS(line_search_fn='strong_wolfe')`` runs
(``torch.optim.lbfgs._strong_wolfe``, itself a port of minFunc/``lswolfe.lua``),
rewritten as one ``lax.while_loop`` with a single evaluation of the objective per
iteration: the program holds one copy of the objective, and every decision torch
takes in Python is taken on device with the same comparisons in the same order.

Along the ray :math:`\phi(t) = f(x + t d)`, with :math:`f_0 = f(x)` and
:math:`\phi'(0) = g_0^\top d < 0`, a step ``t`` is accepted when it satisfies the
strong Wolfe conditions

.. math::
   \phi(t) \le f_0 + c_1 t\, \phi'(0) \quad\text{(Armijo)}, \qquad
   |\phi'(t)| \le -c_2\, \phi'(0) \quad\text{(curvature)}

with ``c1 = 1e-4`` and ``c2 = 0.9``. The search has two phases:

* **bracketing**: from the initial ``t``, extrapolate with a cubic (bounded to
  ``[t + 0.01 (t - t_prev), 10 t]``) until a step fails Armijo or is no lower
  than the previous one (bracket ``[t_prev, t]``), satisfies both conditions
  (done, ``[t]``), or goes uphill (``[t_prev, t]``);
* **zoom**: shrink the bracket by cubic interpolation, moved ``0.1 ×`` the
  bracket length away from an end when it lands too close to it twice in a row
  (or outside it), until the conditions hold, the bracket is shorter than
  ``tolerance_change / max|d|``, or the evaluations run out.

``max_ls`` bounds the evaluations after the first; when the bracketing phase
uses them all, the bracket is ``[0, t]``. The result is the bracket's end with the
lower value (the first end on a tie) and the number of evaluations made.

Run op by op (``jax.disable_jit``) it reproduces torch's numbers bit for bit in
float64, Python-float-versus-tensor roundings included (see
:func:`cubic_interpolate`). Compiled, XLA may fuse ``a * b + c`` into one
rounding (an FMA), so a compiled search can differ from torch's in the last
bits of its scalars.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_optim.core.numerics import python_max, python_min

#: Sufficient-decrease (Armijo) constant, as torch passes it.
C1 = 1e-4
#: Curvature constant, as torch passes it.
C2 = 0.9
#: The search's own bracket tolerance; torch never passes the optimizer's.
TOLERANCE_CHANGE = 1e-9


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None, *, tensors=None):
  r"""Minimizer of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``.

  With :math:`d_1 = g_1 + g_2 - 3\frac{f_1 - f_2}{x_1 - x_2}` and
  :math:`d_2 = \sqrt{d_1^2 - g_1 g_2}` (for :math:`x_1 \le x_2`, else mirrored),

  .. math::
     x^* = x_2 - (x_2 - x_1)\frac{g_2 + d_2 - d_1}{g_2 - g_1 + 2 d_2}

  clamped to ``bounds`` (default: the interval between ``x1`` and ``x2``); the
  midpoint of the bounds when the cubic has no real minimizer
  (:math:`d_1^2 - g_1 g_2 < 0`, or NaN). Operations in torch's order.

  ``tensors`` reproduces one rounding of torch that depends on Python types. In
  torch the positions are sometimes Python floats (an ``lr``, the 0 of the
  bracket) and sometimes 0-d tensors (the result of an earlier interpolation),
  and ``float / tensor`` is evaluated as ``tensor.reciprocal() * float``. Give
  ``tensors=(x1, x2, lo, hi)`` as booleans ("is a tensor in torch") to get that
  rounding and, as the second result, whether torch's result is a tensor.
  Without it every position counts as a Python float and one value is returned.

  Example:
    >>> from functional_optim.optimizers._line_search import cubic_interpolate
    >>> # f(x) = (x - 1)**2 sampled at 0 and 3: the minimizer is 1.
    >>> float(cubic_interpolate(0.0, 1.0, -2.0, 3.0, 4.0, 4.0))
    1.0
  """
  flags = (False, False, False, False) if tensors is None else tensors
  x1_t, x2_t = flags[0], flags[1]
  if bounds is None:
    ordered = x1 <= x2
    lo, hi = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
    lo_t, hi_t = jnp.where(ordered, x1_t, x2_t), jnp.where(ordered, x2_t, x1_t)
  else:
    (lo, hi), (lo_t, hi_t) = bounds, flags[2:]
  numerator = 3 * (f1 - f2)
  gap = x1 - x2
  secant = jnp.where(jnp.logical_or(x1_t, x2_t), (1.0 / gap) * numerator, numerator / gap)
  d1 = g1 + g2 - secant
  d2_square = d1 ** 2 - g1 * g2
  real = d2_square >= 0
  d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
  min_pos = jnp.where(
      x1 <= x2,
      x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
      x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)))
  # Python's min(max(min_pos, lo), hi) returns one of its arguments, type and all.
  raised = lo > min_pos
  clamped, clamped_t = jnp.where(raised, lo, min_pos), jnp.where(raised, lo_t, True)
  lowered = hi < clamped
  clamped, clamped_t = jnp.where(lowered, hi, clamped), jnp.where(lowered, hi_t, clamped_t)
  value = jnp.where(real, clamped, (lo + hi) / 2.0)
  if tensors is None:
    return value
  return value, jnp.where(real, clamped_t, jnp.logical_or(lo_t, hi_t))


class _Search(NamedTuple):
  """The loop carry. Slot 0/1 of ``bracket*`` hold, while bracketing, the
  previous and the newest point; while zooming, the two ends of the bracket.
  The ``*_tensor`` flags say whether torch holds that step as a 0-d tensor
  rather than a Python float (see :func:`cubic_interpolate`)."""
  zooming: jax.Array
  finished: jax.Array
  t: jax.Array               # the next step to try while bracketing
  t_tensor: jax.Array
  bracket: jax.Array         # (2,) steps
  bracket_tensor: jax.Array  # (2,) bool
  bracket_f: jax.Array       # (2,) values
  bracket_g: jax.Array       # (2, n) gradients
  bracket_gtd: jax.Array     # (2,) directional derivatives
  low: jax.Array             # which slot holds the lower value (zoom)
  insuf_progress: jax.Array
  done: jax.Array            # the strong Wolfe conditions hold at bracket[low]
  evals: jax.Array


def strong_wolfe(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    t: jax.Array,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: jax.Array | int = 25,
    *,
    t_is_tensor: jax.Array | bool = False,
    c1: float = C1,
    c2: float = C2,
    tolerance_change: float = TOLERANCE_CHANGE,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """torch's ``_strong_wolfe`` as one ``lax.while_loop``.

  Args:
    evaluate: ``t -> (f(x + t d), ∇f(x + t d))``, the gradient flat.
    t: the initial step.
    d: the search direction (flat).
    f, g, gtd: value, flat gradient and ``gᵀd`` at ``t = 0``.
    max_ls: evaluations allowed after the first (traced or static). torch's
      LBFGS passes ``max_eval`` minus the evaluations its step has made.
    t_is_tensor: whether torch's initial ``t`` is a 0-d tensor (only on LBFGS's
      first iteration, when ``1/‖g‖₁ < 1``); it decides one rounding in the
      interpolation (see :func:`cubic_interpolate`).
    c1, c2, tolerance_change: torch's constants (see the module docstring).

  Returns:
    ``(f_new, g_new, t, evals)``: value, gradient and step of the accepted
    point and the number of evaluations made (at least 1).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.optimizers._line_search import strong_wolfe
    >>> fn = lambda x: jnp.sum((x - 3.0) ** 2)
    >>> x, d = jnp.zeros(2), jnp.ones(2)
    >>> g = jax.grad(fn)(x)
    >>> # t = 10 overshoots; the cubic through t = 0 and t = 10 is exact.
    >>> f_new, _, t, evals = strong_wolfe(
    ...     lambda t: jax.value_and_grad(fn)(x + t * d), 10.0, d, fn(x), g, g @ d)
    >>> float(t), float(f_new), int(evals)
    (3.0, 0.0, 2)
  """
  dtype = jnp.result_type(f)
  t = jnp.asarray(t, dtype)
  f = jnp.asarray(f, dtype)
  gtd = jnp.asarray(gtd, dtype)
  d_norm = jnp.max(jnp.abs(d))
  zero = jnp.zeros([], dtype)
  false = jnp.zeros([], bool)
  pair = lambda a, b, dt=dtype: jnp.stack([jnp.asarray(a, dt), jnp.asarray(b, dt)])
  start = _Search(
      zooming=false, finished=false, t=t, t_tensor=jnp.asarray(t_is_tensor, bool),
      # Slot 0 is the "previous" point of the bracketing phase: torch's int 0.
      bracket=pair(zero, zero), bracket_tensor=pair(False, False, bool),
      bracket_f=pair(f, f), bracket_g=jnp.stack([g, g]), bracket_gtd=pair(gtd, gtd),
      low=jnp.zeros([], jnp.int32), insuf_progress=false, done=false,
      evals=jnp.zeros([], jnp.int32))

  def armijo_fails(t_new, f_new):
    return f_new > (f + c1 * t_new * gtd)

  def curvature_holds(gtd_new):
    return jnp.abs(gtd_new) <= -c2 * gtd

  def zoom_trial(s: _Search):
    b, bt, bf, bgtd = s.bracket, s.bracket_tensor, s.bracket_f, s.bracket_gtd
    t_new, t_tensor = cubic_interpolate(b[0], bf[0], bgtd[0], b[1], bf[1], bgtd[1],
                                        tensors=(bt[0], bt[1]))
    b_max, b_min = python_max(b[0], b[1]), python_min(b[0], b[1])
    eps = 0.1 * (b_max - b_min)
    near_end = python_min(b_max - t_new, t_new - b_min) < eps
    # Close to an end twice in a row, or at/outside it: step 0.1·len inside.
    move = s.insuf_progress | (t_new >= b_max) | (t_new <= b_min)
    moved = jnp.where(jnp.abs(t_new - b_max) < jnp.abs(t_new - b_min),
                      b_max - eps, b_min + eps)
    shift = near_end & move
    return (jnp.where(shift, moved, t_new), jnp.where(shift, bt[0] | bt[1], t_tensor),
            near_end & ~move)

  def bracket_phase(s: _Search, new, ls_iter):
    t_new, t_tensor, f_new, g_new, gtd_new = new
    t_prev, f_prev, gtd_prev = s.bracket[0], s.bracket_f[0], s.bracket_gtd[0]
    prev_tensor = s.bracket_tensor[0]
    # torch's rules, first match wins; `exhausted` is its loop condition.
    exhausted = ~(ls_iter < max_ls)
    high = armijo_fails(t_new, f_new) | ((ls_iter > 1) & (f_new >= f_prev))
    satisfied = ~exhausted & ~high & curvature_holds(gtd_new)
    uphill = gtd_new >= 0
    extrapolate = ~exhausted & ~high & ~satisfied & ~uphill
    zooming = ~satisfied & ~extrapolate

    t_next, t_next_tensor = cubic_interpolate(
        t_prev, f_prev, gtd_prev, t_new, f_new, gtd_new,
        bounds=(t_new + 0.01 * (t_new - t_prev), t_new * 10),
        tensors=(prev_tensor, t_tensor, t_tensor | prev_tensor, t_tensor))
    # Slot 1 is the newest point. Slot 0: unchanged for [prev, new]; the new
    # point when it is accepted ([t]) or becomes the previous one; t = 0 when
    # the evaluations ran out ([0, t]).
    new_in_0 = satisfied | extrapolate
    def slot0(old, at_new, at_zero):
      return jnp.where(exhausted, at_zero, jnp.where(new_in_0, at_new, old))
    return s._replace(
        zooming=zooming, t=t_next, t_tensor=t_next_tensor,
        bracket=pair(slot0(t_prev, t_new, zero), t_new),
        bracket_tensor=pair(slot0(prev_tensor, t_tensor, False), t_tensor, bool),
        bracket_f=pair(slot0(f_prev, f_new, f), f_new),
        bracket_g=jnp.stack([slot0(s.bracket_g[0], g_new, g), g_new]),
        bracket_gtd=pair(slot0(gtd_prev, gtd_new, gtd), gtd_new),
        low=jnp.where(satisfied | (slot0(f_prev, f_new, f) <= f_new), 0, 1).astype(jnp.int32),
        done=satisfied)

  def zoom_phase(s: _Search, new, ls_iter):
    del ls_iter
    t_new, t_tensor, f_new, g_new, gtd_new = new
    low = s.low
    high = 1 - low
    b, bf = s.bracket, s.bracket_f
    replaces_high = armijo_fails(t_new, f_new) | (f_new >= bf[low])
    done = ~replaces_high & curvature_holds(gtd_new)
    # The old low becomes the high end when the new point's slope points at it.
    flip = ~replaces_high & ~done & (gtd_new * (b[high] - b[low]) >= 0)
    def update(slots, value):
      at_high = jnp.where(replaces_high, value, jnp.where(flip, slots[low], slots[high]))
      at_low = jnp.where(replaces_high, slots[low], value)
      return slots.at[high].set(at_high).at[low].set(at_low)
    bracket_f = update(bf, f_new)
    low = jnp.where(replaces_high,
                    jnp.where(bracket_f[0] <= bracket_f[1], 0, 1).astype(jnp.int32), low)
    return s._replace(
        bracket=update(b, t_new), bracket_tensor=update(s.bracket_tensor, t_tensor),
        bracket_f=bracket_f, bracket_g=update(s.bracket_g, g_new),
        bracket_gtd=update(s.bracket_gtd, gtd_new), low=low, done=done)

  def body(s: _Search) -> _Search:
    t_zoom, t_zoom_tensor, insuf_progress = zoom_trial(s)
    t_new = jnp.where(s.zooming, t_zoom, s.t)
    t_tensor = jnp.where(s.zooming, t_zoom_tensor, s.t_tensor)
    f_new, g_new = evaluate(t_new)
    f_new = jnp.asarray(f_new, dtype).reshape(())
    gtd_new = jnp.dot(g_new, d)
    evals = s.evals + 1
    ls_iter = evals - 1  # torch's counter: evaluations after the first
    s = s._replace(evals=evals,
                   insuf_progress=jnp.where(s.zooming, insuf_progress, s.insuf_progress))
    new = (t_new, t_tensor, f_new, g_new, gtd_new)
    s = lax.cond(s.zooming, zoom_phase, bracket_phase, s, new, ls_iter)
    # torch's zoom loop: `while not done and ls_iter < max_ls`, then its
    # bracket-length test; checked here, before the next trial is chosen.
    too_short = jnp.abs(s.bracket[1] - s.bracket[0]) * d_norm < tolerance_change
    finished = jnp.where(s.zooming, s.done | ~(ls_iter < max_ls) | too_short, s.done)
    return s._replace(finished=finished)

  s = lax.while_loop(lambda s: ~s.finished, body, start)
  return s.bracket_f[s.low], s.bracket_g[s.low], s.bracket[s.low], s.evals
