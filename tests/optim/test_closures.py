"""``step(closure)``: compiled once per closure code, errors that point at the closure.

torch's documented idiom defines the closure inside the loop, capturing the batch:
each step is a new closure object. The step compiles once for that code (the
captured batch is data), in a bounded cache; what a closure cannot do inside a
compiled step is an error that says what and where.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import optim
from functional_optim.optim._closures import CACHE_SIZE

nnx = pytest.importorskip('flax.nnx')

RNG = np.random.default_rng(0)
BATCHES = [(jnp.asarray(RNG.normal(size=(8, 3))), jnp.asarray(RNG.normal(size=8)))
           for _ in range(5)]


def mse(params, x, y):
  return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)


@pytest.mark.parametrize('make', [
    lambda: optim.SGD({'w': jnp.zeros(3), 'b': jnp.zeros(())}, lr=0.1, momentum=0.9),
    lambda: optim.LBFGS({'w': jnp.zeros(3), 'b': jnp.zeros(())}, lr=0.5, max_iter=3),
], ids=['sgd', 'lbfgs'])
def test_a_closure_per_batch_compiles_once(make):
  opt, reference = make(), make()
  for x, y in BATCHES:
    def closure(params):  # a new closure object every batch, as in torch's docs
      return mse(params, x, y)
    loss = opt.step(closure)
    # The same steps, without the cache: a hand-written objective per batch.
    want = reference.step(lambda params, x=x, y=y: mse(params, x, y))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
  assert opt._compilations() == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               opt.params, reference.params)


def test_the_cache_is_bounded():
  opt = optim.SGD({'w': jnp.zeros(3), 'b': jnp.zeros(())}, lr=0.1)
  for k in range(CACHE_SIZE + 4):  # other code each time: one program each
    opt.step(eval(f'lambda params: {k + 1} * jnp.sum(params["w"] ** 2)'))
  assert len(opt._closures.keys()) == CACHE_SIZE


def test_a_closure_step_equals_a_handwritten_jitted_step():
  opt = optim.Adam({'w': jnp.ones(3), 'b': jnp.zeros(())}, lr=0.1)
  tx = fo.adam(lr=0.1)
  params = {'w': jnp.ones(3), 'b': jnp.zeros(())}
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(mse)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state, loss

  for x, y in BATCHES:
    loss = opt.step(lambda p: mse(p, x, y))
    params, state, want = step(params, state, x, y)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), opt.params, params)


def test_a_closure_that_returns_no_scalar_says_so():
  opt = optim.SGD({'w': jnp.ones(3)}, lr=0.1)
  with pytest.raises(TypeError, match=r'must be a scalar, got shape \(3,\)'):
    opt.step(lambda params: params['w'] ** 2)
  np.testing.assert_array_equal(opt.params['w'], 1.0)  # nothing changed


def test_a_closure_that_branches_on_a_traced_value_points_at_it():
  opt = optim.SGD({'w': jnp.ones(3)}, lr=0.1)

  def closure(params):
    if params['w'][0] > 0:  # Python control flow on a traced value
      return jnp.sum(params['w'])
    return 0.0
  with pytest.raises(TypeError, match=r'closure runs inside the compiled step.*jnp.where') as error:
    opt.step(closure)
  assert isinstance(error.value.__cause__, jax.errors.TracerBoolConversionError)


def test_a_schedule_with_python_ifs_names_the_schedule():
  def warmup(count):
    return count / 10 if count < 10 else 1.0  # fine in torch's LambdaLR
  tx = fo.sgd(lr=fo.schedules.lambda_lr(0.1, warmup))
  with pytest.raises(TypeError, match=r"schedule of 'lr' \(lambda_lr\[lr_lambda=.*warmup "
                                      r"at .*test_closures.py:\d+\].*jnp.where.*LambdaLR"):
    jax.jit(tx.init)({'w': jnp.ones(2)})


class WithBatchNorm(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 2, rngs=rngs)
    self.norm = nnx.BatchNorm(2, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.linear(x))


def test_an_nnx_closure_updates_the_modules_other_state_as_eager_code_does():
  model, eager = WithBatchNorm(nnx.Rngs(0)), WithBatchNorm(nnx.Rngs(0))
  opt = optim.SGD(model, lr=0.1)
  for x, y in BATCHES:
    opt.step(lambda m: jnp.mean((m(x).sum(-1) - y) ** 2))
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x).sum(-1) - y) ** 2))(eager)
    nnx.update(eager, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(eager, nnx.Param), grads))
  for ours, theirs in [(model.norm.mean, eager.norm.mean), (model.norm.var, eager.norm.var),
                       (model.linear.kernel, eager.linear.kernel)]:
    np.testing.assert_allclose(ours[...], theirs[...], rtol=1e-5, atol=1e-7)
  assert not np.allclose(model.norm.mean[...], 0.0)  # the statistics did move
  assert opt._compilations() == 1
