"""partition: one transformation per label, and the Muon + AdamW recipe against torch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optim as fo
from functional_optim.core.partition import MaskedNode, PartitionState, partition
from functional_optim.kernels import unpack_state
from functional_optim.optimizers import muon
from tests.algorithms_vs_torch.problem import assert_close


pytestmark = pytest.mark.usefixtures('one_torch_thread')


PARAMS = {'w': jnp.arange(12.0).reshape(3, 4) / 10, 'b': jnp.array([0.5, -0.5]),
          'scale': jnp.ones(3)}
GRADS = {'w': jnp.full((3, 4), 0.1), 'b': jnp.array([1.0, -2.0]),
         'scale': jnp.array([0.3, 0.2, 0.1])}
LABELS = {'w': 'muon', 'b': 'adam', 'scale': 'adam'}


def _by_ndim(params):
  return jax.tree.map(lambda p: 'muon' if p.ndim == 2 else 'adam', params)


def _tx(labels=LABELS):
  return partition({'muon': muon(lr=0.02), 'adam': fo.adam(lr=0.1)}, labels)


def _assert_trees_equal(a, b):
  """Bit for bit: partition hands each leaf to its transformation, which computes
  on it what it computes without partition."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _subset(tree, keys):
  return {k: tree[k] for k in keys}


# ----------------------------------------------------------------------------
# Routing and states


@pytest.mark.parametrize('labels', [LABELS, _by_ndim], ids=['tree', 'function'])
def test_each_param_gets_its_transformation(labels):
  tx = _tx(labels)
  updates, state = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  m, a = muon(lr=0.02), fo.adam(lr=0.1)
  m_updates, _ = m.update(_subset(GRADS, ['w']), m.init(_subset(PARAMS, ['w'])),
                          _subset(PARAMS, ['w']))
  a_updates, _ = a.update(_subset(GRADS, ['b', 'scale']),
                          a.init(_subset(PARAMS, ['b', 'scale'])))
  _assert_trees_equal(updates, {**m_updates, **a_updates})
  assert isinstance(state, PartitionState) and set(state.inner_states) == {'muon', 'adam'}


def test_inner_states_hold_only_their_params():
  state = _tx().init(PARAMS)
  muon_state, adam_state = state.inner_states['muon'], state.inner_states['adam']
  assert muon_state.momentum_buffer == {'w': muon_state.momentum_buffer['w'],
                                        'b': MaskedNode(), 'scale': MaskedNode()}
  assert adam_state.exp_avg['w'] == MaskedNode()
  assert [x.shape for x in jax.tree.leaves(adam_state.exp_avg)] == [(2,), (3,)]
  # Muon never sees the vectors, which it would refuse.
  with pytest.raises(ValueError, match=r"size: \(2,\) at \['b'\]"):
    partition({'muon': muon()}, lambda ps: jax.tree.map(lambda p: 'muon', ps)).init(PARAMS)


def test_none_gradient_reaches_its_owner_as_no_gradient():
  tx = _tx()
  state = tx.init(PARAMS)
  grads = {**GRADS, 'b': None, 'w': None}
  updates, new_state = jax.jit(tx.update)(grads, state, PARAMS)
  assert updates['b'] is None and updates['w'] is None
  assert float(new_state.inner_states['adam'].step['b']) == 0
  assert float(new_state.inner_states['adam'].step['scale']) == 1
  assert float(new_state.inner_states['muon'].step['w']) == 0
  # Without params, a labelling function cannot label a param that has no gradient.
  with pytest.raises(ValueError, match=r"param at \['b'\] has no label"):
    _tx(_by_ndim).update(grads, state)


def test_without_params_and_an_optax_transformation():
  tx = partition({'sgd': fo.sgd(lr=0.1), 'optax': optax.adam(0.1)},
                 {'w': 'optax', 'b': 'sgd', 'scale': 'optax'})
  updates, state = tx.update(GRADS, tx.init(PARAMS))
  np.testing.assert_allclose(updates['b'], [-0.1, 0.2], rtol=1e-6)
  np.testing.assert_allclose(updates['w'], np.full((3, 4), -0.1), rtol=1e-5)
  assert state.inner_states['optax'][0].mu['b'] == MaskedNode()


def test_extra_keyword_arguments_reach_transformations_that_take_them():
  seen = []

  def update(updates, state, params=None, **extra):
    seen.append(sorted(extra))
    return jax.tree.map(lambda g: extra['value'] * g, updates), state

  scale_by_value = fo.GradientTransformationExtraArgs(lambda params: (), update)
  tx = partition({'value': scale_by_value, 'optax': optax.scale(-1.0)},
                 {'w': 'optax', 'b': 'value', 'scale': 'value'})
  updates, _ = tx.update(GRADS, tx.init(PARAMS), value=3.0)
  assert seen == [['value']]
  np.testing.assert_allclose(updates['b'], [3.0, -6.0])
  np.testing.assert_allclose(updates['w'], -GRADS['w'])


def test_hyperparams_through_partition():
  tx = fo.chain(optax.clip(1.0), _tx())
  state = tx.init(PARAMS)
  # A name one transformation carries is read and set through the partition...
  state = fo.set_hyperparams(state, momentum=0.9, betas=(0.8, 0.99))
  hp = fo.get_hyperparams(state[1].inner_states['muon'])
  np.testing.assert_allclose(hp['momentum'], 0.9, rtol=1e-7)
  np.testing.assert_allclose(fo.get_hyperparams(state[1].inner_states['adam'])['betas'][0],
                             0.8, rtol=1e-7)
  # ...a name both carry reads back by path, and is set on one when at= names it.
  assert sorted(fo.get_hyperparams(state)['lr']) == [
      "[1].inner_states['adam']", "[1].inner_states['muon']"]
  state = fo.set_hyperparams(state, at='adam', lr=0.5)
  updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
  np.testing.assert_allclose(updates['b'], [-0.5, 0.5], rtol=1e-6)  # Adam's first step: -lr·sign(g).
  np.testing.assert_allclose(fo.get_hyperparams(state[1].inner_states['muon'])['lr'], 0.02,
                             rtol=1e-7)


def test_errors():
  with pytest.raises(ValueError, match=r"param at \['b'\] has label 'sgd', which has no "
                                       r"transformation; the labels with one are 'adam', 'muon'"):
    _tx({**LABELS, 'b': 'sgd'}).init(PARAMS)
  with pytest.raises(ValueError, match='param_labels does not match the params tree'):
    _tx({'w': 'muon', 'b': 'adam'}).init(PARAMS)
  with pytest.raises(ValueError, match='param_labels does not match the params tree'):
    _tx(LABELS).init({'w': PARAMS['w']})
  state = _tx().init(PARAMS)
  with pytest.raises(ValueError, match="got a state for the labels 'muon'"):
    _tx().update(GRADS, PartitionState({'muon': state.inner_states['muon']}), PARAMS)


# ----------------------------------------------------------------------------
# The recipe: Muon for the weight matrices, AdamW for the rest, against torch


def model_loss(p, xp, tokens, targets):
  """Embedding, a tanh layer, a scale, a linear head: mean squared error."""
  h = p['embed'][tokens]
  h = xp.tanh(h @ p['hidden']['kernel'] + p['hidden']['bias']) * p['norm_scale']
  out = h @ p['head']['kernel'] + p['head']['bias']
  return xp.mean((out - targets) ** 2)


def _recipe_label(path, p):
  is_embedding = 'embed' in jax.tree_util.keystr(path)
  return 'muon' if p.ndim == 2 and not is_embedding else 'adamw'


def test_muon_and_adamw_match_torch(x64, torch):
  """30 free-running float64 steps agree with torch.optim.Muon + torch.optim.AdamW.

  Observed: params within 2e-15, relative; every state field within 2% of the
  tolerance. Free runs agree only while no bfloat16 rounding of Muon's update
  goes the other way (see tests/algorithms_vs_torch/test_muon.py, which therefore compares
  Muon step by step). None does in these 60 Newton–Schulz calls here; on a CPU
  where torch picks another bfloat16 matmul kernel, one rarely could, and this
  test would then fail for that reason alone.
  """
  rng = np.random.default_rng(0)
  init = {'embed': rng.normal(size=(6, 3)), 'norm_scale': 1 + 0.1 * rng.normal(size=4),
          'hidden': {'kernel': rng.normal(size=(3, 4)), 'bias': 0.1 * rng.normal(size=4)},
          'head': {'kernel': rng.normal(size=(4, 2)), 'bias': np.zeros(2)}}
  tokens, targets = rng.integers(0, 6, size=8), rng.normal(size=(8, 2))
  muon_kwargs, adamw_kwargs = dict(lr=0.02, weight_decay=0.1), dict(lr=0.01, weight_decay=0.01)

  t_params = jax.tree.map(lambda x: torch.tensor(x, requires_grad=True), init)
  matrices = [t_params['hidden']['kernel'], t_params['head']['kernel']]
  others = [t_params['embed'], t_params['norm_scale'], t_params['hidden']['bias'],
            t_params['head']['bias']]
  t_muon = torch.optim.Muon(matrices, **muon_kwargs)
  t_adamw = torch.optim.AdamW(others, **adamw_kwargs)
  t_tokens, t_targets = torch.tensor(tokens), torch.tensor(targets)

  tx = partition({'muon': muon(**muon_kwargs), 'adamw': fo.adamw(**adamw_kwargs)},
                 lambda ps: jax.tree_util.tree_map_with_path(_recipe_label, ps))
  params = jax.tree.map(jnp.asarray, init)
  state = tx.init(params)

  @jax.jit
  def train_step(params, state):
    grads = jax.grad(model_loss)(params, jnp, tokens, targets)
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  for _ in range(30):
    t_muon.zero_grad()
    t_adamw.zero_grad()
    model_loss(t_params, torch, t_tokens, t_targets).backward()
    t_muon.step()
    t_adamw.step()
    params, state = train_step(params, state)

  jax.tree.map(lambda o, t: assert_close(o, t.detach().numpy(), 'param'), params, t_params)
  for opt, label, fields in [(t_muon, 'muon', ['momentum_buffer']),
                             (t_adamw, 'adamw', ['step', 'exp_avg', 'exp_avg_sq'])]:
    for field in fields:
      def compare(ours, p):
        if not isinstance(ours, MaskedNode):
          assert_close(ours, opt.state[p][field].numpy(), f'{label} {field}')
      # unpack_state: the per-param step as a tree (it is kept once per group).
      jax.tree.map(compare, getattr(unpack_state(state.inner_states[label]), field), t_params,
                   is_leaf=lambda x: isinstance(x, MaskedNode))
