"""The torch.optim API of optim.Optimizer: params, groups, hooks, state, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import functional_optim as fo
from functional_optim import optim

PARAMS = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.array([0.5, -0.5])}
GRADS = {'w': jnp.full((2, 3), 0.1), 'b': jnp.array([1.0, -2.0])}


def _snapshot(opt):
  return (jax.tree.map(np.array, opt.params), jax.tree.map(np.array, opt.opt_state),
          [dict(g) for g in opt.param_groups])


def _assert_unchanged(opt, snapshot):
  params, state, groups = snapshot
  jax.tree.map(np.testing.assert_array_equal, opt.params, params)
  jax.tree.map(np.testing.assert_array_equal, opt.opt_state, state)
  for ours, before in zip(opt.param_groups, groups):
    assert {k: v for k, v in ours.items() if k != 'params'} == \
        {k: v for k, v in before.items() if k != 'params'}


# ----------------------------------------------------------------------------
# params in every form


def test_pytree_params_and_caller_arrays_stay_valid():
  opt = optim.Adam(PARAMS, lr=0.1)
  opt.step(GRADS)
  # The compiled step donates its buffers; the caller's own arrays are untouched.
  np.testing.assert_array_equal(PARAMS['b'], [0.5, -0.5])
  assert set(opt.params) == {'w', 'b'}
  np.testing.assert_allclose(opt.params['b'], [0.4, -0.4], rtol=1e-6)


def test_nnx_module_params_are_written_back_and_state_is_keyed_by_variable():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  before = np.array(model.kernel[...])
  opt = optim.SGD(model, lr=0.1, momentum=0.9)
  x = jnp.ones((4, 3))
  loss = lambda m: jnp.sum(m(x) ** 2)
  grads = nnx.grad(loss)(model)
  opt.step(grads)
  np.testing.assert_allclose(model.kernel[...], before - 0.1 * np.asarray(grads['kernel'][...]),
                             rtol=1e-6)
  assert opt.state[model.kernel]['momentum_buffer'].shape == (3, 2)
  # step(closure) gets the module and differentiates it.
  expected = loss(model)
  value = opt.step(loss)
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_named_params_keep_names():
  opt = optim.AdamW([('encoder.w', jnp.ones(3)), ('head.b', jnp.zeros(2))], lr=0.1)
  assert opt.param_groups[0]['param_names'] == ['encoder.w', 'head.b']
  opt.step({'encoder.w': jnp.ones(3)})  # head.b gets no gradient: skipped
  assert 'encoder.w' in opt.state and 'head.b' not in opt.state
  assert opt.state_dict()['param_groups'][0]['param_names'] == ['encoder.w', 'head.b']
  np.testing.assert_array_equal(opt.params['head.b'], 0.0)


def test_closure_returning_loss_or_loss_and_grads():
  f = lambda p: jnp.sum(p['w'] ** 2) + jnp.sum(jnp.sin(p['b']))
  a = optim.SGD(PARAMS, lr=0.1)
  b = optim.SGD(PARAMS, lr=0.1)
  loss_a = a.step(f)
  loss_b = b.step(closure=lambda p: jax.value_and_grad(f)(p))
  np.testing.assert_allclose(loss_a, loss_b)
  jax.tree.map(np.testing.assert_allclose, a.params, b.params)


def test_gradient_accumulation_and_zero_grad():
  a = optim.Adam(PARAMS, lr=0.1)
  b = optim.Adam(PARAMS, lr=0.1)
  half = jax.tree.map(lambda g: g / 2, GRADS)
  a.accumulate_grad(half)
  a.accumulate_grad(half)
  a.step()
  b.step(GRADS)
  jax.tree.map(np.testing.assert_allclose, a.params, b.params)
  a.zero_grad()
  before = _snapshot(a)
  a.step()  # no gradients: nothing happens, as in torch
  _assert_unchanged(a, before)
  a.accumulate_grad(GRADS)
  a.zero_grad(set_to_none=False)
  a.step()  # zero gradients: a real step (Adam moves nothing, but counts it)
  assert float(a.opt_state.step['b']) == 2.0


def test_escape_hatch_functional_step():
  opt = optim.AdamW(PARAMS, lr=0.1)
  tx, state = opt.transformation, opt.opt_state
  updates, state = jax.jit(tx.update)(GRADS, state, opt.params)
  opt.params, opt.opt_state = fo.apply_updates(opt.params, updates), state
  ref = optim.AdamW(PARAMS, lr=0.1)
  ref.step(GRADS)
  jax.tree.map(np.testing.assert_allclose, opt.params, ref.params)


# ----------------------------------------------------------------------------
# no recompilation


def test_one_compilation_across_100_steps_of_hyperparameter_edits():
  opt = optim.Adam([{'params': [jnp.ones(3)]}, {'params': [jnp.ones(2)], 'lr': 0.01}],
                   lr=0.1, weight_decay=0.0)
  for i in range(100):
    for group in opt.param_groups:
      group['lr'] = 0.1 * 0.99 ** i
      group['betas'] = (0.9 - i * 1e-3, 0.999)
      group['weight_decay'] = 0.01 * (i % 2)  # crossing zero is data too
    opt.step([[jnp.ones(3)], [jnp.ones(2)]])
  assert len(opt._compiled) == 1
  assert next(iter(opt._compiled.values()))._cache_size() == 1


def test_structural_edit_rebuilds_and_keeps_state():
  opt = optim.Adam(PARAMS, lr=0.1)
  opt.step(GRADS)
  opt.param_groups[0]['amsgrad'] = True
  opt.step(GRADS)
  assert set(opt.state[0]) == {'step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'}
  assert float(opt.state[0]['step']) == 2.0


# ----------------------------------------------------------------------------
# hooks


def test_step_hooks_order_arguments_and_removal():
  calls = []
  opt = optim.SGD(PARAMS, lr=0.1)
  scaled = jax.tree.map(lambda g: 2 * g, GRADS)

  def pre(o, args, kwargs):
    calls.append('pre')
    return (scaled,), kwargs  # replaces the step's arguments

  handles = [
      optim.register_optimizer_step_pre_hook(lambda o, a, k: calls.append('global pre')),
      opt.register_step_pre_hook(pre),
      opt.register_step_post_hook(lambda o, a, k: calls.append(('post', a[0] is scaled))),
      optim.register_optimizer_step_post_hook(lambda o, a, k: calls.append('global post')),
  ]
  try:
    opt.step(GRADS)
    assert calls == ['global pre', 'pre', ('post', True), 'global post']
    np.testing.assert_allclose(opt.params['b'], [0.3, -0.1], rtol=1e-6)
  finally:
    for handle in handles:
      handle.remove()
  calls.clear()
  opt.step(GRADS)
  assert calls == []


def test_step_pre_hook_bad_return():
  opt = optim.SGD(PARAMS, lr=0.1)
  opt.register_step_pre_hook(lambda o, a, k: 3)
  with pytest.raises(RuntimeError, match='must return None or a tuple of'):
    opt.step(GRADS)


def test_state_dict_hooks_prepend_and_replacement():
  opt = optim.Adam(PARAMS, lr=0.1)
  opt.step(GRADS)
  calls = []
  opt.register_state_dict_pre_hook(lambda o: calls.append('pre a'))
  opt.register_state_dict_pre_hook(lambda o: calls.append('pre b'), prepend=True)
  opt.register_state_dict_post_hook(lambda o, sd: {**sd, 'extra': 1})
  handle = opt.register_state_dict_post_hook(lambda o, sd: calls.append('post none'))
  sd = opt.state_dict()
  assert calls == ['pre b', 'pre a', 'post none'] and sd['extra'] == 1
  handle.remove()

  order = []
  opt.register_load_state_dict_pre_hook(lambda o, d: order.append('load pre'))
  opt.register_load_state_dict_pre_hook(
      lambda o, d: {**d, 'param_groups': [{**d['param_groups'][0], 'lr': 0.5}]},
      prepend=True)
  opt.register_load_state_dict_post_hook(lambda o: order.append('load post'))
  opt.load_state_dict(sd)
  assert order == ['load pre', 'load post']
  assert opt.param_groups[0]['lr'] == 0.5


# ----------------------------------------------------------------------------
# bad input, as torch raises it, leaving everything as it was


@pytest.mark.parametrize('make', [
    lambda lib, p: lib.SGD([], lr=0.1),
    lambda lib, p: lib.SGD(p[0], lr=0.1),
    # jax arrays are unhashable, so ours is given a set of something else.
    lambda lib, p: lib.SGD([{'params': {1} if lib is optim else {p[0]}}], lr=0.1),
    lambda lib, p: lib.SGD([{'params': [p[0]]}, {'params': [p[0]]}], lr=0.1),
    lambda lib, p: lib.SGD([{'params': [p[0]]}, p[1]], lr=0.1),
    lambda lib, p: lib.SGD([{'lr': 0.1}], lr=0.1),
    lambda lib, p: lib.SGD([('a', p[0]), p[1]], lr=0.1),
    lambda lib, p: lib.SGD([{'params': [('a', p[0])]}, {'params': [p[1]]}], lr=0.1),
    lambda lib, p: lib.Adam([p[0]], lr=-1.0),
], ids=['empty', 'single array', 'set', 'in two groups', 'group not a dict',
        'group without params', 'names missing', 'named and unnamed groups', 'bad lr'])
def test_construction_errors_match_torch(make, torch):
  with pytest.raises(Exception) as theirs:
    make(torch.optim, [torch.zeros(2, requires_grad=True), torch.ones(2, requires_grad=True)])
  with pytest.raises(type(theirs.value)) as ours:
    make(optim, [jnp.zeros(2), jnp.ones(2)])
  if type(theirs.value) is not TypeError:  # type names differ (Tensor vs Array)
    assert str(ours.value) == str(theirs.value)


def test_lbfgs_rejects_param_groups():
  with pytest.raises(ValueError, match="LBFGS doesn't support per-parameter options"):
    optim.LBFGS([{'params': [jnp.ones(2)]}, {'params': [jnp.ones(3)]}])


def test_load_state_dict_errors_leave_the_optimizer_working():
  opt = optim.Adam([{'params': [jnp.ones(3)]}, {'params': [jnp.ones(2)], 'lr': 0.01}], lr=0.1)
  opt.step([[jnp.ones(3)], [jnp.ones(2)]])
  good = opt.state_dict()
  before = _snapshot(opt)
  bad = {
      'group count': ({**good, 'param_groups': good['param_groups'][:1]}, ValueError,
                      'different number of parameter groups'),
      'group size': ({**good, 'param_groups': [{**good['param_groups'][0], 'params': [0, 9]},
                                               good['param_groups'][1]]},
                     ValueError, "doesn't match the size"),
      'missing key': ({**good, 'state': {0: {'step': good['state'][0]['step']}, 1: good['state'][1]}},
                      KeyError, "no 'exp_avg'"),
      'wrong shape': ({**good, 'state': {**good['state'], 1: {**good['state'][1],
                                                             'exp_avg': np.ones(5)}}},
                      ValueError, r"'exp_avg' of param 1 has shape \(5,\)"),
      'missing group key': ({**good, 'param_groups': [
          {k: v for k, v in good['param_groups'][0].items() if k != 'eps'},
          good['param_groups'][1]]}, KeyError, 'eps'),
  }
  for name, (sd, error, match) in bad.items():
    with pytest.raises(error, match=match):
      opt.load_state_dict(sd)
    _assert_unchanged(opt, before)
  opt.step([[jnp.ones(3)], [jnp.ones(2)]])
  assert float(opt.state[0]['step']) == 2.0


def test_failed_step_leaves_everything_unchanged():
  opt = optim.Adam(PARAMS, lr=0.1)
  opt.step(GRADS)
  before = _snapshot(opt)
  with pytest.raises(ValueError, match=r"gradient at \['w'\] has shape \(3,\)"):
    opt.step({'w': jnp.ones(3), 'b': GRADS['b']})
  with pytest.raises(ValueError, match="first difference at"):
    opt.step({'w': GRADS['w']})
  _assert_unchanged(opt, before)
  opt.step(GRADS)
  assert float(opt.state[0]['step']) == 2.0
