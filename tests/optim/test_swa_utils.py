"""optim.swa_utils against torch.optim.swa_utils: AveragedModel, SWALR, the SWA loop."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from functional_optim import optim
from functional_optim.optim import swa_utils as S


class NnxNet(nnx.Module):
  def __init__(self, features=3, hidden=4, classes=2, seed=0):
    rngs = nnx.Rngs(seed)
    self.fc1 = nnx.Linear(features, hidden, rngs=rngs)
    self.bn = nnx.BatchNorm(hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x):
    return self.fc2(nnx.relu(self.bn(self.fc1(x))))


def torch_net(torch):
  return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                             torch.nn.ReLU(), torch.nn.Linear(4, 2))


def random_snapshot(rng):
  """Values for (fc1, bn, fc2) in torch's layout: weights, BN stats."""
  return dict(w1=rng.normal(size=(4, 3)), b1=rng.normal(size=4), g=rng.normal(size=4),
              beta=rng.normal(size=4), mean=rng.normal(size=4), var=rng.random(4) + 0.5,
              w2=rng.normal(size=(2, 4)), b2=rng.normal(size=2))


def load_torch(torch, net, s):
  with torch.no_grad():
    for tensor, value in [(net[0].weight, s['w1']), (net[0].bias, s['b1']),
                          (net[1].weight, s['g']), (net[1].bias, s['beta']),
                          (net[1].running_mean, s['mean']), (net[1].running_var, s['var']),
                          (net[3].weight, s['w2']), (net[3].bias, s['b2'])]:
      tensor.copy_(torch.tensor(value, dtype=torch.float32))


def load_nnx(model, s):
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  model.fc1.kernel[...], model.fc1.bias[...] = f32(s['w1'].T), f32(s['b1'])
  model.bn.scale[...], model.bn.bias[...] = f32(s['g']), f32(s['beta'])
  model.bn.mean[...], model.bn.var[...] = f32(s['mean']), f32(s['var'])
  model.fc2.kernel[...], model.fc2.bias[...] = f32(s['w2'].T), f32(s['b2'])


@pytest.mark.parametrize('use_buffers', [False, True])
@pytest.mark.parametrize('fns', ['swa', 'ema'])
def test_averaged_nnx_module_matches_torch(fns, use_buffers, torch):
  T = torch.optim.swa_utils
  torch_fns = {} if fns == 'swa' else {'multi_avg_fn': T.get_ema_multi_avg_fn(0.9)}
  our_fns = {} if fns == 'swa' else {'multi_avg_fn': S.get_ema_multi_avg_fn(0.9)}
  net, model = torch_net(torch), NnxNet()
  theirs = T.AveragedModel(net, use_buffers=use_buffers, **torch_fns)
  ours = S.AveragedModel(model, use_buffers=use_buffers, **our_fns)
  rng = np.random.default_rng(0)
  for _ in range(6):
    snapshot = random_snapshot(rng)
    load_torch(torch, net, snapshot)
    load_nnx(model, snapshot)
    theirs.update_parameters(net)
    ours.update_parameters(model)
  averaged = theirs.module
  pairs = [(ours.module.fc1.kernel[...], averaged[0].weight.T),
           (ours.module.bn.scale[...], averaged[1].weight),
           (ours.module.bn.mean[...], averaged[1].running_mean),
           (ours.module.bn.var[...], averaged[1].running_var),
           (ours.module.fc2.bias[...], averaged[3].bias)]
  for got, expected in pairs:
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=2e-6, atol=2e-7)
  assert int(ours.n_averaged) == int(theirs.n_averaged) == 6
  # The model itself is untouched, and the average is a separate copy.
  np.testing.assert_allclose(model.fc1.bias[...], snapshot['b1'], rtol=1e-6)
  x = jnp.ones((5, 3))
  ours.module.eval()
  np.testing.assert_allclose(ours(x), ours.module(x))


def test_averaged_params_pytree_and_errors():
  swa = S.AveragedModel({'w': jnp.zeros(3)}, avg_fn=S.get_ema_avg_fn(0.5))
  for w in (2.0, 4.0):
    swa.update_parameters({'w': jnp.full(3, w)})
  np.testing.assert_allclose(swa.module['w'], 3.0)
  with pytest.raises(TypeError, match='cannot be called'):
    swa(jnp.ones(3))
  with pytest.raises(AssertionError, match='Only one of'):
    S.AveragedModel({'w': jnp.zeros(1)}, avg_fn=S.get_swa_avg_fn(),
                    multi_avg_fn=S.get_swa_multi_avg_fn())


def swalr_run(module, opt, steps, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheduler = module.SWALR(opt, **kwargs)
    lrs = [[g['lr'] for g in opt.param_groups]]
    for _ in range(steps):
      scheduler.step()
      lrs.append([g['lr'] for g in opt.param_groups])
  return lrs, scheduler


@pytest.mark.parametrize('kwargs', [
    dict(swa_lr=0.05), dict(swa_lr=[0.05, 0.5], anneal_epochs=6, anneal_strategy='linear'),
    dict(swa_lr=0.01, anneal_epochs=0), dict(swa_lr=0.3, anneal_epochs=1),
], ids=str)
def test_swalr_matches_torch_per_group(kwargs, torch):
  torch_opt = torch.optim.SGD([{'params': [torch.nn.Parameter(torch.zeros(1))], 'lr': 0.1},
                               {'params': [torch.nn.Parameter(torch.zeros(1))], 'lr': 1.0}])
  our_opt = optim.SGD([{'params': {'a': jnp.zeros(1)}, 'lr': 0.1},
                       {'params': {'b': jnp.zeros(1)}, 'lr': 1.0}])
  expected, _ = swalr_run(torch.optim.swa_utils, torch_opt, 30, **kwargs)
  got, scheduler = swalr_run(S, our_opt, 30, **kwargs)
  assert got == expected  # Python floats in torch's order: bit for bit
  assert [g['swa_lr'] for g in our_opt.param_groups] == [
      g['swa_lr'] for g in torch_opt.param_groups]


def test_swalr_state_dict_round_trip_and_torch_interchange(torch):
  T = torch.optim.swa_utils

  def make(module, opt_module, params):
    opt = opt_module.SGD(params, lr=1.0)
    return opt, module.SWALR(opt, swa_lr=0.1, anneal_epochs=8)

  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    torch_opt, torch_sched = make(T, torch.optim, [torch.nn.Parameter(torch.zeros(1))])
    opt, sched = make(S, optim, {'w': jnp.zeros(1)})
    for _ in range(3):
      torch_sched.step()
      sched.step()
    saved = sched.state_dict()
    assert set(saved) == set(torch_sched.state_dict()) - {'anneal_func'} | {'_anneal_strategy'}
    resumed_opt, resumed = make(S, optim, {'w': jnp.zeros(1)})
    resumed.load_state_dict(saved)
    resumed_opt.param_groups[0]['lr'] = opt.param_groups[0]['lr']
    from_torch_opt, from_torch = make(S, optim, {'w': jnp.zeros(1)})
    from_torch.load_state_dict(torch_sched.state_dict())
    from_torch_opt.param_groups[0]['lr'] = torch_opt.param_groups[0]['lr']
    for _ in range(6):
      torch_sched.step()
      for s in (sched, resumed, from_torch):
        s.step()
      lrs = {s.get_last_lr()[0] for s in (sched, resumed, from_torch)}
      assert lrs == {torch_opt.param_groups[0]['lr']}


def make_data(seed, n):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  logits = x @ np.array([[2.0, -1.0], [-1.0, 1.5], [0.5, 0.5]], np.float32)
  noisy = rng.random(n) < 0.25  # label noise keeps the last iterate wandering
  y = np.where(noisy, rng.integers(0, 2, n), logits.argmax(1))
  return jnp.asarray(x * 3 + 1), jnp.asarray(y)


def nll(model, x, y):
  log_probs = jax.nn.log_softmax(model(x))
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def test_documented_swa_loop_runs_and_the_average_generalizes_at_least_as_well():
  x, y = make_data(0, 1024)
  x_test, y_test = make_data(1, 4096)
  model = NnxNet(seed=1)
  opt = optim.SGD(model, lr=0.5, momentum=0.9)
  swa_model = S.AveragedModel(model)
  scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
  swa_start, swa_scheduler = 5, S.SWALR(opt, swa_lr=0.3)
  batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
  grads = nnx.jit(nnx.grad(nll))  # (also updates the BatchNorm statistics)
  for epoch in range(15):
    for xb, yb in batches:
      opt.step(grads(model, xb, yb))
    if epoch > swa_start:
      swa_model.update_parameters(model)
      swa_scheduler.step()
    else:
      scheduler.step()
  S.update_bn(batches, swa_model.module)
  model.eval()
  swa_model.module.eval()
  last, averaged = float(nll(model, x_test, y_test)), float(nll(swa_model.module, x_test, y_test))
  assert int(swa_model.n_averaged) == 9
  assert averaged <= last


def test_documented_ema_loop_runs_and_the_average_generalizes_at_least_as_well():
  x, y = make_data(0, 1024)
  x_test, y_test = make_data(1, 4096)
  model = NnxNet(seed=2)
  opt = optim.SGD(model, lr=0.5, momentum=0.9)
  ema_model = S.AveragedModel(model, multi_avg_fn=S.get_ema_multi_avg_fn(0.98))
  batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
  grads = nnx.jit(nnx.grad(nll))
  for _ in range(15):
    for xb, yb in batches:
      opt.step(grads(model, xb, yb))
      ema_model.update_parameters(model)
  S.update_bn(batches, ema_model.module)
  model.eval()
  ema_model.module.eval()
  last, averaged = float(nll(model, x_test, y_test)), float(nll(ema_model.module, x_test, y_test))
  assert int(ema_model.n_averaged) == 15 * len(batches)
  assert averaged <= last
