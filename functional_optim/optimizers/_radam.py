"""RAdam, Adam with a rectified adaptive learning rate: ``torch.optim.RAdam``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import as_python_float
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, check_adam_family_arguments, decayed_gradient, moment_scalars,
    update_moments, weight_decay_scalars, with_decoupled_decay)

#: The variance of the adaptive learning rate is tractable once the length of
#: the approximated simple moving average exceeds this (torch's threshold).
RECTIFICATION_THRESHOLD = 5.0


class RAdamState(NamedTuple):
  """State of :func:`radam`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    exp_avg: per param, the first moment :math:`m`.
    exp_avg_sq: per param, the second moment :math:`v`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  exp_avg: Any
  exp_avg_sq: Any


def _rectification(t, beta2, bias_correction2):
  """``(ρ_t > 5, r_t)``: whether the step is rectified, and the factor if it is."""
  rho_inf = 2 / (1 - beta2) - 1
  rho_t = rho_inf - 2 * t * beta2 ** t / bias_correction2
  rectified = rho_t > RECTIFICATION_THRESHOLD
  ratio = ((rho_t - 4) * (rho_t - 2) * rho_inf
           / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
  # The step count is data, so both branches exist; the unused ratio may be
  # negative, and must not reach the root (nor its gradient).
  return rectified, jnp.sqrt(jnp.where(rectified, ratio, 1.0))


def _radam_scalars(step, hp):
  t = as_python_float(step)
  beta1, beta2 = hp['betas']
  bias_correction2 = 1 - beta2 ** t
  rectified, rect = _rectification(t, beta2, bias_correction2)
  return {
      **moment_scalars(hp),
      **weight_decay_scalars(hp),
      'lr': hp['lr'],
      'eps': hp['eps'],
      'bias_correction1': 1 - beta1 ** t,
      'bias_correction2_sqrt': jnp.sqrt(bias_correction2),
      'rectified': rectified,
      'rect': rect,
  }


def _radam_math(grad, param, buffers, s, *, maximize, weight_decay, decoupled):
  decay = dict(weight_decay=weight_decay, decoupled=decoupled)
  g = decayed_gradient(grad, param, s, maximize=maximize, **decay)
  exp_avg, exp_avg_sq = update_moments(buffers['exp_avg'], buffers['exp_avg_sq'], g, s)
  momentum_step = (exp_avg / s['bias_correction1']) * s['lr']
  # torch's `scalar / tensor` is a reciprocal, then a product.
  adaptive_lr = (1 / (jnp.sqrt(exp_avg_sq) + s['eps'])) * s['bias_correction2_sqrt']
  rectified_step = (momentum_step * adaptive_lr) * s['rect']
  # `rectified` arrives as 1 or 0 in the compute dtype.
  update = -jnp.where(s['rectified'] != 0, rectified_step, momentum_step)
  update = with_decoupled_decay(update, param, s, **decay)
  return update, {'exp_avg': exp_avg, 'exp_avg_sq': exp_avg_sq}


@mirrors('RAdam')
def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""RAdam, as ``torch.optim.RAdam``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \quad\text{(or } \theta \leftarrow
            \theta(1-\gamma\lambda) \text{ when decoupled)} \\
     m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
     \rho_\infty &= \frac{2}{1-\beta_2} - 1, \quad
     \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
     \theta_t &= \theta_{t-1} - \gamma\frac{m_t}{1-\beta_1^t}\cdot
       \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon}\cdot r_t
       \quad\text{if } \rho_t > 5, \quad
       r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                        {(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
     \theta_t &= \theta_{t-1} - \gamma\frac{m_t}{1-\beta_1^t}
       \quad\text{otherwise (the first steps: } t \le 5 \text{ for the usual } \beta_2)

  The threshold is evaluated at every step as data (the step count is traced),
  and the order of operations is torch's for-loop implementation's, so float64
  results agree with torch to rounding.

  Args:
    lr: learning rate :math:`\gamma`.
    betas: :math:`(\beta_1, \beta_2)`, each a number, array or schedule.
    eps: :math:`\epsilon`, added after the square root.
    weight_decay: :math:`\lambda` (the Python number 0 compiles it out).
    decoupled_weight_decay: decay the param (AdamW-style) instead of adding an
      L2 term to the gradient.
    maximize: {maximize}
    foreach, capturable, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import radam
    >>> tx = radam(lr=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates  # un-rectified first step: -lr * bias-corrected momentum
    Array([-0.05,  0.2 ], dtype=float32)
  """
  beta1, beta2 = check_adam_family_arguments(lr, betas, eps, weight_decay)
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable  # Step counts live on the device already: nothing to capture.

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'betas': (beta1, beta2), 'eps': eps, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='radam',
      state_cls=RAdamState,
      hyperparams=hyperparams,
      buffers={'exp_avg': jnp.zeros_like, 'exp_avg_sq': jnp.zeros_like},
      scalars=_radam_scalars,
      math=partial(_radam_math, maximize=maximize, weight_decay=has_weight_decay,
                   decoupled=decoupled_weight_decay),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
