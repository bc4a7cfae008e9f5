"""Gradients flow through optimizer steps (torch's ``differentiable=True``, for free).

The gradient of the loss after k steps with respect to the initial params, by
``jax.grad`` through the updates, matches a central finite difference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo

OPTIMIZERS = {
    'sgd_nesterov': lambda: fo.sgd(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    'adam_amsgrad': lambda: fo.adam(lr=0.05, amsgrad=True, weight_decay=0.01),
    'adamw': lambda: fo.adamw(lr=0.05, weight_decay=0.1),
    # maximize ascends the loss; its gradient through the steps is as valid.
    'adam_schedule_maximize': lambda: fo.adam(lr=lambda c: 0.05 / (1.0 + c), maximize=True),
}


def _loss(w):
  return jnp.sum(jnp.log(jnp.cosh(w - 0.3)) + 0.1 * w ** 4)


def _loss_after_steps(tx, w0, steps=5):
  state = tx.init(w0)
  w = w0
  for _ in range(steps):
    updates, state = tx.update(jax.grad(_loss)(w), state, w)
    w = fo.apply_updates(w, updates)
  return _loss(w)


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_gradient_through_updates_matches_finite_differences(name, x64):
  tx = OPTIMIZERS[name]()
  w0 = jnp.array([0.8, -0.4, 1.3, 0.05])
  f = lambda w: _loss_after_steps(tx, w)
  analytic = jax.grad(f)(w0)
  h = 1e-6
  numeric = np.array([(f(w0.at[i].add(h)) - f(w0.at[i].add(-h))) / (2 * h)
                      for i in range(w0.size)])
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
  assert np.all(np.abs(analytic) > 1e-6)  # the check is not vacuous
