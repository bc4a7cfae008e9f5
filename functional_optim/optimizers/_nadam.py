"""NAdam, Adam with Nesterov momentum: ``torch.optim.NAdam``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import as_python_float, in_dtype_of
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, check_adam_family_arguments, decayed_gradient, moment_scalars,
    update_moments, weight_decay_scalars, with_decoupled_decay)


class NAdamState(NamedTuple):
  r"""State of :func:`nadam`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    exp_avg: per param, the first moment :math:`m`.
    exp_avg_sq: per param, the second moment :math:`v`.
    mu_product: per param, :math:`\Pi`, the running product of the momentum
      schedule, a float32 scalar whatever the param's dtype, as torch keeps it.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  exp_avg: Any
  exp_avg_sq: Any
  mu_product: Any


def _nadam_scalars(step, hp, *, mu_product):
  t = as_python_float(step)
  lr = hp['lr']
  beta1, beta2 = hp['betas']
  psi = hp['momentum_decay']
  mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
  mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
  # torch multiplies its float32 tensor in place by mu rounded to float32 (§2.7);
  # the step sizes then read the stored product back as a double.
  mu_product = mu_product * mu.astype(jnp.float32)
  stored_product = mu_product.astype(t.dtype)
  return {
      **moment_scalars(hp),
      **weight_decay_scalars(hp),
      'bias_correction2': 1 - beta2 ** t,
      'eps': hp['eps'],
      # torch's Python-float factors meet a tensor lr in its dtype.
      'grad_step_size': (-lr * in_dtype_of(1.0 - mu, lr)
                         / in_dtype_of(1.0 - stored_product, lr)),
      'momentum_step_size': ((-lr * in_dtype_of(mu_next, lr))
                             / in_dtype_of(1.0 - stored_product * mu_next, lr)),
      'mu_product': mu_product,
  }


def _nadam_math(grad, param, buffers, s, *, maximize, weight_decay, decoupled):
  decay = dict(weight_decay=weight_decay, decoupled=decoupled)
  g = decayed_gradient(grad, param, s, maximize=maximize, **decay)
  exp_avg, exp_avg_sq = update_moments(buffers['exp_avg'], buffers['exp_avg_sq'], g, s)
  # torch's loop divides before the root (its foreach path does not): sqrt(v/bc2).
  denom = jnp.sqrt(exp_avg_sq / s['bias_correction2']) + s['eps']
  update = (s['grad_step_size'] * g) / denom + (s['momentum_step_size'] * exp_avg) / denom
  update = with_decoupled_decay(update, param, s, **decay)
  return update, {'exp_avg': exp_avg, 'exp_avg_sq': exp_avg_sq}


@mirrors('NAdam')
def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum_decay: ScalarOrSchedule = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""NAdam, as ``torch.optim.NAdam``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \quad\text{(or } \theta \leftarrow
            \theta(1-\gamma\lambda) \text{ when decoupled)} \\
     \mu_t &= \beta_1\bigl(1 - \tfrac12 0.96^{t\psi}\bigr), \quad
     \mu_{t+1} = \beta_1\bigl(1 - \tfrac12 0.96^{(t+1)\psi}\bigr), \quad
     \Pi_t = \Pi_{t-1}\mu_t \ \text{(float32)} \\
     m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
     d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
     \theta_t &= \theta_{t-1} - \frac{\gamma(1-\mu_t)}{1-\Pi_t}\cdot\frac{g_t}{d_t}
       - \frac{\gamma\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\cdot\frac{m_t}{d_t}

  The order of operations is torch's for-loop implementation's (the root of
  :math:`v_t/(1-\beta_2^t)`, not :math:`\sqrt{v_t}/\sqrt{1-\beta_2^t}` as in
  its foreach path), so float64 results agree with torch to rounding.

  Args:
    lr: learning rate :math:`\gamma`.
    betas: :math:`(\beta_1, \beta_2)`, each a number, array or schedule.
    eps: :math:`\epsilon`, added after the square root.
    weight_decay: :math:`\lambda` (the Python number 0 compiles it out).
    momentum_decay: :math:`\psi`, how fast :math:`\mu_t` approaches
      :math:`\beta_1`.
    decoupled_weight_decay: decay the param (NAdamW) instead of adding an L2
      term to the gradient.
    maximize: {maximize}
    foreach, capturable, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import nadam
    >>> tx = nadam(lr=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates.round(4)
    Array([-0.1056,  0.1056], dtype=float32)
    >>> state.mu_product.tree().round(4)
    Array(0.4501, dtype=float32)
  """
  beta1, beta2 = check_adam_family_arguments(lr, betas, eps, weight_decay)
  check_at_least(momentum_decay, 'momentum_decay', 'Invalid momentum_decay value')
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable  # Step counts live on the device already: nothing to capture.

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'betas': (beta1, beta2), 'eps': eps,
                 'momentum_decay': momentum_decay, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='nadam',
      state_cls=NAdamState,
      hyperparams=hyperparams,
      buffers={'exp_avg': jnp.zeros_like, 'exp_avg_sq': jnp.zeros_like},
      scalars=_nadam_scalars,
      math=partial(_nadam_math, maximize=maximize, weight_decay=has_weight_decay,
                   decoupled=decoupled_weight_decay),
      needs_params=has_weight_decay,
      scalar_state={'mu_product': 1.0},
      compiled_out=compiled_out,
  )
