"""Adamax, Adam with an infinity-norm second moment: ``torch.optim.Adamax``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import as_python_float, in_dtype_of, lerp
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, check_adam_family_arguments, decayed_gradient,
    weight_decay_scalars)


class AdamaxState(NamedTuple):
  """State of :func:`adamax`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    exp_avg: per param, the first moment :math:`m`.
    exp_inf: per param, the infinity norm :math:`u`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  exp_avg: Any
  exp_inf: Any


def _adamax_scalars(step, hp):
  t = as_python_float(step)
  lr = hp['lr']
  beta1, beta2 = hp['betas']
  scalars = {
      'one_minus_beta1': 1 - beta1,
      'beta2': beta2,
      # Only the first moment is bias-corrected: the max norm needs none.
      'step_size': lr / in_dtype_of(1 - beta1 ** t, lr),  # a tensor lr's dtype
      'eps': hp['eps'],
  }
  scalars.update(weight_decay_scalars(hp))
  return scalars


def _adamax_math(grad, param, buffers, s, *, maximize, weight_decay):
  g = decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay)
  exp_avg = lerp(buffers['exp_avg'], g, s['one_minus_beta1'])
  # eps joins |g| before the max, so the norm never drops below eps.
  exp_inf = jnp.maximum(buffers['exp_inf'] * s['beta2'], jnp.abs(g) + s['eps'])
  update = (-s['step_size'] * exp_avg) / exp_inf
  return update, {'exp_avg': exp_avg, 'exp_inf': exp_inf}


@mirrors('Adamax')
def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Adamax, as ``torch.optim.Adamax``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \\
     m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1) \\
     u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
     \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t} \cdot \frac{m_t}{u_t}

  :math:`u` is torch's ``exp_inf``. Complex params are pairs of real
  coordinates, so :math:`|g|` is taken per coordinate, as torch does. The
  order of operations is torch's for-loop implementation's.

  Args:
    lr: learning rate :math:`\gamma`.
    betas: :math:`(\beta_1, \beta_2)`, each a number, array or schedule.
    eps: :math:`\epsilon`, added to :math:`|g_t|` inside the max.
    weight_decay: {weight_decay}
    maximize: {maximize}
    foreach, differentiable, capturable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import adamax
    >>> tx = adamax(lr=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates  # the first step is -lr·sign(g)
    Array([-0.1,  0.1], dtype=float32)
  """
  beta1, beta2 = check_adam_family_arguments(lr, betas, eps, weight_decay)
  # torch has no fused Adamax and checks none of these at construction.
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'betas': (beta1, beta2), 'eps': eps, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='adamax',
      state_cls=AdamaxState,
      hyperparams=hyperparams,
      buffers={'exp_avg': jnp.zeros_like, 'exp_inf': jnp.zeros_like},
      scalars=_adamax_scalars,
      math=partial(_adamax_math, maximize=maximize, weight_decay=has_weight_decay),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
