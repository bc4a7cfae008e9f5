"""Adam, with AMSGrad and coupled or decoupled weight decay: ``torch.optim.Adam``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import as_python_float, in_dtype_of
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, check_adam_family_arguments, decayed_gradient, moment_scalars,
    update_moments, weight_decay_scalars, with_decoupled_decay)


class AdamState(NamedTuple):
  r"""State of :func:`adam` and :func:`adamw`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    exp_avg: per param, the first moment :math:`m`.
    exp_avg_sq: per param, the second moment :math:`v`.
    max_exp_avg_sq: per param, the running max :math:`\hat v` of the second
      moment; None unless ``amsgrad=True``.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  exp_avg: Any
  exp_avg_sq: Any
  max_exp_avg_sq: Any


def _adam_scalars(step, hp):
  t = as_python_float(step)
  lr = hp['lr']
  beta1, beta2 = hp['betas']
  return {
      **moment_scalars(hp),
      **weight_decay_scalars(hp),
      # torch divides a tensor lr as a tensor: in its dtype (core.numerics.in_dtype_of).
      'step_size': lr / in_dtype_of(1 - beta1 ** t, lr),
      'bias_correction2_sqrt': jnp.sqrt(1 - beta2 ** t),
      'eps': hp['eps'],
  }


def _adam_math(grad, param, buffers, s, *, maximize, amsgrad, weight_decay, decoupled):
  decay = dict(weight_decay=weight_decay, decoupled=decoupled)
  g = decayed_gradient(grad, param, s, maximize=maximize, **decay)
  exp_avg, exp_avg_sq = update_moments(buffers['exp_avg'], buffers['exp_avg_sq'], g, s)
  new_buffers = {'exp_avg': exp_avg, 'exp_avg_sq': exp_avg_sq}
  second_moment = exp_avg_sq
  if amsgrad:
    # The running max is of the uncorrected second moment, as in torch.
    second_moment = jnp.maximum(buffers['max_exp_avg_sq'], exp_avg_sq)
    new_buffers['max_exp_avg_sq'] = second_moment
  denom = jnp.sqrt(second_moment) / s['bias_correction2_sqrt'] + s['eps']
  update = (-s['step_size'] * exp_avg) / denom
  return with_decoupled_decay(update, param, s, **decay), new_buffers


@mirrors('Adam')
def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Adam, as ``torch.optim.Adam``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \quad\text{(or } \theta \leftarrow
            \theta(1-\gamma\lambda) \text{ when decoupled)} \\
     m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
     \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \ \text{else } v_t \\
     \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t} \cdot
       \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

  The order of operations is torch's for-loop implementation's, so float64
  results agree with torch to rounding.

  Args:
    lr: learning rate :math:`\gamma`.
    betas: :math:`(\beta_1, \beta_2)`, each a number, array or schedule (a
      schedule of ``betas[0]`` is how momentum cycling drives Adam).
    eps: :math:`\epsilon`, added after the square root and the bias correction.
    weight_decay: :math:`\lambda` (the Python number 0 compiles it out).
    amsgrad: keep the running max of the second moment.
    maximize: {maximize}
    decoupled_weight_decay: AdamW's decay of the param instead of an L2 term.
    foreach, fused, capturable, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.adam(lr=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)
  """
  beta1, beta2 = check_adam_family_arguments(lr, betas, eps, weight_decay)
  implementation = choose_implementation(implementation, foreach=foreach, fused=fused,
                                        differentiable=differentiable)
  del capturable  # Step counts live on the device already: nothing to capture.

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'betas': (beta1, beta2), 'eps': eps, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='adamw' if decoupled_weight_decay else 'adam',
      state_cls=AdamState,
      hyperparams=hyperparams,
      buffers={'exp_avg': jnp.zeros_like, 'exp_avg_sq': jnp.zeros_like,
               'max_exp_avg_sq': jnp.zeros_like if amsgrad else None},
      scalars=_adam_scalars,
      math=partial(_adam_math, maximize=maximize, amsgrad=amsgrad,
                   weight_decay=has_weight_decay, decoupled=decoupled_weight_decay),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
