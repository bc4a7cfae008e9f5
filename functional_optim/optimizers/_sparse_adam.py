"""SparseAdam: Adam on the entries a sparse gradient touches, ``torch.optim.SparseAdam``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse

from functional_optim.core.hyperparams import ScalarOrSchedule
from functional_optim.core.numerics import as_python_float, in_dtype_of
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.tree import check_gradient_tree, check_state_tree
from functional_optim.core.validation import (
    check_beta, check_greater_than, check_pair, check_state_type)
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._shared import ascent_or_descent


class SparseAdamState(NamedTuple):
  """State of :func:`sparse_adam`, with torch's per-parameter keys (dense buffers).

  Attributes:
    count: ``update`` calls so far (int32), the count schedules are evaluated at.
    hyperparams: the hyperparameters the last step used (before the first: the
      ones it will use), 0-d arrays by name; see
      :func:`~functional_optim.get_hyperparams`.
    step: per param, the updates in which it had a gradient, stored entries or
      not (a float32 array, where torch keeps a Python int).
    exp_avg: per param, the first moment :math:`m`, dense.
    exp_avg_sq: per param, the second moment :math:`v`, dense.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  step: Any
  exp_avg: Any
  exp_avg_sq: Any


def _sparse_adam_scalars(step, hp):
  t = as_python_float(step)
  lr = hp['lr']
  beta1, beta2 = hp['betas']
  return {
      'one_minus_beta1': 1 - beta1,
      'one_minus_beta2': 1 - beta2,
      # Both bias corrections go into the step size: eps is not corrected.
      # torch: lr * math.sqrt(bc2) / bc1, tensor arithmetic for a tensor lr.
      'step_size': (lr * in_dtype_of(jnp.sqrt(1 - beta2 ** t), lr)
                    / in_dtype_of(1 - beta1 ** t, lr)),
      'eps': hp['eps'],
  }


def _sparse_adam_math(grad, touched, buffers, s, *, maximize):
  """Adam's step where ``touched`` is nonzero; elsewhere nothing decays or moves.

  ``grad`` holds the summed values of a sparse gradient (zero where nothing is
  stored); ``touched`` marks the entries it stores.
  """
  g = ascent_or_descent(grad, maximize)
  exp_avg, exp_avg_sq = buffers['exp_avg'], buffers['exp_avg_sq']
  # torch adds increments (g − m)(1 − β) to the moments instead of lerping.
  new_exp_avg = exp_avg + (g - exp_avg) * s['one_minus_beta1']
  new_exp_avg_sq = exp_avg_sq + (g * g - exp_avg_sq) * s['one_minus_beta2']
  update = -s['step_size'] * (new_exp_avg / (jnp.sqrt(new_exp_avg_sq) + s['eps']))
  touched = touched != 0
  return jnp.where(touched, update, 0), {
      'exp_avg': jnp.where(touched, new_exp_avg, exp_avg),
      'exp_avg_sq': jnp.where(touched, new_exp_avg_sq, exp_avg_sq),
  }


def _is_sparse(x) -> bool:
  return isinstance(x, sparse.BCOO)


def _is_gradient(x) -> bool:
  return x is None or _is_sparse(x)


def _summed_values(grad):
  """The dense sum of a sparse gradient's entries: torch's ``coalesce``."""
  if grad is None:
    return None
  if not _is_sparse(grad):
    raise RuntimeError(
        'SparseAdam does not support dense gradients, please consider Adam instead')
  return grad.todense()


def _stored_entries(grad, like):
  """Nonzero where ``grad`` stores a value, an explicit zero included."""
  if grad is None:  # No gradient touches nothing.
    return jnp.zeros_like(like)
  return sparse.BCOO((jnp.ones_like(grad.data), grad.indices), shape=grad.shape).todense()


def _check_params(params) -> None:
  """torch's checks of the params, with its messages (one group: indices ``[0, i]``)."""
  leaves = jax.tree.leaves(params, is_leaf=_is_sparse)
  sparse_at = [[0, i] for i, p in enumerate(leaves) if _is_sparse(p)]
  if sparse_at:
    raise ValueError(f'Sparse params at indices {sparse_at}: SparseAdam requires '
                     f'dense parameter tensors')
  complex_at = [[0, i] for i, p in enumerate(leaves) if jnp.iscomplexobj(p)]
  if complex_at:
    raise ValueError(f'Complex params at indices {complex_at}: SparseAdam does not '
                     f'support complex parameters')


@mirrors('SparseAdam')
def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
  r"""SparseAdam, as ``torch.optim.SparseAdam``: Adam masked to a sparse gradient.

  Gradients are :class:`jax.experimental.sparse.BCOO` arrays (or None), such as
  the gradient of an embedding lookup: the rows looked up, as indices, and their
  gradients, as values. Duplicate indices are summed. With :math:`I` the stored
  entries (explicit zeros included) and :math:`g_I` their summed values:

  .. math::
     m_I &\leftarrow m_I + (\pm g_I - m_I)(1-\beta_1), \quad
     v_I \leftarrow v_I + (g_I^2 - v_I)(1-\beta_2) \\
     \theta_I &\leftarrow \theta_I - \frac{\gamma\sqrt{1-\beta_2^t}}{1-\beta_1^t}
       \cdot \frac{m_I}{\sqrt{v_I} + \epsilon}

  Entries outside :math:`I` keep their value and moments. :math:`t` counts
  every update in which the param has a gradient, even one that stores
  nothing. The updates returned are dense arrays, zero outside :math:`I`.

  Args:
    lr: learning rate :math:`\gamma > 0`.
    betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
    eps: :math:`\epsilon > 0`, added after the square root, not bias-corrected.
    maximize: {maximize}

  Raises:
    ValueError: from ``init``, for sparse or complex params (``i`` in torch's
      ``[0, i]`` is the position among the params' leaves).
    RuntimeError: from ``update``, for a dense gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> from jax.experimental import sparse
    >>> from functional_optim.optimizers import sparse_adam
    >>> tx = sparse_adam(lr=0.1)
    >>> table = jnp.zeros((4, 2))
    >>> state = tx.init(table)
    >>> rows = jnp.array([[0], [2], [0]])  # row 0 looked up twice
    >>> values = jnp.array([[1.0, -1.0], [0.5, 0.5], [1.0, -3.0]])
    >>> grad = sparse.BCOO((values, rows), shape=table.shape)
    >>> updates, state = tx.update(grad, state)
    >>> updates.round(6)  # rows 1 and 3 were not looked up: no move
    Array([[-0.1,  0.1],
           [ 0. ,  0. ],
           [-0.1, -0.1],
           [ 0. ,  0. ]], dtype=float32)
  """
  beta1, beta2 = check_pair(betas, 'betas')
  check_greater_than(lr, 'lr', 'Invalid learning rate')
  check_greater_than(eps, 'eps', 'Invalid epsilon value')
  check_beta(beta1, 0)
  check_beta(beta2, 1)

  tx = elementwise_transformation(
      name='sparse_adam',
      state_cls=SparseAdamState,
      hyperparams={'lr': lr, 'betas': (beta1, beta2), 'eps': eps},
      buffers={'exp_avg': jnp.zeros_like, 'exp_avg_sq': jnp.zeros_like},
      scalars=_sparse_adam_scalars,
      math=partial(_sparse_adam_math, maximize=maximize),
      # The math reads no param: the param slot carries the stored-entry mask.
      needs_params=True,
  )

  def init(params):
    _check_params(params)
    return tx.init(params)

  def update(grads, state, params=None, **extra):
    del extra  # Accepted and ignored, as the protocol requires.
    check_state_type(state, SparseAdamState, 'sparse_adam')  # before reading its fields
    if params is not None:  # never read, but a state of other params shows against them
      check_state_tree(state.exp_avg, params, 'sparse_adam')
    values = jax.tree.map(_summed_values, grads, is_leaf=_is_gradient)
    check_gradient_tree(values, state.exp_avg)
    touched = jax.tree.map(_stored_entries, grads, state.exp_avg, is_leaf=_is_gradient)
    return tx.update(values, state, touched)

  return GradientTransformationExtraArgs(init, update)
