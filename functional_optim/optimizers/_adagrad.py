"""Adagrad, with learning-rate decay: ``torch.optim.Adagrad`` (dense gradients)."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import (
    ScalarOrSchedule, compile_out_zeros, is_schedule)
from functional_optim.core.numerics import as_python_float, in_dtype_of
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least
from functional_optim.kernels.dispatch import choose_implementation
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decayed_gradient, weight_decay_scalars)


class AdagradState(NamedTuple):
  """State of :func:`adagrad`; ``sum`` is torch's per-parameter key.

  Like torch, whose Adagrad makes its state in the constructor, every param has
  ``sum`` from the start, filled with ``initial_accumulator_value``.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    sum: per param, :math:`s`, the running sum of :math:`g^2`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  sum: Any


def _initial_sum(param: jax.Array, initial_accumulator_value) -> jax.Array:
  # torch fills a complex param's sum with iav + iav·j: every real coordinate
  # starts at iav.
  if jnp.iscomplexobj(param):
    initial_accumulator_value = initial_accumulator_value * (1 + 1j)
  return jnp.full_like(param, initial_accumulator_value)


def _adagrad_scalars(step, hp):
  t = as_python_float(step)
  lr = hp['lr']
  scalars = {
      # The decay counts from the second step: the first step uses lr itself. A
      # tensor lr divides in its dtype, as in torch.
      'clr': lr / in_dtype_of(1 + (t - 1) * hp['lr_decay'], lr),
      'eps': hp['eps'],
  }
  scalars.update(weight_decay_scalars(hp))
  return scalars


def _adagrad_math(grad, param, buffers, s, *, maximize, weight_decay):
  g = decayed_gradient(grad, param, s, maximize=maximize, weight_decay=weight_decay)
  state_sum = buffers['sum'] + g * g
  std = jnp.sqrt(state_sum) + s['eps']
  return (-s['clr'] * g) / std, {'sum': state_sum}


@mirrors('Adagrad')
def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    initial_accumulator_value: float | jax.Array = 0.0,
    eps: ScalarOrSchedule = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Adagrad, as ``torch.optim.Adagrad``, for dense gradients.

  .. math::
     g_t &= \pm g_t + \lambda\theta_{t-1} \\
     \tilde\gamma_t &= \gamma / (1 + (t-1)\eta) \\
     s_t &= s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value} \\
     \theta_t &= \theta_{t-1} - \tilde\gamma_t \cdot \frac{g_t}{\sqrt{s_t} + \epsilon}

  :math:`s` is torch's ``sum``. The order of operations is torch's for-loop
  implementation's. torch's sparse-gradient path is not provided: gradients
  are dense arrays.

  Args:
    lr: learning rate :math:`\gamma`.
    lr_decay: :math:`\eta`, the learning rate's decay with the step count.
    weight_decay: {weight_decay}
    initial_accumulator_value: the value ``sum`` starts at (complex params:
      ``iav + iav·j``). A number or an array, not a schedule: it only seeds the
      state, so it is no hyperparameter of the steps (torch, too, ignores later
      edits of it).
    eps: :math:`\epsilon`, added after the square root.
    maximize: {maximize}
    foreach, differentiable, fused: {torch_switches}
    implementation: {implementation}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import adagrad
    >>> tx = adagrad(lr=0.1, initial_accumulator_value=0.75)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -0.5]), state, params)
    >>> updates  # -lr·g / sqrt(iav + g²)
    Array([-0.05,  0.05], dtype=float32)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_at_least(lr_decay, 'lr_decay', 'Invalid lr_decay value')
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  if is_schedule(initial_accumulator_value):
    raise TypeError('initial_accumulator_value seeds the state once: give a number '
                    'or an array, not a schedule')
  check_at_least(initial_accumulator_value, 'initial_accumulator_value',
                 'Invalid initial_accumulator_value value')
  check_at_least(eps, 'eps', 'Invalid epsilon value')
  implementation = choose_implementation(implementation, foreach=foreach, fused=fused,
                                        differentiable=differentiable)

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'lr_decay': lr_decay, 'eps': eps, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  return elementwise_transformation(
      implementation=implementation,
      name='adagrad',
      state_cls=AdagradState,
      hyperparams=hyperparams,
      buffers={'sum': partial(_initial_sum,
                              initial_accumulator_value=initial_accumulator_value)},
      scalars=_adagrad_scalars,
      math=partial(_adagrad_math, maximize=maximize, weight_decay=has_weight_decay),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
  )
