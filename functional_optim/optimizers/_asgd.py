"""Averaged stochastic gradient descent: ``torch.optim.ASGD``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import ScalarOrSchedule, compile_out_zeros
from functional_optim.core.numerics import as_python_float, in_dtype_of
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least, concrete_value
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decayed_gradient, decoupled_weight_decay, weight_decay_scalars)


class ASGDState(NamedTuple):
  r"""State of :func:`asgd`, with torch's per-parameter keys.

  torch creates ``eta`` from the current lr at a param's first step, and so do
  we: before it, ``eta`` holds the lr given to the builder (0 for a schedule)
  and is not read.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    ax: per param, the averaged param :math:`\bar\theta`.
    eta: per param, the step size :math:`\eta` of its *next* step, a float32
      scalar whatever the param's dtype, as torch keeps it.
    mu: per param, the averaging weight :math:`\mu` of its next step (float32).
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  ax: Any
  eta: Any
  mu: Any


def _asgd_scalars(step, hp, *, eta, mu):
  t = as_python_float(step)
  lr, lambd = hp['lr'], hp['lambd']
  eta = jnp.where(step == 1, lr.astype(jnp.float32), eta).astype(t.dtype)
  # torch's lr / ((1 + lambd * lr * step) ** alpha): Python floats, or tensor
  # arithmetic in a tensor lr's dtype. The power is taken in double precision and
  # rounded, which is what the C library's powf returns but for ties within 1e-15.
  base = 1 + in_dtype_of(lambd, lr) * lr * in_dtype_of(t, lr)
  scalars = {
      'shrink_factor': 1 - lambd * eta,  # the lambd shrink, not weight decay
      'step_size': eta,
      'averaging_weight': mu,
      # This step's eta and mu came from the previous step; these are the next's,
      # from the current lr (stored as float32 by the kernel).
      'eta': lr / in_dtype_of(as_python_float(base) ** hp['alpha'], lr),
      'mu': 1 / jnp.maximum(1.0, t - hp['t0']),
  }
  scalars.update(weight_decay_scalars(hp))
  return scalars


def _asgd_math(grad, param, buffers, s, *, maximize, weight_decay):
  g = decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay)
  update = decoupled_weight_decay(param, s['shrink_factor']) - s['step_size'] * g
  new_param = param + update
  ax, mu = buffers['ax'], s['averaging_weight']
  # Until the averaging starts (mu == 1) torch copies the param, which an
  # average with weight 1 would only round.
  ax = jnp.where(mu != 1, ax + (new_param - ax) * mu, new_param)
  return update, {'ax': ax}


@mirrors('ASGD')
def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    t0: ScalarOrSchedule = 1e6,
    weight_decay: ScalarOrSchedule = 0.0,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Averaged SGD, as ``torch.optim.ASGD``.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \\
     \theta_t &= \theta_{t-1}(1 - \lambda_d\eta_t) - \eta_t g_t \\
     \bar\theta_t &= \theta_t \ \text{if } \mu_t = 1, \quad
       \bar\theta_t = \bar\theta_{t-1} + \mu_t(\theta_t - \bar\theta_{t-1})
       \ \text{otherwise} \\
     \eta_{t+1} &= \frac{\gamma}{(1 + \lambda_d\gamma t)^\alpha}, \quad
     \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

  with :math:`\eta_1 = \gamma` and :math:`\mu_1 = 1`. :math:`\eta` and
  :math:`\mu` are stored in float32, and each step's are computed at the end of
  the previous step from the lr of that step, as torch does. The average
  :math:`\bar\theta` (``ax``) is state only: it does not enter the update.

  Args:
    lr: learning rate :math:`\gamma`.
    lambd: decay term :math:`\lambda_d`.
    alpha: power :math:`\alpha` of the eta schedule.
    t0: the step after which averaging starts.
    weight_decay: {weight_decay}
    maximize: {maximize}
    foreach, differentiable, capturable: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import asgd
    >>> tx = asgd(lr=0.1, lambd=0.0, t0=0)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates
    Array([-0.05,  0.2 ], dtype=float32)
    >>> state.ax  # the first step copies the param
    Array([ 0.95, -0.8 ], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  implementation = choose_implementation(implementation, foreach=foreach, fused=None,
                                        differentiable=differentiable)
  del capturable  # Step counts live on the device already: nothing to capture.

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'lambd': lambd, 'alpha': alpha, 't0': t0, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  initial_lr = concrete_value(lr, 'lr')
  return elementwise_transformation(
      implementation=implementation,
      name='asgd',
      state_cls=ASGDState,
      hyperparams=hyperparams,
      buffers={'ax': jnp.zeros_like},
      scalars=_asgd_scalars,
      math=partial(_asgd_math, maximize=maximize, weight_decay=has_weight_decay),
      needs_params=True,
      scalar_state={'eta': 0.0 if initial_lr is None else initial_lr, 'mu': 1.0},
      compiled_out=compiled_out,
  )
