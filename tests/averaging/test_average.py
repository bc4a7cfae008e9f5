"""Averages of a sequence of snapshots equal torch's AveragedModel's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import averaging as A

SNAPSHOTS = 12


def torch_model(torch, dtype):
  torch.manual_seed(0)
  return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to(dtype)


def snapshots(torch, dtype, count=SNAPSHOTS):
  """Random params and buffers (num_batches_tracked included) of the torch model."""
  rng = np.random.default_rng(1)
  model = torch_model(torch, dtype)
  out = []
  for i in range(count):
    state = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
      if tensor.dtype == torch.long:
        state[name] = torch.tensor(int(rng.integers(0, 50)))
      else:
        state[name] = torch.tensor(rng.normal(size=tuple(tensor.shape)), dtype=dtype)
    out.append(state)
  return out


def run_torch(torch, dtype, use_buffers, **fns):
  model = torch_model(torch, dtype)
  averaged = torch.optim.swa_utils.AveragedModel(model, use_buffers=use_buffers, **fns)
  for snapshot in snapshots(torch, dtype):
    with torch.no_grad():
      for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        tensor.copy_(snapshot[name])
    averaged.update_parameters(model)
  inner = averaged.module
  return {name: t.detach().numpy().copy()
          for name, t in list(inner.named_parameters()) + list(inner.named_buffers())}


def run_ours(torch, dtype, use_buffers, averager):
  params_only = lambda s: {k: v for k, v in s.items()
                           if use_buffers or k.split('.')[-1] in ('weight', 'bias')}
  trees = [{k: jnp.asarray(v.numpy()) for k, v in params_only(s).items()}
           for s in snapshots(torch, dtype)]
  state = jax.jit(averager.init)(trees[0])
  update = jax.jit(averager.update)
  for tree in trees:
    state = update(state, tree)
  assert int(state.n_averaged) == SNAPSHOTS
  assert update._cache_size() == 1
  return {k: np.asarray(v) for k, v in state.averaged.items()}


# (id, torch's AveragedModel arguments from torch, our averager)
CASES = [
    ('swa_default', lambda torch: dict(), lambda: A.swa()),
    ('ema_multi', lambda torch: dict(multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)),
     lambda: A.ema(0.9)),
    ('ema_per_tensor', lambda torch: dict(avg_fn=torch.optim.swa_utils.get_ema_avg_fn(0.8)),
     lambda: A.averager(avg_fn=A.get_ema_avg_fn(0.8))),
    ('swa_multi', lambda torch: dict(multi_avg_fn=torch.optim.swa_utils.get_swa_multi_avg_fn()),
     lambda: A.averager(multi_avg_fn=A.get_swa_multi_avg_fn())),
    ('custom_avg_fn', lambda torch: dict(avg_fn=lambda a, c, n: torch.maximum(a, c) + 0 * n),
     lambda: A.averager(avg_fn=lambda a, c, n: jnp.maximum(a, c))),
    ('custom_multi_avg_fn',
     lambda torch: dict(multi_avg_fn=lambda avg, cur, n: [
         a.mul_(0.5).add_(c, alpha=0.5) if a.is_floating_point() else a.copy_(c)
         for a, c in zip(avg, cur)]),
     lambda: A.averager(multi_avg_fn=lambda avg, cur, n: jax.tree.map(
         lambda a, c: a * 0.5 + c * 0.5 if jnp.issubdtype(a.dtype, jnp.floating) else c,
         avg, cur))),
]


@pytest.mark.parametrize('use_buffers', [False, True])
@pytest.mark.parametrize('dtype_name', ['float64', 'float32'], ids=['f64', 'f32'])
@pytest.mark.parametrize('name, torch_fns, ours', CASES, ids=[c[0] for c in CASES])
def test_averages_match_torch(name, torch_fns, ours, dtype_name, use_buffers, torch):
  dtype, torch_fns = getattr(torch, dtype_name), torch_fns(torch)
  if use_buffers and name == 'swa_multi':
    # torch's addcdiv_ rejects the integer num_batches_tracked buffer; ours
    # averages it with truncation, as the other integer paths do.
    with pytest.raises(RuntimeError, match='Integer division'):
      run_torch(torch, dtype, use_buffers, **torch_fns)
    return
  with jax.enable_x64(dtype == torch.float64):
    expected = run_torch(torch, dtype, use_buffers, **torch_fns)
    got = run_ours(torch, dtype, use_buffers, ours())
  assert set(got) <= set(expected) and len(got) == (7 if use_buffers else 4)
  tolerance = 1e-13 if dtype == torch.float64 else 2e-6
  for key, value in got.items():
    assert value.dtype.kind == expected[key].dtype.kind, key
    if dtype == torch.float64:
      assert value.dtype == expected[key].dtype, key
    np.testing.assert_allclose(value, expected[key], rtol=tolerance, atol=tolerance,
                               err_msg=key)


def test_swa_multi_avg_fn_weight_is_rounded_to_float32_as_torch_does(x64):
  averaged = A.get_swa_multi_avg_fn()({'w': jnp.zeros(1)}, {'w': jnp.ones(1)}, 2)
  # Exact: 0 + (1 - 0) · w is the weight itself.
  assert float(averaged['w'][0]) == float(np.float32(1 / 3))


@pytest.mark.parametrize('decay', [-0.1, 1.5])
def test_bad_decay(decay, torch):
  T = torch.optim.swa_utils
  for ours, theirs in [(A.get_ema_avg_fn, T.get_ema_avg_fn),
                       (A.get_ema_multi_avg_fn, T.get_ema_multi_avg_fn), (A.ema, None)]:
    with pytest.raises(ValueError, match='Invalid decay value'):
      ours(decay)
    if theirs is not None:
      with pytest.raises(ValueError, match='Invalid decay value'):
        theirs(decay)


def test_both_averaging_functions_is_an_error_as_in_torch(torch):
  T = torch.optim.swa_utils
  with pytest.raises(AssertionError, match='Only one of avg_fn and multi_avg_fn'):
    A.averager(avg_fn=A.get_swa_avg_fn(), multi_avg_fn=A.get_swa_multi_avg_fn())
  with pytest.raises(AssertionError, match='Only one of avg_fn and multi_avg_fn'):
    T.AveragedModel(torch.nn.Linear(1, 1), avg_fn=T.get_swa_avg_fn(),
                    multi_avg_fn=T.get_swa_multi_avg_fn())
