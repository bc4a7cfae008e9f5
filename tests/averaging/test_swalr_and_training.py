"""SWALR's lrs equal torch's; the documented SWA and EMA loops beat the last iterate."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import averaging as A


def torch_swalr(torch, steps, lr, **kwargs):
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheduler = torch.optim.swa_utils.SWALR(opt, **kwargs)
    lrs = [opt.param_groups[0]['lr']]
    for _ in range(steps):
      opt.step()
      scheduler.step()
      lrs.append(opt.param_groups[0]['lr'])
  return np.array(lrs)


@pytest.mark.parametrize('kwargs', [
    dict(swa_lr=0.05), dict(swa_lr=0.05, anneal_epochs=7, anneal_strategy='linear'),
    dict(swa_lr=0.2, anneal_epochs=1), dict(swa_lr=0.01, anneal_epochs=0),
    dict(swa_lr=0.01, anneal_epochs=0, anneal_strategy='linear'),
    dict(swa_lr=0.3, anneal_epochs=25, anneal_strategy='cos'),
], ids=str)
def test_swalr_matches_torch(x64, kwargs, torch):
  expected = torch_swalr(torch, 40, 0.1, **kwargs)
  schedule = A.swalr(0.1, **kwargs)
  got = np.asarray(jax.jit(lambda c: jax.lax.map(schedule, c))(jnp.arange(41)))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize('kwargs, match', [
    (dict(anneal_strategy='exp'), 'anneal_strategy'),
    (dict(anneal_epochs=-1), 'anneal_epochs'),
    (dict(anneal_epochs=2.5), 'anneal_epochs'),
])
def test_swalr_bad_arguments_raise_as_torch(kwargs, match, torch):
  with pytest.raises(ValueError, match=match):
    A.swalr(0.1, 0.05, **kwargs)
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
  with pytest.raises(ValueError, match=match):
    torch.optim.swa_utils.SWALR(opt, 0.05, **kwargs)


def regression_problem():
  """Noisy linear regression: constant-lr minibatch SGD rattles around the optimum,
  which the training set pins down well (its least-squares fit is 0.2% off)."""
  rng = np.random.default_rng(0)
  w_true = rng.normal(size=8)
  x_train, x_test = rng.normal(size=(2048, 8)), rng.normal(size=(2048, 8))
  y_train = x_train @ w_true + rng.normal(scale=1.0, size=2048)
  y_test = x_test @ w_true + rng.normal(scale=1.0, size=2048)
  return (jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.float32),
          jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.float32))


def mse(params, x, y):
  return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)


def train(tx, epochs=20, batch=8):
  x, y, x_test, y_test = regression_problem()
  params = {'w': jnp.zeros(8), 'b': jnp.zeros(())}
  state = tx.init(params)

  @jax.jit
  def step(params, state, xb, yb):
    grads = jax.grad(mse)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  order = np.random.default_rng(1)
  for _ in range(epochs):
    perm = order.permutation(len(x))
    for i in range(0, len(x), batch):
      idx = perm[i:i + batch]
      params, state = step(params, state, x[idx], y[idx])
  return params, state, lambda p: float(mse(p, x_test, y_test))


def test_swa_loop_with_swalr_beats_the_last_iterate():
  steps_per_epoch = 2048 // 8
  # torch's recipe: train, then from swa_start anneal to swa_lr and average per epoch.
  swa_start = 10 * steps_per_epoch
  lr = fo.schedules.sequential_lr(
      [fo.schedules.lambda_lr(0.1, lambda e: 1.0),
       A.swalr(0.1, swa_lr=0.05, anneal_epochs=steps_per_epoch)], [swa_start])
  tx = A.averaged(fo.sgd(lr=lr), A.swa(), start=swa_start, every=steps_per_epoch)
  params, state, test_loss = train(tx)
  assert int(state.average.n_averaged) == 10
  assert test_loss(state.average.averaged) < test_loss(params)


def test_ema_loop_beats_the_last_iterate():
  tx = A.averaged(fo.sgd(lr=0.05, momentum=0.5), A.ema(decay=0.99))
  params, state, test_loss = train(tx, epochs=10)
  assert int(state.average.n_averaged) == 10 * 256
  assert test_loss(state.average.averaged) < test_loss(params)


def test_averaged_checks_its_arguments_and_needs_params():
  with pytest.raises(ValueError, match='start'):
    A.averaged(fo.sgd(lr=0.1), start=-1)
  with pytest.raises(ValueError, match='every'):
    A.averaged(fo.sgd(lr=0.1), every=0)
  tx = A.averaged(fo.sgd(lr=0.1))
  params = {'w': jnp.zeros(2)}
  with pytest.raises(ValueError, match='needs params'):
    tx.update(params, tx.init(params))
