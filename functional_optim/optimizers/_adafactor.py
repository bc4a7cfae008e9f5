"""Adafactor, torch's variant: ``torch.optim.Adafactor``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_optim.core.hyperparams import (
    ScalarOrSchedule, array_dtype, compile_out_zeros)
from functional_optim.core.numerics import as_python_float, in_dtype_of, lerp, python_max
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least, check_at_most, check_pair
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, ascent_or_descent, decay_factor, decoupled_weight_decay)


class AdafactorState(NamedTuple):
  """State of :func:`adafactor`, with torch's per-parameter keys.

  A param with two or more dimensions keeps the factors ``row_var`` and
  ``col_var`` of its last two dimensions, and None for ``variance``; a 0-d or
  1-d param keeps a full ``variance`` and None for the factors.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's ``step``, a float32
      0-d array).
    row_var: per param of shape ``S``, :math:`R`, the running row means of
      :math:`g^2`, of shape ``S[:-1] + (1,)`` (None for 0-d and 1-d params).
    col_var: per param, :math:`C`, the running column means of :math:`g^2`, of
      shape ``S[:-2] + (1, S[-1])`` (None for 0-d and 1-d params).
    variance: per 0-d or 1-d param, :math:`V`, the running average of
      :math:`g^2` (None for the factored params).
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  row_var: Any
  col_var: Any
  variance: Any


def _is_factored(x: jax.Array) -> bool:
  return x.ndim > 1


def _init_row_var(param):
  return jnp.zeros(param.shape[:-1] + (1,), param.dtype) if _is_factored(param) else None


def _init_col_var(param):
  if not _is_factored(param):
    return None
  return jnp.zeros(param.shape[:-2] + (1, param.shape[-1]), param.dtype)


def _init_variance(param):
  return None if _is_factored(param) else jnp.zeros_like(param)


def _l2_norm(x, axis=None):
  return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=axis is not None))


def _mean_square(g, axis):
  # torch squares the norm (a square root then a square) rather than averaging
  # g², and the two round differently.
  return jnp.square(_l2_norm(g, axis)) / g.shape[axis]


def _adafactor_scalars(step, hp):
  t = as_python_float(step)
  lr = hp['lr']
  eps1, eps2 = hp['eps']
  # torch's rho_t = min(lr, 1 / step ** 0.5): Python's min, which keeps lr (a
  # tensor, if it is one) unless the other compares smaller, in lr's dtype.
  rho_is_lr = ~(in_dtype_of(1 / t ** 0.5, lr) < lr)
  scalars = {
      'decay_weight': t ** hp['beta2_decay'],  # torch's one_minus_beta2_t
      'rho': jnp.where(rho_is_lr, lr.astype(t.dtype), 1 / t ** 0.5),
      'rho_is_lr': rho_is_lr,
      'eps2': eps2,
      'd': hp['d'],
  }
  if eps1 is not None:
    scalars['eps1'] = eps1
    scalars['eps1_squared'] = eps1 * eps1
  if 'weight_decay' in hp:
    scalars['decay_factor'] = decay_factor(hp)
  return scalars


def _second_moment(g, buffers, s, eps1):
  """The variance estimate ``V`` and the new buffers."""
  if not _is_factored(g):
    variance = lerp(buffers['variance'], g * g, s['decay_weight'])
    return variance, {**buffers, 'variance': variance}
  row_var = lerp(buffers['row_var'], _mean_square(g, -1), s['decay_weight'])
  col_var = lerp(buffers['col_var'], _mean_square(g, -2), s['decay_weight'])
  # torch's ``row_var @ col_var`` contracts a dimension of size 1: each entry is
  # one product, so broadcasting computes the same outer product.
  v = (row_var * col_var) / jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), eps1)
  return v, {**buffers, 'row_var': row_var, 'col_var': col_var}


def _adafactor_math(grad, param, buffers, s, *, maximize, weight_decay, lr_dtype=None):
  g = ascent_or_descent(grad, maximize)
  if 'eps1' in s:
    eps1, eps1_squared = s['eps1'], s['eps1_squared']
  else:
    eps1 = jnp.finfo(g.dtype).eps
    eps1_squared = eps1 * eps1
  # The relative step size uses the param before weight decay, as torch's does.
  # torch takes these two maxima with Python's max, which a NaN second argument loses.
  relative_scale = python_max(s['eps2'], _l2_norm(param) / param.size ** 0.5)
  v, new_buffers = _second_moment(g, buffers, s, eps1)
  u = lax.rsqrt(jnp.maximum(v, eps1_squared)) * g
  clip = python_max(1.0, _l2_norm(u) / (u.size ** 0.5 * s['d']))
  step_size = -(relative_scale * s['rho']) / clip
  if lr_dtype is not None:
    # torch's alpha = max(...) * rho_t and -alpha / denom are tensor arithmetic
    # in a tensor lr's dtype when rho_t is that lr.
    as_tensor = lambda x: x.astype(lr_dtype)
    tensor_step_size = -(as_tensor(relative_scale) * as_tensor(s['rho'])) / as_tensor(clip)
    step_size = jnp.where(s['rho_is_lr'], tensor_step_size.astype(g.dtype), step_size)
  update = step_size * u
  if weight_decay:
    update = decoupled_weight_decay(param, s['decay_factor']) + update
  return update, new_buffers


def _reject_complex(params) -> None:
  if any(jnp.iscomplexobj(p) for p in jax.tree.leaves(params)):
    raise RuntimeError('Adafactor does not support complex parameters')


@mirrors('Adafactor')
def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: ScalarOrSchedule = -0.8,
    eps: tuple[ScalarOrSchedule | None, ScalarOrSchedule] = (None, 1e-3),
    d: ScalarOrSchedule = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
  r"""Adafactor, as ``torch.optim.Adafactor`` (torch's variant of the algorithm).

  With :math:`t` the param's step count, :math:`\tau` = ``beta2_decay`` and
  :math:`\operatorname{RMS}(x) = \|x\|_2 / \sqrt{\operatorname{numel} x}`:

  .. math::
     g_t &= \pm g_t, \quad w_t = t^{\tau}, \quad \rho_t = \min(\gamma, 1/\sqrt t), \quad
     \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta_{t-1}))\,\rho_t \\
     \theta &\leftarrow \theta_{t-1}(1 - \gamma\lambda) \\
     R_t &= \operatorname{lerp}(R_{t-1}, \operatorname{mean}_{-1} g_t^2, w_t), \quad
     C_t = \operatorname{lerp}(C_{t-1}, \operatorname{mean}_{-2} g_t^2, w_t), \quad
     V_t = \frac{R_t C_t}{\max(\operatorname{mean}_{-2} R_t, \epsilon_1)}
     \quad (\dim \ge 2) \\
     V_t &= \operatorname{lerp}(V_{t-1}, g_t^2, w_t) \quad (\dim \le 1) \\
     U_t &= g_t / \sqrt{\max(V_t, \epsilon_1^2)}, \quad
     \theta_t = \theta - \frac{\alpha_t}{\max(1, \operatorname{RMS}(U_t)/d)}\, U_t

  Params with two or more dimensions factor the second moment over their last
  two dimensions (leading dimensions are a batch). ``lr`` caps the relative
  step size :math:`\rho_t` and scales the weight decay; it does not multiply the
  update. The order of operations is torch's for-loop implementation's.

  Args:
    lr: learning rate :math:`\gamma`.
    beta2_decay: :math:`\tau \le 0`, the exponent of the second moment's weight.
    eps: :math:`(\epsilon_1, \epsilon_2)`. :math:`\epsilon_1` floors the
      variance estimate; None (structural: it stays None) means the machine
      epsilon of each param's dtype. torch takes the dtype of the group's first
      param instead, which only differs for groups that mix dtypes. Params in
      bfloat16/float16, which are updated in float32 arithmetic, use float32's
      epsilon. :math:`\epsilon_2` floors the RMS of the param.
    d: clipping threshold :math:`d \ge 1` on the RMS of the update.
    weight_decay: decoupled weight decay :math:`\lambda` (the Python number 0
      compiles it out).
    foreach: torch's implementation switch; Adafactor has one
      implementation, the per-leaf loop.
    maximize: {maximize}

  Raises:
    RuntimeError: from ``init``, for complex params (as torch's ``step``).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers import adafactor
    >>> tx = adafactor(lr=0.1)
    >>> params = jnp.array([3.0, -4.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.5, -2.0]), state, params)
    >>> updates.round(4)  # α = RMS(θ)·min(lr, 1) ≈ 0.354; U = sign(g) has RMS 1
    Array([-0.3536,  0.3536], dtype=float32)
    >>> state.variance
    Array([0.25, 4.  ], dtype=float32)
  """
  eps1, eps2 = check_pair(eps, 'eps')
  check_at_least(lr, 'lr', 'Learning rate should be >= 0 but is')
  check_at_most(beta2_decay, 'beta2_decay', 'beta2_decay should be <= 0 but is', 0.0)
  if eps1 is not None:
    check_at_least(eps1, 'eps[0]', 'epsilon1 should be >= 0 but is')
  check_at_least(eps2, 'eps[1]', 'epsilon2 should be >= 0 but is')
  check_at_least(d, 'd', 'Clipping threshold d should be >= 1 but is', low=1.0)
  check_at_least(weight_decay, 'weight_decay', 'weight_decay should be >= 0 but is')
  del foreach  # One implementation: the per-leaf loop.

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'beta2_decay': beta2_decay, 'eps': (eps1, eps2), 'd': d,
       'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  tx = elementwise_transformation(
      name='adafactor',
      state_cls=AdafactorState,
      hyperparams=hyperparams,
      buffers={'row_var': _init_row_var, 'col_var': _init_col_var,
               'variance': _init_variance},
      scalars=_adafactor_scalars,
      math=partial(_adafactor_math, maximize=maximize, weight_decay=has_weight_decay,
                   lr_dtype=array_dtype(lr)),
      needs_params=True,  # The step size is relative to the param's RMS.
      compiled_out=compiled_out,
      elementwise=False,
  )

  def init(params):
    _reject_complex(params)
    return tx.init(params)

  return GradientTransformationExtraArgs(init, tx.update)
