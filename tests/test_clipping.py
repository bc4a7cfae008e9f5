"""Gradient clipping against ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``.

Norm types 1, 2, inf and 3, norms far below and above the limit, in float64 (to
~1e-15: the two libraries sum in other orders) and float32; alone, chained with
AdamW for 30 steps, and on the facade's accumulated gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import optim
from tests.common import TORCH_REASON, precision
from tests.algorithms_vs_torch.problem import assert_close, initial_params, loss

torch = pytest.importorskip('torch', reason=TORCH_REASON)

NORMS = [1.0, 2.0, math.inf, 3.0]


def _grads(dtype, scale):
  rng = np.random.default_rng(3)
  return [np.asarray(rng.normal(size=s) * scale, dtype) for s in [(3,), (2, 4), (), (5,)]]


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('scale', [1e-3, 1e3], ids=['small', 'large'])
@pytest.mark.parametrize('norm_type', NORMS)
def test_clipped_by_norm_is_torchs(norm_type, scale, dtype):
  grads = _grads(dtype, scale)
  tensors = [torch.zeros(g.shape, dtype=getattr(torch, np.dtype(dtype).name),
                         requires_grad=True) for g in grads]
  for t, g in zip(tensors, grads):
    t.grad = torch.tensor(g)
  with precision(dtype):
    clipped, norm = fo.clipped_by_norm([jnp.asarray(g) for g in grads], max_norm=1.0,
                                       norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.0, norm_type=norm_type)
  assert_close(np.asarray(norm), theirs.numpy(), 'total norm')
  for ours, t in zip(clipped, tensors):
    assert_close(np.asarray(ours), t.grad.numpy(), 'clipped gradient')


def test_none_gradients_are_left_out_and_the_transform_matches():
  grads = {'a': jnp.array([3.0]), 'b': None, 'c': jnp.array([4.0])}
  clipped, norm = fo.clipped_by_norm(grads, 1.0)
  assert clipped['b'] is None and float(norm) == 5.0
  tx = fo.clip_grad_norm(1.0)
  updates, _ = tx.update(grads, tx.init(None))
  jax.tree.map(np.testing.assert_array_equal, updates, clipped)


def test_error_if_nonfinite_raises_torchs_error():
  with pytest.raises(RuntimeError) as theirs:
    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.tensor([1.0, float('nan')])
    torch.nn.utils.clip_grad_norm_([t], 1.0, error_if_nonfinite=True)
  with pytest.raises(RuntimeError) as ours:
    fo.clipped_by_norm({'w': jnp.array([1.0, jnp.nan])}, 1.0, error_if_nonfinite=True)
  assert str(ours.value) == str(theirs.value)
  # Under jit the check runs with the computation, and fails it with torch's message.
  step = jax.jit(lambda g: fo.clipped_by_norm(g, 1.0, error_if_nonfinite=True)[0])
  with pytest.raises(Exception, match='non-finite, so it cannot be clipped'):
    jax.block_until_ready(step({'w': jnp.array([1.0, jnp.inf])}))
  jax.block_until_ready(step({'w': jnp.array([1.0, 2.0])}))  # finite: fine


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_clip_grad_value_is_torchs(dtype):
  grads = _grads(dtype, 2.0)
  tensors = [torch.zeros(g.shape, dtype=getattr(torch, np.dtype(dtype).name),
                         requires_grad=True) for g in grads]
  for t, g in zip(tensors, grads):
    t.grad = torch.tensor(g)
  torch.nn.utils.clip_grad_value_(tensors, 0.5)
  with precision(dtype):
    tx = fo.clip_grad_value(0.5)
    clipped, _ = tx.update([jnp.asarray(g) for g in grads], tx.init(None))
  for ours, t in zip(clipped, tensors):
    np.testing.assert_array_equal(np.asarray(ours), t.grad.numpy())  # a clamp: exact


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('norm_type', [2.0, math.inf])
def test_chained_with_adamw_for_30_steps(norm_type, dtype):
  """torch's loop: backward, clip_grad_norm_, step; ours: one chained transformation."""
  init = initial_params(dtype)
  params = [torch.tensor(x, requires_grad=True) for x in init]
  theirs = torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
  with precision(dtype):
    tx = fo.chain(fo.clip_grad_norm(0.5, norm_type=norm_type), fo.adamw(lr=0.05, weight_decay=0.1))
    ours = [jnp.asarray(x) for x in init]
    state = tx.init(ours)
    step = jax.jit(lambda p, s: tx.update(jax.grad(lambda q: loss(q, jnp))(p), s, p))
    for _ in range(30):
      theirs.zero_grad()
      loss(params, torch).backward()
      torch.nn.utils.clip_grad_norm_(params, 0.5, norm_type=norm_type)
      theirs.step()
      updates, state = step(ours, state)
      ours = fo.apply_updates(ours, updates)
  for i, (o, t) in enumerate(zip(ours, params)):
    assert_close(np.asarray(o), t.detach().numpy(), f'param {i}')


def test_on_the_facades_accumulated_gradients(x64):
  """Two micro-batches accumulated, clipped, stepped: torch's loop with ``.grad``."""
  init = initial_params(np.float64)
  params = [torch.tensor(x, requires_grad=True) for x in init]
  theirs = torch.optim.AdamW(params, lr=0.05)
  ours = optim.AdamW([jnp.asarray(x) for x in init], lr=0.05)
  grad_fn = jax.jit(jax.grad(lambda q, s: s * loss(q, jnp)))
  for _ in range(20):
    theirs.zero_grad()
    for scale in (0.5, 1.5):
      (scale * loss(params, torch)).backward()
    their_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    theirs.step()
    ours.zero_grad()
    for scale in (0.5, 1.5):
      ours.accumulate_grad(grad_fn(ours.params, scale))
    ours.grads, norm = fo.clipped_by_norm(ours.grads, 1.0)
    ours.step()
    np.testing.assert_allclose(float(norm), their_norm.item(), rtol=1e-13)
  for i, (o, t) in enumerate(zip(ours.params, params)):
    assert_close(np.asarray(o), t.detach().numpy(), f'param {i}')
