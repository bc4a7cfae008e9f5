"""The packed layout: buffers, round trips, packed params and packed state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import optim
from functional_optim.kernels.packing import LANES, ROW_ALIGN, PackSpec, pack_leaves


def _tree():
  rng = np.random.default_rng(0)
  return {'w': jnp.asarray(rng.normal(size=(3, 100)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(130,)), jnp.float32),
          'empty': jnp.zeros((0,), jnp.float32),
          's': jnp.asarray(2.5, jnp.float32),
          'h': jnp.asarray(rng.normal(size=(4, 4)), jnp.bfloat16),
          'z': jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5), jnp.complex64)}


def test_layout_rows_and_groups():
  spec = PackSpec.of(_tree())
  float32, bfloat16 = spec.groups
  # Leaves in tree order (b, empty, h, s, w, z); complex joins float32 as pairs.
  assert str(float32.dtype) == 'float32' and str(bfloat16.dtype) == 'bfloat16'
  assert float32.sizes == (130, 0, 1, 300, 10)
  assert float32.row_offsets == (0, 2, 2, 3, 6)  # each leaf on rows of its own
  assert float32.rows == 8 == ROW_ALIGN and bfloat16.rows == ROW_ALIGN
  # Padding rows at the end count as the last leaf's (zeros, never read back).
  assert list(float32.row_leaf) == [0, 0, 2, 3, 3, 3] + [4] * (float32.rows - 6)


def test_round_trip_is_exact():
  tree = _tree()
  packed = fo.kernels.pack(tree)
  assert [b.shape for b in packed.buffers] == [(ROW_ALIGN, LANES)] * 2
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(packed.unpack())):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Padding is zeros, and one whole-row leaf packs without a copy (a reshape).
  assert float(jnp.sum(jnp.abs(packed.buffers[1].astype(jnp.float32)))) == pytest.approx(
      float(jnp.sum(jnp.abs(tree['h'].astype(jnp.float32)))))
  whole_rows = jnp.zeros((ROW_ALIGN, 128))
  jaxpr = jax.make_jaxpr(lambda x: pack_leaves([x], PackSpec.of(x)))(whole_rows)
  assert {e.primitive.name for e in jaxpr.eqns} <= {'reshape'}


def test_gradients_flow_to_the_buffers():
  tree = _tree()
  loss = lambda p: sum(jnp.sum(jnp.abs(x) ** 2) for x in jax.tree.leaves(p.unpack()))
  grads = jax.grad(loss)(fo.kernels.pack(tree))
  assert isinstance(grads, fo.kernels.Packed)
  expected = jax.grad(lambda t: sum(jnp.sum(jnp.abs(x) ** 2) for x in jax.tree.leaves(t)))(tree)
  # A complex leaf is packed as real pairs, so its gradient is ∂L/∂re + i·∂L/∂im:
  # torch's convention, which the optimizers take (jax.grad gives the conjugate).
  expected['z'] = jnp.conj(expected['z'])
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(grads.unpack())):
    np.testing.assert_allclose(np.asarray(a, np.complex64), np.asarray(b, np.complex64),
                               rtol=1e-6)


def test_an_optimizer_over_packed_params_matches_the_tree():
  """Params kept packed: every leaf gets a gradient, so one step count per buffer is exact."""
  tree = {k: v for k, v in _tree().items() if k != 'h'}
  tx = fo.adamw(lr=0.1, weight_decay=0.1)
  loss = lambda t: sum(jnp.sum(jnp.abs(jnp.sin(x)) ** 2) for x in jax.tree.leaves(t))

  def run(params, as_tree):
    @jax.jit
    def step(params, state):
      grads = jax.grad(lambda p: loss(as_tree(p)))(params)
      if not isinstance(grads, fo.kernels.Packed):  # torch's complex convention
        grads = jax.tree.map(jnp.conj, grads)
      updates, state = tx.update(grads, state, params)
      return fo.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(5):
      params, state = step(params, state)
    return as_tree(params)

  by_leaf = run(tree, lambda t: t)
  packed = run(fo.kernels.pack(tree), lambda p: p.unpack())
  for a, b in zip(jax.tree.leaves(by_leaf), jax.tree.leaves(packed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7)


def test_packed_state_round_trips_through_the_per_leaf_layout():
  tree = _tree()
  tx = fo.adam(lr=0.1, amsgrad=True, implementation='foreach')
  state = tx.init(tree)
  grads = jax.tree.map(jnp.ones_like, tree)
  _, state = tx.update(grads, state, tree)
  plain = fo.kernels.unpack_state(state)
  assert plain.exp_avg['w'].shape == (3, 100) and plain.exp_avg['z'].dtype == jnp.complex64
  assert float(plain.step['w']) == 1.0
  again = fo.kernels.pack_state(plain, state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_hyperparameter_changes_do_not_recompile():
  tree = _tree()
  tx = fo.sgd(lr=0.1, momentum=0.9, implementation='foreach')

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    return fo.apply_updates(params, updates), state

  params, state = tree, tx.init(tree)
  for lr in (0.1, 0.05, 0.01):
    params, state = step(params, fo.set_hyperparams(state, lr=lr, momentum=lr))
  assert step._cache_size() == 1


def test_layout_mismatches_are_named():
  tree = _tree()
  packed_state = fo.adam(implementation='foreach').init(tree)
  with pytest.raises(ValueError, match='packed layout.*per-leaf.*unpack_state'):
    fo.adam().update(tree, packed_state, tree)
  with pytest.raises(ValueError, match='per-leaf layout.*packed.*pack_state'):
    fo.adam(implementation='foreach').update(tree, fo.adam().init(tree), tree)
  other = {**tree, 'w': jnp.zeros((3, 101))}
  with pytest.raises(ValueError, match='packed for params of other shapes'):
    fo.adam(implementation='foreach').update(other, packed_state, other)
  with pytest.raises(ValueError, match="implementation must be one of"):
    fo.adam(implementation='cuda')
  with pytest.raises(ValueError, match="contradicts fused=True"):
    fo.sgd(implementation='foreach', fused=True)
  with pytest.raises(RuntimeError, match='differentiable'):
    fo.adam(implementation='fused', differentiable=True)


@pytest.mark.parametrize('flags', [dict(foreach=True), dict(fused=True)])
def test_facade_keeps_torchs_state_dict_with_packed_state(flags, torch):
  """``optim.AdamW(..., fused=True)`` packs its state; its state_dict is still torch's."""
  rng = np.random.default_rng(0)
  w0, b0 = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
  ours = optim.AdamW({'b': jnp.asarray(b0), 'w': jnp.asarray(w0)}, lr=0.1, **flags)
  tb, tw = (torch.nn.Parameter(torch.tensor(x)) for x in (b0, w0))
  theirs = torch.optim.AdamW([tb, tw], lr=0.1, **flags)
  for t in range(5):
    grads = {'b': np.cos(b0 * t), 'w': np.sin(w0 * (t + 1))}
    tb.grad, tw.grad = torch.tensor(grads['b']), torch.tensor(grads['w'])
    ours.step({k: jnp.asarray(v) for k, v in grads.items()})
    theirs.step()
  assert isinstance(ours.opt_state.exp_avg, fo.kernels.Packed)
  np.testing.assert_allclose(np.asarray(ours.params['w']), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
  for key in ('exp_avg', 'exp_avg_sq'):
    np.testing.assert_allclose(ours.state_dict()['state'][1][key],
                               theirs.state_dict()['state'][1][key].numpy(), rtol=1e-5, atol=1e-6)
  loaded = optim.AdamW({'b': jnp.asarray(b0), 'w': jnp.asarray(w0)}, lr=0.1, **flags)
  loaded.load_state_dict(theirs.state_dict())
  assert isinstance(loaded.opt_state.exp_avg, fo.kernels.Packed)
  # Loading copies torch's float32 values.
  np.testing.assert_array_equal(loaded.state_dict()['state'][1]['exp_avg'],
                                theirs.state[tw]['exp_avg'].numpy())
  # Switching the implementation in a param group carries the state over.
  loaded.param_groups[0]['fused'], loaded.param_groups[0]['foreach'] = None, False
  loaded.step({'b': jnp.zeros(3), 'w': jnp.zeros((5, 3))})
  assert isinstance(loaded.opt_state.exp_avg, dict)
  assert float(loaded.state_dict()['state'][1]['step']) == 6.0
