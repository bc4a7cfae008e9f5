"""reduce_lr_on_plateau cuts the lr where torch's ReduceLROnPlateau does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim.schedules import reduce_lr_on_plateau

# Plateaus, improvements smaller than the thresholds, and recoveries.
LOSSES = ([1.0] * 7 + [0.5] * 4 + [0.49999, 0.4999, 0.45] + [0.45 + 1e-6 * i for i in range(30)]
          + [0.3, 0.2] + [0.2] * 25 + [0.1 * 0.999 ** i for i in range(30)])

CONFIGS = [
    dict(),
    dict(patience=1, cooldown=1, factor=0.5, min_lr=0.02),
    dict(mode='max', patience=2, factor=0.3),
    dict(threshold_mode='abs', threshold=0.01, patience=3),
    dict(mode='max', threshold_mode='abs', threshold=1e-3, patience=0, cooldown=2),
    dict(patience=0, factor=0.9, eps=0.005),  # cuts stop once they would be < eps
    dict(patience=2, factor=0.5, min_lr=0.03, cooldown=3, threshold=0.0),
]


def torch_run(torch, config, losses, lr):
  param = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
  opt = torch.optim.SGD([param], lr=lr)
  scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)
  lrs, params = [], []
  for loss in losses:
    param.grad = torch.full((3,), loss, dtype=torch.float64)
    opt.step()
    scheduler.step(loss)
    lrs.append(opt.param_groups[0]['lr'])
    params.append(param.detach().numpy().copy())
  return np.array(lrs), np.array(params), scheduler


@pytest.mark.parametrize('config', CONFIGS, ids=[str(c) for c in CONFIGS])
def test_lr_and_params_match_torch(x64, config, torch):
  lr = 0.1
  losses = LOSSES
  lrs_torch, params_torch, scheduler = torch_run(torch, config, losses, lr)
  tx = reduce_lr_on_plateau(fo.sgd(lr=lr), **config)
  params = {'w': jnp.ones(3)}
  state = jax.jit(tx.init)(params)

  @jax.jit
  def step(params, state, loss):
    updates, state = tx.update({'w': jnp.full(3, loss)}, state, params, value=loss)
    return fo.apply_updates(params, updates), state

  lrs, history = [], []
  for loss in losses:
    params, state = step(params, state, loss)
    lrs.append(float(fo.get_hyperparams(state)['lr']))
    history.append(np.asarray(params['w']))
  assert step._cache_size() == 1
  np.testing.assert_allclose(lrs, lrs_torch, rtol=1e-15)
  # params of order 1 that cancel towards 0: compare on their scale
  np.testing.assert_allclose(np.array(history), params_torch, rtol=1e-13, atol=1e-15)
  assert len(set(lrs_torch)) > 1  # the configuration does cut the lr
  # Exact on any CPU: best is one of the losses given, and each decision compares
  # a given loss with best scaled or shifted by one IEEE operation, as torch does.
  assert float(state.best) == scheduler.best
  assert int(state.num_bad_epochs) == scheduler.num_bad_epochs
  assert int(state.cooldown_counter) == scheduler.cooldown_counter
  assert int(state.last_epoch) == scheduler.last_epoch


def test_accumulation_size_decides_on_the_mean_of_each_window(x64):
  epoch_losses = [[1.0, 3.0], [2.0, 2.0], [2.5, 1.5], [0.5, 0.7]]  # means 2, 2, 2, 0.6
  tx = reduce_lr_on_plateau(fo.sgd(lr=1.0), factor=0.5, patience=1, accumulation_size=2)
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)
  lrs = []
  for epoch in epoch_losses:
    for loss in epoch:
      _, state = tx.update({'w': jnp.zeros(1)}, state, params, value=loss)
      lrs.append(float(fo.get_hyperparams(state)['lr']))
  # Decisions only at window ends: better, bad 1, bad 2 > patience (cut), better.
  assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
  assert int(state.last_epoch) == 4


def test_extra_arguments_reach_an_inner_transformation_that_takes_them():
  seen = {}

  def init(params):
    return fo.sgd(lr=1.0).init(params)

  def update(updates, state, params=None, **extra):
    seen.update(extra)
    return fo.sgd(lr=1.0).update(updates, state, params)

  tx = reduce_lr_on_plateau(fo.GradientTransformationExtraArgs(init, update))
  params = {'w': jnp.zeros(1)}
  tx.update({'w': jnp.ones(1)}, tx.init(params), params, value=1.0, marker=3)
  assert seen == {'marker': 3}


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(factor=1.0), ValueError, 'Factor should be < 1.0'),
    (dict(mode='avg'), ValueError, 'mode avg is unknown'),
    (dict(threshold_mode='pct'), ValueError, 'threshold mode pct is unknown'),
    (dict(min_lr=[0.1, 0.2]), TypeError, 'min_lr'),
    (dict(accumulation_size=0), ValueError, 'accumulation_size'),
])
def test_bad_arguments(kwargs, error, match, request):
  with pytest.raises(error, match=match):
    reduce_lr_on_plateau(fo.sgd(lr=0.1), **kwargs)
  if error is not TypeError and 'accumulation_size' not in kwargs:
    torch = request.getfixturevalue('torch')  # the same error as torch's: skips without it
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(error):
      torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
