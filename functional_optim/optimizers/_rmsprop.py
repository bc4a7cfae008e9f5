"""RMSprop, with momentum and the centered variant: ``torch.optim.RMSprop``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import lerp, unshared_sqrt
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decayed_gradient, square_average, weight_decay_scalars)


class RMSpropState(NamedTuple):
  r"""State of :func:`rmsprop`, with torch's per-parameter keys.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    square_avg: per param, :math:`v`, the running average of :math:`g^2`.
    momentum_buffer: per param, the momentum :math:`b`; None when built with
      ``momentum=0``.
    grad_avg: per param, :math:`\bar g`, the running average of :math:`g`; None
      unless ``centered=True``.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  square_avg: Any
  momentum_buffer: Any
  grad_avg: Any


def _rmsprop_scalars(step, hp):
  del step  # RMSprop has no bias correction: the step count is bookkeeping only.
  scalars = {
      'lr': hp['lr'],
      'alpha': hp['alpha'],
      'one_minus_alpha': 1 - hp['alpha'],
      'eps': hp['eps'],
  }
  scalars.update(weight_decay_scalars(hp))
  if 'momentum' in hp:
    scalars['momentum'] = hp['momentum']
  return scalars


def _rmsprop_math(grad, param, buffers, s, *, maximize, weight_decay, momentum, centered):
  def decayed(*after):  # one per output kernel (see decayed_gradient)
    return decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay,
                            after=after)

  square_avg = square_average(buffers['square_avg'], decayed(), s['alpha'],
                              s['one_minus_alpha'])
  new_buffers = {'square_avg': square_avg}
  second_moment = square_avg
  if centered:
    grad_avg = lerp(buffers['grad_avg'], decayed(square_avg), s['one_minus_alpha'])
    new_buffers['grad_avg'] = grad_avg
    second_moment = square_avg - grad_avg * grad_avg
  avg = jnp.sqrt(second_moment) + s['eps']
  if not momentum:
    return (-s['lr'] * decayed(*new_buffers.values())) / avg, new_buffers
  buf = buffers['momentum_buffer']
  # torch takes the momentum branch only while momentum > 0: a momentum set to 0
  # later leaves the buffer as it is and steps like plain RMSprop.
  active = s['momentum'] > 0
  new_buf = jnp.where(active, buf * s['momentum'] + decayed(*new_buffers.values()) / avg, buf)
  new_buffers['momentum_buffer'] = new_buf
  # The update reads the new buffer, and the plain step takes its own root: a root
  # that two outputs share is a leaf-sized temporary too.
  plain = (-s['lr'] * decayed(new_buf)) / (unshared_sqrt(second_moment) + s['eps'])
  return jnp.where(active, -s['lr'] * new_buf, plain), new_buffers


@mirrors('RMSprop')
def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum: ScalarOrSchedule = 0.0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""RMSprop, as ``torch.optim.RMSprop``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \\
     v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \\
     \bar g_t &= \operatorname{lerp}(\bar g_{t-1}, g_t, 1-\alpha), \quad
       w_t = v_t - \bar g_t^2 \ \text{(centered)}, \ \text{else } w_t = v_t \\
     a_t &= \sqrt{w_t} + \epsilon \\
     b_t &= \mu b_{t-1} + g_t / a_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
       \ \text{(momentum)}, \ \text{else } \theta_t = \theta_{t-1} - \gamma g_t / a_t

  The momentum buffer starts at zero (unlike SGD's, which starts at the first
  gradient). The order of operations is torch's for-loop implementation's.

  Args:
    lr: learning rate :math:`\gamma`.
    alpha: smoothing constant :math:`\alpha` of the averages.
    eps: :math:`\epsilon`, added after the square root.
    weight_decay: {weight_decay}
    momentum: momentum factor :math:`\mu`. The Python number 0 (the default)
      builds RMSprop with no buffer; an array or schedule keeps the buffer, used
      while :math:`\mu > 0`.
    centered: normalize by an estimate of the gradient's variance instead of
      its second moment.
    maximize: {maximize}
    capturable, foreach, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import rmsprop
    >>> tx = rmsprop(lr=0.01, alpha=0.75, momentum=0.5)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([3.0, -0.5]), state, params)
    >>> updates  # -lr·g/sqrt((1-α)·g²): a first step of -lr·sign(g)/sqrt(1-α)
    Array([-0.02,  0.02], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_at_least(eps, 'eps', 'Invalid epsilon value')
  check_at_least(momentum, 'momentum', 'Invalid momentum value')
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  check_at_least(alpha, 'alpha', 'Invalid alpha value')
  # torch has no fused RMSprop and checks none of these at construction.
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'alpha': alpha, 'eps': eps, 'weight_decay': weight_decay,
       'momentum': momentum},
      {'momentum': ('momentum',), **WEIGHT_DECAY_GATE})
  has_weight_decay = 'weight_decay' in hyperparams
  has_momentum = 'momentum' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='rmsprop',
      state_cls=RMSpropState,
      hyperparams=hyperparams,
      buffers={'square_avg': jnp.zeros_like,
               'momentum_buffer': jnp.zeros_like if has_momentum else None,
               'grad_avg': jnp.zeros_like if centered else None},
      scalars=_rmsprop_scalars,
      math=partial(_rmsprop_math, maximize=maximize, weight_decay=has_weight_decay,
                   momentum=has_momentum, centered=centered),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
