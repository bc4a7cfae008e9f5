"""SGD with momentum, dampening, Nesterov and weight decay: ``torch.optim.SGD``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least, concrete_value
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decayed_gradient, weight_decay_scalars)


class SGDState(NamedTuple):
  """State of :func:`sgd`; ``momentum_buffer`` is torch's per-parameter key.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's SGD keeps no step:
      it marks whether the momentum buffer has been seeded).
    momentum_buffer: per param, the momentum :math:`b`; None when built with
      ``momentum=0``.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  momentum_buffer: Any


def _sgd_scalars(step, hp):
  scalars = {'step': step, 'lr': hp['lr']}
  scalars.update(weight_decay_scalars(hp))
  if 'momentum' in hp:
    scalars['momentum'] = hp['momentum']
    scalars['one_minus_dampening'] = 1 - hp['dampening']
  return scalars


def _sgd_math(grad, param, buffers, s, *, maximize, weight_decay, momentum, nesterov):
  d = decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay)
  if momentum:
    buf = buffers['momentum_buffer']
    # torch seeds the buffer with the first gradient itself (no dampening).
    new_buf = jnp.where(s['step'] == 1, d,
                        buf * s['momentum'] + s['one_minus_dampening'] * d)
    # A momentum that is 0 at this step skips the momentum block, as torch does.
    # The direction reads the kept buffer, not new_buf: two selects of new_buf
    # make XLA materialize it, a full extra buffer and twice the step time.
    active = s['momentum'] != 0
    new_buf = jnp.where(active, new_buf, buf)
    # The update's kernel decays the gradient itself (see decayed_gradient).
    d = decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay,
                         after=(new_buf,))
    direction = d + s['momentum'] * new_buf if nesterov else new_buf
    d = jnp.where(active, direction, d)
    buffers = {'momentum_buffer': new_buf}
  return -s['lr'] * d, buffers


@mirrors('SGD')
def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0.0,
    dampening: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Stochastic gradient descent, as ``torch.optim.SGD``.

  .. math::
     d_t &= \pm g_t + \lambda\theta_{t-1} \\
     b_t &= d_t \ (t = 1), \quad b_t = \mu b_{t-1} + (1-\tau) d_t \ (t > 1) \\
     d_t &\leftarrow d_t + \mu b_t \ \text{(nesterov)}, \quad d_t \leftarrow b_t \ \text{(else)} \\
     \theta_t &= \theta_{t-1} - \gamma d_t

  Args:
    lr: learning rate :math:`\gamma`.
    momentum: momentum factor :math:`\mu`. The Python number 0 (the default)
      builds plain SGD with no buffer; an array or schedule keeps the buffer.
    dampening: dampening :math:`\tau` of the momentum.
    weight_decay: {weight_decay}
    nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize: {maximize}
    foreach, fused, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.sgd(lr=0.1, momentum=0.9, nesterov=True)
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([1.0, 1.0])}, state, params)
    >>> updates['w']
    Array([-0.19, -0.19], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_at_least(momentum, 'momentum', 'Invalid momentum value')
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  if nesterov:
    mu, tau = concrete_value(momentum, 'momentum'), concrete_value(dampening, 'dampening')
    if (mu is not None and mu <= 0) or (tau is not None and tau != 0):
      raise ValueError('Nesterov momentum requires a momentum and zero dampening')
  implementation = choose_implementation(implementation, foreach=foreach, fused=fused,
                                        differentiable=differentiable)

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'momentum': momentum, 'dampening': dampening, 'weight_decay': weight_decay},
      {'momentum': ('momentum', 'dampening'), **WEIGHT_DECAY_GATE})
  has_momentum = 'momentum' in hyperparams
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='sgd',
      state_cls=SGDState,
      hyperparams=hyperparams,
      buffers={'momentum_buffer': jnp.zeros_like if has_momentum else None},
      scalars=_sgd_scalars,
      math=partial(_sgd_math, maximize=maximize, weight_decay=has_weight_decay,
                   momentum=has_momentum, nesterov=nesterov),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
