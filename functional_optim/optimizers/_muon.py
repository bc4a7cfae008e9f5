"""Muon: momentum orthogonalized by Newton–Schulz, for 2-D params: ``torch.optim.Muon``."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import (
    ScalarOrSchedule, array_dtype, compile_out_zeros)
from functional_optim.core.numerics import lerp
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.validation import check_at_least
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import (
    WEIGHT_DECAY_GATE, decay_factor, decoupled_weight_decay)

#: Keller Jordan's quintic coefficients (torch's defaults).
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


class MuonState(NamedTuple):
  """State of :func:`muon`; ``momentum_buffer`` is torch's per-parameter key.

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the number of updates it got (torch's Muon keeps no step).
    momentum_buffer: per param, the momentum :math:`B`.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  momentum_buffer: Any


def newton_schulz(x: jax.Array, coefficients: Sequence[Any], steps: int,
                  eps: Any) -> jax.Array:
  r"""Orthogonalizes the matrix ``x`` by a quintic Newton–Schulz iteration, in bfloat16.

  With :math:`X_0 = x / \max(\|x\|_F, \epsilon)` (transposed first when ``x``
  has more rows than columns, so that the Gram matrix is the small one), each
  of the ``steps`` iterations is

  .. math::
     A = X X^\top, \quad B = b A + c A A, \quad X \leftarrow a X + B X,

  which drives every singular value of :math:`X` towards 1, so the result
  approximates :math:`UV^\top` from the SVD :math:`x = USV^\top` (with the
  default coefficients, singular values end up in about [0.7, 1.2]).

  This is torch's ``_zeropower_via_newtonschulz``: the input is rounded to
  bfloat16; the norm, the division and each matrix product accumulate in
  float32; and ``b A + c A A`` and ``a X + B X`` are each rounded to bfloat16
  once, as ``torch.addmm`` does. Results agree with torch bit for bit except
  where a float32 result lands next to a bfloat16 rounding boundary and the two
  libraries round it differently: torch's matmul kernels sum products in an
  order of their own (it depends on the CPU or GPU), and XLA may fuse
  ``b A + c A A`` into multiply-adds. A few calls in a thousand differ so for
  4×4 matrices, more for larger ones, by a bfloat16 ulp or two.

  Args:
    x: a 2-D array of any float dtype.
    coefficients: :math:`(a, b, c)`, numbers or 0-d arrays (used in float32).
    steps: the number of iterations (a Python int).
    eps: the floor of the norm, against division by zero.

  Returns:
    The orthogonalized matrix, bfloat16, of the shape of ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optimizers._muon import newton_schulz
    >>> o = newton_schulz(jnp.array([[3.0, 0.0], [0.0, 0.5]]),
    ...                   (3.4445, -4.775, 2.0315), steps=5, eps=1e-7)
    >>> o.dtype, [round(float(v), 1) for v in jnp.diag(o)]  # both pushed towards 1
    (dtype(bfloat16), [0.7, 1.0])
  """
  if x.ndim != 2:
    raise ValueError('Input tensor gradient must be a 2D matrix')
  f32, bf16 = jnp.float32, jnp.bfloat16
  a, b, c = (jnp.asarray(k).astype(f32) for k in coefficients)

  def matmul(p, q):
    return jnp.matmul(p, q, preferred_element_type=f32)

  # torch's .bfloat16() of a float64 tensor rounds through float32.
  o = x.astype(f32).astype(bf16)
  tall = x.shape[0] > x.shape[1]
  if tall:
    o = o.T
  norm = jnp.sqrt(jnp.sum(jnp.square(o.astype(f32)))).astype(bf16)
  # torch clamps the bfloat16 norm with eps in float32, then rounds again.
  norm = jnp.maximum(norm.astype(f32), jnp.asarray(eps).astype(f32)).astype(bf16)
  o = (o.astype(f32) / norm.astype(f32)).astype(bf16)
  for _ in range(steps):
    gram = matmul(o, o.T).astype(bf16)
    gram_update = (b * gram.astype(f32) + c * matmul(gram, gram)).astype(bf16)
    o = (a * o.astype(f32) + matmul(gram_update, o)).astype(bf16)
  return o.T if tall else o


def adjusted_lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
  r"""The factor Muon scales ``lr`` by for an :math:`A \times B` param (a Python float).

  ``None`` or ``'original'`` (Keller Jordan's): :math:`\sqrt{\max(1, A/B)}`;
  ``'match_rms_adamw'`` (Moonshot's, to reuse AdamW's lr): :math:`0.2\sqrt{\max(A, B)}`.

  Raises:
    ValueError: any other ``adjust_lr_fn``.

  Example:
    >>> from functional_optim.optimizers._muon import adjusted_lr_ratio
    >>> adjusted_lr_ratio(None, (16, 4)), adjusted_lr_ratio(None, (4, 16))
    (2.0, 1.0)
    >>> adjusted_lr_ratio('match_rms_adamw', (16, 4))
    0.8
  """
  rows, cols = shape[:2]
  if adjust_lr_fn is None or adjust_lr_fn == 'original':
    return math.sqrt(max(1, rows / cols))
  if adjust_lr_fn == 'match_rms_adamw':
    return 0.2 * math.sqrt(max(rows, cols))
  raise ValueError(f'Adjust learning rate function {adjust_lr_fn} is not supported')


def _muon_scalars(step, hp):
  del step  # Muon's update does not depend on the step count.
  a, b, c = hp['ns_coefficients']
  scalars = {
      'lr': hp['lr'],
      'momentum': hp['momentum'],
      'one_minus_momentum': 1 - hp['momentum'],
      'eps': hp['eps'],
      'ns_a': a, 'ns_b': b, 'ns_c': c,
  }
  if 'weight_decay' in hp:
    scalars['decay_factor'] = decay_factor(hp)
  return scalars


def _muon_math(grad, param, buffers, s, *, nesterov, ns_steps, adjust_lr_fn,
               weight_decay, lr_dtype=None):
  buf = lerp(buffers['momentum_buffer'], grad, s['one_minus_momentum'])
  direction = lerp(grad, buf, s['momentum']) if nesterov else buf
  ortho = newton_schulz(direction, (s['ns_a'], s['ns_b'], s['ns_c']), ns_steps,
                        s['eps']).astype(grad.dtype)
  # torch's ``lr * adjusted_ratio``: a tensor lr multiplies in its own dtype.
  lr = s['lr'] if lr_dtype is None else s['lr'].astype(lr_dtype)
  adjusted_lr = (lr * adjusted_lr_ratio(adjust_lr_fn, grad.shape)).astype(grad.dtype)
  update = -adjusted_lr * ortho
  if weight_decay:
    update = decoupled_weight_decay(param, s['decay_factor']) + update
  return update, {'momentum_buffer': buf}


def _check_params(params) -> None:
  """torch's constructor check (2-D params only) and its step's (no complex)."""
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    where = jax.tree_util.keystr(path) or '<tree root>'
    if jnp.ndim(p) != 2:
      raise ValueError(
          f'Muon only supports 2D parameters whereas we found a parameter with '
          f'size: {tuple(jnp.shape(p))} at {where}; give the other params another '
          f'transformation with functional_optim.core.partition.partition')
    if jnp.iscomplexobj(p):
      raise RuntimeError(f'Muon does not support complex parameters (at {where})')


def _check_newton_schulz(ns_coefficients, ns_steps) -> tuple[Any, Any, Any]:
  """The checks torch makes in its first step, made here with its messages."""
  if ns_steps >= 100:
    raise ValueError('Number of steps must be less than 100 for computational efficiency')
  if len(ns_coefficients) != 3:
    raise ValueError('Coefficients must be a tuple of exactly 3 values')
  return tuple(ns_coefficients)


@mirrors('Muon')
def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: ScalarOrSchedule = 0.1,
    momentum: ScalarOrSchedule = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[ScalarOrSchedule, ScalarOrSchedule,
                           ScalarOrSchedule] = DEFAULT_NS_COEFFICIENTS,
    eps: ScalarOrSchedule = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""Muon, as ``torch.optim.Muon``: for 2-D params (weight matrices) only.

  .. math::
     B_t &= \operatorname{lerp}(B_{t-1}, g_t, 1-\mu) \\
     \tilde B_t &= \operatorname{lerp}(g_t, B_t, \mu) \ \text{(nesterov)}, \quad
       \tilde B_t = B_t \ \text{(else)} \\
     O_t &= \mathrm{NS}^{(a,b,c)}_k(\tilde B_t;\ \epsilon) \\
     \theta_t &= \theta_{t-1}(1-\gamma\lambda) - \gamma' O_t, \quad
     \gamma' = \gamma\sqrt{\max(1, A/B)} \ \text{or} \ 0.2\gamma\sqrt{\max(A, B)}

  for an :math:`A \times B` param, where :math:`\mathrm{NS}` is ``ns_steps``
  Newton–Schulz iterations in bfloat16 (:func:`newton_schulz`). Biases, norms
  and embeddings need another optimizer: see
  :func:`functional_optim.core.partition.partition`.

  Args:
    lr: learning rate :math:`\gamma`.
    weight_decay: decoupled weight decay :math:`\lambda` (the Python number 0
      compiles it out).
    momentum: momentum factor :math:`\mu`.
    nesterov: Nesterov momentum.
    ns_coefficients: :math:`(a, b, c)` of the Newton–Schulz polynomial.
    eps: floor of the norm that the iteration's input is divided by.
    ns_steps: number of Newton–Schulz iterations (fewer than 100).
    adjust_lr_fn: ``None`` or ``'original'`` (:math:`\sqrt{\max(1, A/B)}`), or
      ``'match_rms_adamw'`` (:math:`0.2\sqrt{\max(A, B)}`, to reuse AdamW's lr
      and weight decay).

  Raises:
    ValueError: at ``init``, for a param that is not 2-D (the message gives its
      path); at construction, for torch's bad arguments, including those that
      torch only notices in its first step (``ns_steps``, ``ns_coefficients``).
    RuntimeError: at ``init``, for a complex param.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim.optimizers import muon
    >>> tx = muon(lr=0.02)
    >>> params = {'w': jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([[4.0, 0.0], [0.0, 1.0]])},
    ...                            state, params)
    >>> new = fo.apply_updates(params, updates)['w']  # Both directions move alike.
    >>> [round(float(v), 3) for v in jnp.diag(new)], float(new[0, 1])
    ([0.983, 0.983], 0.0)
  """
  check_at_least(lr, 'lr', 'Learning rate should be >= 0 but is')
  check_at_least(momentum, 'momentum', 'momentum should be >= 0 but is')
  check_at_least(weight_decay, 'weight_decay', 'weight decay should be >= 0 but is')
  adjusted_lr_ratio(adjust_lr_fn, (1, 1))  # torch's error for an unknown name.
  ns_coefficients = _check_newton_schulz(ns_coefficients, ns_steps)

  hyperparams, compiled_out = compile_out_zeros(
      {'lr': lr, 'momentum': momentum, 'eps': eps,
                 'ns_coefficients': ns_coefficients, 'weight_decay': weight_decay},
      WEIGHT_DECAY_GATE)
  has_weight_decay = 'weight_decay' in hyperparams
  tx = elementwise_transformation(
      name='muon',
      state_cls=MuonState,
      hyperparams=hyperparams,
      buffers={'momentum_buffer': jnp.zeros_like},
      scalars=_muon_scalars,
      math=partial(_muon_math, nesterov=nesterov, ns_steps=ns_steps,
                   adjust_lr_fn=adjust_lr_fn, weight_decay=has_weight_decay,
                   lr_dtype=array_dtype(lr)),
      needs_params=has_weight_decay,
      compiled_out=compiled_out,
      elementwise=False,
  )

  def init(params):
    _check_params(params)
    return tx.init(params)

  return GradientTransformationExtraArgs(init, tx.update)
