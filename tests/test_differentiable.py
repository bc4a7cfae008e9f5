"""Gradients flow through optimizer steps (torch's ``differentiable=True``, for free).

For every algorithm of the registry (``tests/algorithms.py``), in its
configuration (its options on), the gradient of the loss after k steps with
respect to the initial params, by ``jax.grad`` through the updates, matches a
central finite difference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import functional_optim as fo
from tests.algorithms import ALGORITHMS, NotHere, PerAlgorithm

# The algorithms whose gradient through the steps is not checked here, and why;
# every other one of the registry is.
NOT_DIFFERENTIATED = PerAlgorithm('test_differentiable.py NOT_DIFFERENTIATED', {
    'muon': NotHere('Newton-Schulz runs in bfloat16, whose rounding swamps a finite '
                    'difference'),
    'lbfgs': NotHere("reverse mode does not go through its while_loops (the iterations and "
                     "the line search stop on data); torch's LBFGS has no differentiable= "
                     "either"),
})
# Beyond the registry's configurations: an lr schedule, with maximize (which ascends
# the loss; its gradient through the steps is as valid).
EXTRA = {
    'adam_schedule_maximize': ('adam', dict(lr=lambda c: 0.05 / (1.0 + c), maximize=True)),
}
CASES = {**{name: (name, None) for name in NOT_DIFFERENTIATED.names()}, **EXTRA}


def _loss(w):
  return jnp.sum(jnp.log(jnp.cosh(w - 0.3)) + 0.1 * w ** 4)


def _loss_after_steps(algorithm, tx, w0, steps=5):
  state = tx.init(w0)
  w = w0
  for _ in range(steps):
    grads = jax.grad(_loss)(w)
    if algorithm.sparse_gradients:  # every entry stored
      grads = sparse.BCOO.fromdense(grads, nse=grads.size)
    updates, state = tx.update(grads, state, w)
    w = fo.apply_updates(w, updates)
  return _loss(w)


@pytest.mark.parametrize('case', CASES)
def test_gradient_through_updates_matches_finite_differences(case, x64):
  name, kwargs = CASES[case]
  algorithm = ALGORITHMS[name]
  tx = algorithm.build() if kwargs is None else algorithm.builder(**kwargs)
  w0 = jnp.array([0.8, -0.4, 1.3, 0.05])
  f = lambda w: _loss_after_steps(algorithm, tx, w)
  analytic = jax.jit(jax.grad(f))(w0)
  # Every coordinate moved both ways at once: one compiled program.
  h = 1e-6 * jnp.eye(w0.size)
  shifted = jax.jit(jax.vmap(f))
  numeric = (shifted(w0 + h) - shifted(w0 - h)) / (2 * 1e-6)
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
  assert np.all(np.abs(analytic) > 1e-6)  # the check is not vacuous
