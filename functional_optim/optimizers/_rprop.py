"""Resilient backpropagation: ``torch.optim.Rprop``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule
from functional_optim.core.numerics import read_after, sign
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least, check_pair, concrete_value
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import ascent_or_descent


class RpropState(NamedTuple):
  r"""State of :func:`rprop`, with torch's per-parameter keys.

  torch creates ``step_size`` filled with the current lr at a param's first
  step, and so do we: before it, ``step_size`` holds zeros that are not read.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    prev: per param, :math:`g'`, the gradient of the previous step (zeroed
      where its sign flipped).
    step_size: per param, the per-element step :math:`\Delta`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  prev: Any
  step_size: Any


def _check_etas(etas) -> tuple[Any, Any]:
  """``0 < η− < 1 < η+``, with torch's message; a schedule is taken as given."""
  etaminus, etaplus = check_pair(etas, 'etas')
  low = concrete_value(etaminus, 'etas[0]')
  high = concrete_value(etaplus, 'etas[1]')
  if (low is not None and not 0.0 < low < 1.0) or (high is not None and not 1.0 < high):
    raise ValueError(f'Invalid eta values: {etaminus!s}, {etaplus!s}')  # !s: see validation
  return etaminus, etaplus


def _rprop_scalars(step, hp):
  etaminus, etaplus = hp['etas']
  step_size_min, step_size_max = hp['step_sizes']
  # `one` is 1.0 (step >= 1 where the math runs) that XLA cannot fold: dividing by
  # it is exact, and makes a value costly enough to XLA:CPU that it reads it from
  # its buffer rather than recomputing it (and copying the buffer) in each kernel.
  return {'first_step': step == 1, 'one': step / step, 'lr': hp['lr'],
          'etaminus': etaminus, 'etaplus': etaplus,
          'step_size_min': step_size_min, 'step_size_max': step_size_max}


def _rprop_math(grad, param, buffers, s, *, maximize):
  del param  # Rprop moves by step sizes, never by the param.
  g = ascent_or_descent(grad, maximize)
  # lr only seeds the step sizes; the step count (not a zero buffer) says when,
  # since a schedule's lr may be anything at a param's first step.
  step_size = jnp.where(s['first_step'] != 0, s['lr'], buffers['step_size'])

  def factor_of(prev):
    agreement = sign(g * prev)
    # torch overwrites the signs in this order (its sign of NaN is 0).
    factor = jnp.where(agreement > 0, s['etaplus'], agreement)
    factor = jnp.where(factor < 0, s['etaminus'], factor)
    return jnp.where(factor == 0, 1, factor)

  step_size = jnp.clip(step_size * factor_of(buffers['prev']), s['step_size_min'],
                       s['step_size_max']) / s['one']
  # Where the sign flipped, torch skips the move and forgets the gradient, so the
  # next step sees no sign change there. (prev is read again after the step size
  # has read it: XLA:CPU then overwrites it in place, without a copy.)
  prev = read_after(buffers['prev'], step_size)
  g = jnp.where(factor_of(prev) == s['etaminus'], 0, g) / s['one']
  return -sign(g) * step_size, {'prev': g, 'step_size': step_size}


@mirrors('Rprop')
def rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.5, 1.2),
    step_sizes: tuple[ScalarOrSchedule, ScalarOrSchedule] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Rprop, as ``torch.optim.Rprop``.

  .. math::
     s_t &= \operatorname{sign}(g_t \, g'_{t-1}), \quad
     f_t = \eta_+ \ (s_t > 0), \ \eta_- \ (s_t < 0), \ 1 \ (s_t = 0) \\
     \Delta_t &= \operatorname{clamp}(\Delta_{t-1} f_t, \Gamma_{\min}, \Gamma_{\max}),
       \quad \Delta_0 = \gamma \\
     g'_t &= 0 \ \text{where } f_t = \eta_-, \ g_t \ \text{elsewhere} \\
     \theta_t &= \theta_{t-1} - \operatorname{sign}(g'_t)\,\Delta_t

  :math:`g_t` is negated first for ``maximize``; :math:`g'_t` is stored as
  ``prev``, :math:`\Delta_t` as ``step_size``. The lr :math:`\gamma` is read
  only at a param's first step, to fill its step sizes: changing it later
  changes nothing, as in torch.

  Args:
    lr: learning rate :math:`\gamma`, the initial step size.
    etas: :math:`(\eta_-, \eta_+)`, the factors that shrink and grow a step
      size, with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes: :math:`(\Gamma_{\min}, \Gamma_{\max})`, the bounds of a step
      size (unchecked, as in torch).
    maximize: {maximize}
    capturable, foreach, differentiable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import rprop
    >>> tx = rprop(lr=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)
    >>> updates, state = tx.update(jnp.array([0.5, 2.0]), state, params)
    >>> updates  # same sign: a step 1.2 times longer; a flip: no move
    Array([-0.12,  0.  ], dtype=float32)
    >>> state.step_size
    Array([0.12, 0.05], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  etaminus, etaplus = _check_etas(etas)
  step_size_min, step_size_max = check_pair(step_sizes, 'step_sizes')
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable  # Step counts live on the device already: nothing to capture.

  return elementwise_transformation(
      implementation=implementation,
      name='rprop',
      state_cls=RpropState,
      hyperparams={'lr': lr, 'etas': (etaminus, etaplus),
                   'step_sizes': (step_size_min, step_size_max)},
      buffers={'prev': jnp.zeros_like, 'step_size': jnp.zeros_like},
      scalars=_rprop_scalars,
      math=partial(_rprop_math, maximize=maximize),
      needs_params=False,
  )
