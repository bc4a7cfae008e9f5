"""Adadelta: ``torch.optim.Adadelta``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import unshared_sqrt
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least, check_between
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decayed_gradient, square_average, weight_decay_scalars)


class AdadeltaState(NamedTuple):
  r"""State of :func:`adadelta`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    square_avg: per param, :math:`v`, the running average of :math:`g^2`.
    acc_delta: per param, :math:`u`, the running average of :math:`\Delta^2`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  square_avg: Any
  acc_delta: Any


def _adadelta_scalars(step, hp):
  del step  # Adadelta has no bias correction: the step count is bookkeeping only.
  scalars = {
      'lr': hp['lr'],
      'rho': hp['rho'],
      'one_minus_rho': 1 - hp['rho'],
      'eps': hp['eps'],
  }
  scalars.update(weight_decay_scalars(hp))
  return scalars


def _adadelta_math(grad, param, buffers, s, *, maximize, weight_decay):
  def decayed(*after):  # one per output kernel (see decayed_gradient)
    return decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay,
                            after=after)

  square_avg = square_average(buffers['square_avg'], decayed(), s['rho'], s['one_minus_rho'])

  # eps goes inside both roots; torch divides the two RMS values first, then
  # scales by the gradient.
  def delta_with(sqrt, g):
    return sqrt(buffers['acc_delta'] + s['eps']) / sqrt(square_avg + s['eps']) * g

  # delta feeds the update and acc_delta: each output's kernel computes its own
  # (unshared_sqrt) rather than XLA:CPU writing delta's roots to temporaries.
  acc_delta = square_average(buffers['acc_delta'], delta_with(unshared_sqrt, decayed(square_avg)),
                             s['rho'], s['one_minus_rho'])
  # The update still reads the old acc_delta, which XLA:CPU therefore copies: its
  # kernel is the param's (after apply_updates), which nothing here can order
  # before acc_delta's. (Reading the param after acc_delta keeps it at that copy.)
  update = -s['lr'] * delta_with(jnp.sqrt, decayed(square_avg, acc_delta))
  return update, {'square_avg': square_avg, 'acc_delta': acc_delta}


@mirrors('Adadelta')
def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Adadelta, as ``torch.optim.Adadelta``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \\
     v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
     \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} \, g_t \\
     u_t &= \rho u_{t-1} + (1-\rho) \Delta_t^2 \\
     \theta_t &= \theta_{t-1} - \gamma \Delta_t

  :math:`v` is torch's ``square_avg`` and :math:`u` its ``acc_delta``. The order
  of operations is torch's for-loop implementation's.

  Args:
    lr: learning rate :math:`\gamma`, a factor on :math:`\Delta_t`.
    rho: decay :math:`\rho` of both running averages, in ``[0, 1]``.
    eps: :math:`\epsilon`, added inside both square roots.
    weight_decay: {weight_decay}
    maximize: {maximize}
    foreach, capturable, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import adadelta
    >>> tx = adadelta(rho=0.25, eps=0.25)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([1.0, -1.0]), state, params)
    >>> updates  # first step: -sqrt(eps) / sqrt((1-ρ)·g² + eps) · g
    Array([-0.5,  0.5], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_between(rho, 'rho', 'Invalid rho value', 0.0, 1.0)
  check_at_least(eps, 'eps', 'Invalid epsilon value')
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  # torch has no fused Adadelta.
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'rho': rho, 'eps': eps, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='adadelta',
      state_cls=AdadeltaState,
      hyperparams=hyperparams,
      buffers={'square_avg': jnp.zeros_like, 'acc_delta': jnp.zeros_like},
      scalars=_adadelta_scalars,
      math=partial(_adadelta_math, maximize=maximize, weight_decay=has_weight_decay),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
