"""Our transformations inside flax: ``nnx.Optimizer``, ``TrainState``, and orbax.

Every implementation works there as the per-leaf loop does: the packed state of
``foreach`` and ``fused`` (``kernels/packing.py``) included. The three compute the
same math as different XLA programs, so they agree to float32 rounding
(``rtol=1e-6``: a few ulps after three steps), not bit for bit.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip('flax.nnx')
train_state = pytest.importorskip('flax.training.train_state')

import functional_optim as fo  # noqa: E402
from tests.algorithms import ELEMENTWISE  # noqa: E402

IMPLEMENTATIONS = ('loop', 'foreach', 'fused')


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(3, 5, rngs=rngs)
    self.out = nnx.Linear(5, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


X = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)


def loss(model):
  return jnp.mean(jnp.log(jnp.cosh(model(X) - 0.3)))


def train_nnx(tx, steps=3):
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  for _ in range(steps):
    optimizer.update(model, nnx.grad(loss)(model))
  return nnx.state(model, nnx.Param)


@pytest.fixture(scope='module', autouse=True)
def _interpret_pallas():
  # fused on CPU runs XLA's packed math unless Pallas is asked to interpret.
  with fo.kernels.pallas_options(interpret=True, block_rows=8):
    yield


@pytest.mark.parametrize('name', sorted(ELEMENTWISE))
def test_every_implementation_under_nnx_optimizer_equals_the_loop(name):
  algorithm = ELEMENTWISE[name]
  results = {impl: train_nnx(algorithm.build(implementation=impl)) for impl in IMPLEMENTATIONS}
  for impl in ('foreach', 'fused'):
    chex.assert_trees_all_close(results[impl], results['loop'], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_set_hyperparams_on_nnx_optimizer_takes_effect_at_the_next_update(implementation):
  model = MLP(nnx.Rngs(0))
  reference = nnx.clone(model)
  optimizer = nnx.Optimizer(model, fo.adamw(lr=0.1, implementation=implementation),
                            wrt=nnx.Param)
  assert fo.set_hyperparams(optimizer, lr=0.01) is optimizer  # in place
  np.testing.assert_allclose(fo.get_hyperparams(optimizer)['lr'], 0.01, rtol=1e-6)
  optimizer.update(model, nnx.grad(loss)(model))
  # The same step by optax's own Adam with decoupled decay at lr 0.01.
  params = nnx.state(reference, nnx.Param)
  tx = optax.adamw(0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2)
  updates, _ = tx.update(nnx.grad(loss)(reference), tx.init(params), params)
  want = optax.apply_updates(params, updates)
  chex.assert_trees_all_close(nnx.state(model, nnx.Param), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_train_state_steps_with_every_implementation(implementation):
  model = MLP(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.as_pure(params) if hasattr(nnx, 'as_pure') else params

  def apply_fn(params, x):
    return nnx.merge(graphdef, params)(x)

  results = {}
  for impl in ('loop', implementation):
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params,
                                          tx=fo.adam(lr=0.05, implementation=impl))
    grad_fn = jax.jit(jax.grad(lambda p: jnp.mean(jnp.log(jnp.cosh(apply_fn(p, X) - 0.3)))))
    for _ in range(3):
      state = state.apply_gradients(grads=grad_fn(state.params))
    results[impl] = state.params
  chex.assert_trees_all_close(results[implementation], results['loop'], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_packed_state_checkpoints_with_orbax(implementation, tmp_path):
  pytest.importorskip('orbax.checkpoint')
  tx = fo.rmsprop(lr=0.01, momentum=0.9, centered=True, implementation=implementation)
  params = {'w': jnp.ones((3, 4)), 'b': jnp.zeros(4)}
  state = tx.init(params)
  _, state = tx.update(jax.tree.map(lambda p: jnp.sin(p + 1.0), params), state, params)
  fo.distributed.save_state(tmp_path / 'state', state)
  restored = fo.distributed.restore_state(tmp_path / 'state',
                                          fo.distributed.abstract_state(tx, params))
  chex.assert_trees_all_equal_structs(restored, state)
  chex.assert_trees_all_equal(restored, state)  # a copy of the bits
