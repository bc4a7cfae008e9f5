"""What single optimizers do, checked by hand rather than against torch.

The parity tests (``tests/algorithms_vs_torch/``) need torch; these run without it.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import adagrad
from functional_optim.optimizers import rmsprop
from functional_optim.optimizers import rprop


def test_rprop_sign_logic():
  """Same sign: grow and move; flip: shrink, stay, forget; no history: move as is."""
  tx = rprop(lr=0.1, etas=(0.5, 1.2), step_sizes=(0.01, 1.0))
  state = tx.init(jnp.zeros(3))
  _, state = tx.update(jnp.array([1.0, 1.0, 0.0]), state)
  updates, state = tx.update(jnp.array([2.0, -3.0, -1.0]), state)
  np.testing.assert_allclose(updates, [-0.12, 0.0, 0.1], rtol=1e-6)
  np.testing.assert_allclose(state.step_size, [0.12, 0.05, 0.1], rtol=1e-6)
  # Exact on any CPU: prev is the gradient itself, or the 0 a flip sets.
  np.testing.assert_array_equal(state.prev, [2.0, 0.0, -1.0])
  updates, state = tx.update(jnp.array([1.0, -3.0, -1.0]), state)
  # After a flip the next step sees no history: the step size is kept, not grown.
  np.testing.assert_allclose(updates, [-0.144, 0.05, 0.12], rtol=1e-6)


def test_rmsprop_arguments_are_positional_in_torch_order():
  """torch's RMSprop has no keyword-only arguments: positions must match."""
  args = (0.01, 0.9, 1e-8, 0.0, 0.5, True)  # lr, alpha, eps, weight_decay, momentum, centered
  state = rmsprop(*args).init(jnp.zeros(2))
  assert state.grad_avg is not None and state.momentum_buffer is not None
  assert sorted(state.hyperparams) == ['alpha', 'eps', 'lr', 'momentum']


def test_adagrad_initial_accumulator_value_is_no_schedule():
  with pytest.raises(TypeError, match='not a schedule'):
    adagrad(initial_accumulator_value=lambda count: 0.1)
