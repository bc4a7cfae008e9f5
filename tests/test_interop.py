"""Our transformations inside flax (nnx.Optimizer, TrainState) and optax.chain,
with float32, bfloat16 and float16 params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import functional_optim as fo

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
OPTIMIZERS = {
    'sgd': lambda: fo.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    'adam': lambda: fo.adam(lr=1e-2, amsgrad=True),
    'adamw': lambda: fo.adamw(lr=1e-2),
}


def _data():
  x = jax.random.normal(jax.random.key(0), (64, 4))
  y = jnp.tanh(x @ jnp.array([1.0, -2.0, 0.5, 1.5]))[:, None]
  return x, y


class MLP(nnx.Module):
  def __init__(self, dtype, rngs):
    self.l1 = nnx.Linear(4, 16, param_dtype=dtype, dtype=dtype, rngs=rngs)
    self.l2 = nnx.Linear(16, 1, param_dtype=dtype, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.tanh(self.l1(x.astype(self.l1.kernel.dtype))))


def _mse(pred, y):
  return jnp.mean((pred.astype(jnp.float32) - y) ** 2)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_nnx_optimizer(name, dtype):
  x, y = _data()
  model = MLP(dtype, nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, OPTIMIZERS[name](), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: _mse(m(x), y))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  assert losses[-1] < 0.5 * losses[0], losses
  assert model.l1.kernel.dtype == dtype
  hp = fo.get_hyperparams(nnx.as_pure(optimizer.opt_state))
  assert 'lr' in hp


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_flax_train_state_and_optax_chain(name, dtype):
  x, y = _data()
  model = MLP(dtype, nnx.Rngs(1))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = optax.chain(optax.clip_by_global_norm(10.0), OPTIMIZERS[name]())

  def apply_fn(params, x):
    state = nnx.State(params)
    return nnx.merge(graphdef, state)(x)

  state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=tx)

  @jax.jit
  def train_step(state):
    loss, grads = jax.value_and_grad(lambda p: _mse(state.apply_fn(p, x), y))(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(60):
    state, loss = train_step(state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(state.params))


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
def test_low_precision_follows_float32(dtype):
  """A low-precision run stays within its dtype's resolution of the float32 run."""
  tx = fo.adam(lr=1e-2)
  params = {'w': jnp.linspace(-1, 1, 16)}
  grad_fn = jax.grad(lambda p: jnp.sum(jnp.sin(3 * p['w'].astype(jnp.float32))))

  def run(params):
    state = tx.init(params)
    for _ in range(10):
      updates, state = tx.update(jax.tree.map(lambda g, p: g.astype(p.dtype),
                                              grad_fn(params), params), state, params)
      params = fo.apply_updates(params, updates)
    return params['w']

  reference = run(params)
  low = run(jax.tree.map(lambda p: p.astype(dtype), params))
  assert low.dtype == dtype
  resolution = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(low.astype(jnp.float32), reference, atol=20 * resolution)
