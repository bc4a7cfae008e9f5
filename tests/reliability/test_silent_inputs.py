"""Inputs that once passed silently (or failed unclearly) get torch's behaviour or a
clear error, and a failed call changes nothing.

Each facade case checks that the params, the state and the param groups are what
they were after the error, and that the next valid step equals a twin's that
never saw the bad call (``test_bad_input.assert_unchanged_and_working``). Related
cases elsewhere: overlapping nnx groups (``tests/optim/test_params.py``), a
closure per batch compiling once in a bounded cache (``tests/optim/test_closures.py``),
a state made for other shapes (``test_bad_input.test_state_of_params_of_other_shapes``),
damaged checkpoints (``test_bad_input``), replacing a checkpoint under SIGKILL
(``test_checkpoint_kill.py``).
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import optim
from functional_optim import schedules as S
from tests.algorithms import ALGORITHMS
from tests.reliability.test_bad_input import (
    assert_identical, assert_unchanged_and_working, grads_for, params_for, snapshot, twins)


def test_add_param_group_takes_fresh_arrays():
  # Arrays made and dropped in a loop: Python reuses the ids of freed ones, which
  # must not read as "the same param in two groups".
  opt = optim.SGD({'w': jnp.ones(2)}, lr=0.5)
  for k in range(30):
    opt.add_param_group({'params': {f'v{k}': jnp.full(3, float(k))}})
  assert len(opt.param_groups) == 31
  opt.step([{'w': jnp.ones(2)}] + [{f'v{k}': jnp.ones(3)} for k in range(30)])
  np.testing.assert_array_equal(opt.params[0]['w'], 0.5)
  for k in range(30):
    np.testing.assert_array_equal(opt.params[k + 1][f'v{k}'], k - 0.5)


def test_add_param_group_refuses_a_param_it_already_has_as_torch(torch):
  w = jnp.ones(2)
  opt = optim.SGD([w], lr=0.1)
  before = snapshot(opt)
  with pytest.raises(ValueError, match='some parameters appear in more than one '
                                       'parameter group'):
    opt.add_param_group({'params': [w]})
  assert_identical(snapshot(opt), before)
  t = torch.ones(2, requires_grad=True)
  with pytest.raises(ValueError, match='some parameters appear in more than one '
                                       'parameter group'):
    torch.optim.SGD([t], lr=0.1).add_param_group({'params': [t]})


def test_a_list_of_weight_bias_tuples_optimizes_every_array():
  # [(W, b), (W, b)]: the common layout of a JAX MLP, a pytree of params (not
  # (name, param) pairs, whose first entry is a str).
  layers = [(jnp.ones((3, 2)), jnp.zeros(2)), (jnp.ones((2, 1)), jnp.zeros(1))]
  opt = optim.SGD(layers, lr=0.5)
  assert len(opt.param_groups[0]['params']) == 4
  opt.step(jax.tree.map(jnp.ones_like, layers))
  for got, start in zip(jax.tree.leaves(opt.params), jax.tree.leaves(layers)):
    np.testing.assert_array_equal(got, start - 0.5)
  # (name, param) pairs are still named params.
  named = optim.SGD([('w', jnp.ones(2)), ('b', jnp.zeros(1))], lr=0.5)
  assert named.param_groups[0]['param_names'] == ['w', 'b']


def named_groups():
  return optim.Adam([{'params': [('a.w', jnp.ones(2)), ('a.b', jnp.zeros(1))]},
                     {'params': [('c.w', jnp.full(3, 2.0))]}], lr=0.1)


def test_a_misspelt_gradient_name_is_refused():
  opt, twin = named_groups(), named_groups()
  grads = {'a.w': jnp.ones(2), 'a.b': jnp.ones(1), 'c.w': jnp.ones(3)}
  for o in (opt, twin):
    o.step(grads)
  before = snapshot(opt)
  with pytest.raises(KeyError, match=r"gradients for unknown params \['c\.ww'\]"):
    opt.step({'a.w': jnp.ones(2), 'a.b': jnp.ones(1), 'c.ww': jnp.ones(3)})
  assert_identical(snapshot(opt), before)
  opt.step(grads)
  twin.step(grads)
  assert_identical(snapshot(opt), snapshot(twin))


@pytest.mark.parametrize('shape', [(1,), (2, 3), ()])
def test_accumulate_grad_refuses_another_shape(shape):
  opt, twin = twins('adam')
  before = snapshot(opt)
  opt.accumulate_grad(grads_for('adam', 3))
  held = jax.tree.map(np.array, opt.grads)
  bad = grads_for('adam', 4)
  bad['b']['c'] = jnp.ones(shape)  # the param is (4,): no broadcasting
  with pytest.raises(ValueError, match=r"gradient at \['b'\]\['c'\] has shape"):
    opt.accumulate_grad(bad)
  jax.tree.map(np.testing.assert_array_equal, opt.grads, held)  # the sum so far stays
  opt.zero_grad()
  assert_unchanged_and_working(opt, twin, before, 'adam')


def test_a_closure_returning_a_non_scalar_is_refused():
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(TypeError, match=r'the loss the closure returns must be a scalar, '
                                      r'got shape \(2, 3\)'):
    opt.step(lambda params: params['w'] ** 2)
  assert_unchanged_and_working(opt, twin, before, 'adam')


@pytest.mark.parametrize('value', [jnp.array([0.1, 0.2, 0.3]), np.ones((2, 2)), [0.1, 0.2]])
def test_set_hyperparams_refuses_a_non_scalar(value):
  # (A one-element array is a scalar, as a one-element tensor lr is in torch.)
  tx = fo.adam(lr=0.1)
  state = tx.init({'w': jnp.ones(3)})
  kept = jax.tree.map(np.array, state)
  with pytest.raises((ValueError, TypeError), match="'lr' (must be a scalar|expects)"):
    fo.set_hyperparams(state, lr=value)
  jax.tree.map(np.testing.assert_array_equal, state, kept)


@pytest.mark.parametrize('value', ['0.1', None, 'abc'])
@pytest.mark.parametrize('key', ['lr', 'betas'])
def test_a_non_numeric_hyperparameter_is_refused_as_torch_refuses(key, value, torch):
  with pytest.raises(TypeError):
    torch.optim.Adam([torch.ones(2, requires_grad=True)], **{key: value})
  with pytest.raises(TypeError, match=key):
    optim.Adam({'w': jnp.ones(2)}, **{key: value})
  # Edited into a group, the next step refuses it and nothing changes.
  opt, twin = twins('adam')
  before = snapshot(opt)
  kept = opt.param_groups[0][key]
  opt.param_groups[0][key] = value
  with pytest.raises(TypeError, match=key):
    opt.step(grads_for('adam', 5))
  opt.param_groups[0][key] = kept
  assert_unchanged_and_working(opt, twin, before, 'adam')


# ----------------------------------------------------------------------------
# Functional schedules at their edges: torch's lr, the facade's.

def torch_lrs(torch, make, steps: int) -> list[float]:
  param = torch.zeros(1, requires_grad=True)
  opt = torch.optim.SGD([param], lr=0.1)
  scheduler = make(torch.optim.lr_scheduler, opt)
  lrs = []
  for _ in range(steps):
    lrs.append(opt.param_groups[0]['lr'])
    opt.step()
    scheduler.step()
  return lrs


EDGES = {
    'linear_total_iters_0': (lambda T, o: T.LinearLR(o, start_factor=0.5, total_iters=0),
                             lambda: S.linear_lr(0.1, start_factor=0.5, total_iters=0)),
    'polynomial_total_iters_0': (lambda T, o: T.PolynomialLR(o, total_iters=0),
                                 lambda: S.polynomial_lr(0.1, total_iters=0)),
    'step_negative_step_size': (lambda T, o: T.StepLR(o, step_size=-2, gamma=0.5),
                                lambda: S.step_lr(0.1, step_size=-2, gamma=0.5)),
}


@pytest.mark.parametrize('case', EDGES)
def test_a_schedule_at_an_edge_gives_torchs_lr(case, torch, x64):
  make_torch, make_ours = EDGES[case]
  want = torch_lrs(torch, make_torch, 12)
  schedule = make_ours()
  got = [float(schedule(e)) for e in range(12)]
  assert np.all(np.isfinite(got))
  # The same float64 multiplications in the same order, or an ulp apart.
  np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


def test_one_cycle_holds_its_final_lr_after_total_steps(torch, x64):
  want = torch_lrs(torch, lambda T, o: T.OneCycleLR(o, max_lr=0.1, total_steps=20), 20)
  schedule = S.one_cycle_lr(0.1, total_steps=20)
  got = [float(schedule(e)) for e in range(40)]
  np.testing.assert_allclose(got[:20], want, rtol=1e-12)
  assert got[20:] == [got[19]] * 20  # held, not annealed back up


# ----------------------------------------------------------------------------
# torch state dicts from an older torch.

# The options torch added to Adam and AdamW after 2.0 (their __setstate__ fills
# them in when loading an older dict).
NEWER_OPTIONS = ('foreach', 'maximize', 'capturable', 'differentiable', 'fused',
                 'decoupled_weight_decay')


@pytest.mark.parametrize('cls', ['Adam', 'AdamW'])
def test_an_older_torch_dict_loads_with_torchs_defaults(cls, torch, x64):
  start = np.linspace(-1.0, 1.0, 5)
  grads = [np.cos(np.arange(5.0) * (k + 1)) for k in range(6)]
  param = torch.tensor(start, requires_grad=True)
  theirs = getattr(torch.optim, cls)([param], lr=0.1, weight_decay=0.1)
  for g in grads[:3]:
    param.grad = torch.tensor(g)
    theirs.step()
  saved = theirs.state_dict()
  for option in NEWER_OPTIONS:
    saved['param_groups'][0].pop(option, None)
  ours = getattr(optim, cls)([jnp.asarray(param.detach().numpy())], lr=0.5)
  ours.load_state_dict(saved)
  theirs.load_state_dict(saved)
  assert ours.param_groups[0]['decoupled_weight_decay'] == (cls == 'AdamW')
  for g in grads[3:]:
    param.grad = torch.tensor(g)
    theirs.step()
    ours.step([jnp.asarray(g)])
  np.testing.assert_allclose(np.asarray(ours.params[0]), param.detach().numpy(),
                             rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------
# restore_optimizer: load_state_dict's checks, all or nothing.

@pytest.fixture(scope='module')
def adam_checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp('adam')
  opt, _ = twins('adam')
  fo.distributed.save_optimizer(str(root / 'ckpt'), opt)
  return root / 'ckpt'


def test_restore_optimizer_keeps_an_adamw_adamw(adam_checkpoint):
  opt = optim.AdamW(params_for('adam'), lr=0.5, amsgrad=True)
  names = list(opt.param_groups[0]['param_names'])
  fo.distributed.restore_optimizer(str(adam_checkpoint), opt)
  assert opt.param_groups[0]['decoupled_weight_decay'] is True
  assert opt.param_groups[0]['param_names'] == names
  assert opt.param_groups[0]['lr'] == ALGORITHMS['adam'].kwargs['lr']  # the saved one


# A hand-edited or damaged checkpoint's settings: the constructor's errors.
EDITS = {
    'negative_lr': ({'lr': -1.0}, ValueError, 'Invalid learning rate'),
    'string_betas': ({'betas': 'abc'}, TypeError, 'betas'),
    'one_beta': ({'betas': [0.9]}, ValueError, 'betas'),
    'no_eps': ({'eps': None}, TypeError, 'eps'),
    'missing_key': ({'eps': ...}, ValueError, r"does not fit this Adam.*lacks \['eps'\]"),
    'other_names': ({'param_names': ['x', 'y']}, ValueError, 'of other params'),
    'amsgrad_off': ({'amsgrad': False}, ValueError, 'max_exp_avg_sq'),
}


@pytest.mark.parametrize('edit', EDITS)
def test_restore_optimizer_of_edited_settings_changes_nothing(edit, adam_checkpoint,
                                                              tmp_path):
  changes, error, match = EDITS[edit]
  edited = tmp_path / 'edited'
  shutil.copytree(adam_checkpoint, edited)
  file = edited / 'param_groups' / 'metadata'
  groups = json.loads(file.read_text())
  for key, value in changes.items():
    if value is ...:
      del groups[0][key]
    else:
      groups[0][key] = value
  file.write_text(json.dumps(groups))
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(error, match=match):
    fo.distributed.restore_optimizer(str(edited), opt)
  assert_unchanged_and_working(opt, twin, before, 'adam')


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bfloat16, jnp.float16])
def test_restore_state_refuses_to_cast(dtype, tmp_path):
  tx = fo.adam(lr=0.1)
  params = {'w': jnp.ones(3)}
  _, state = tx.update({'w': jnp.full(3, 0.19)}, tx.init(params), params)
  fo.distributed.save_state(str(tmp_path / 'ckpt'), state)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype)
                        if x.dtype == jnp.float32 and x.ndim else x, state)
  with pytest.raises(ValueError, match=r"holds exp_avg\.w as float32 and the target as "
                                       r".*restoring would cast it"):
    fo.distributed.restore_state(str(tmp_path / 'ckpt'), target)


def test_restore_optimizer_refuses_to_cast_onto_bfloat16_params(adam_checkpoint):
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params_for('adam'))
  opt = optim.Adam(params, lr=0.1, amsgrad=True)
  before = snapshot(opt)
  with pytest.raises(ValueError, match='as float32 and the target as bfloat16'):
    fo.distributed.restore_optimizer(str(adam_checkpoint), opt)
  assert_identical(snapshot(opt), before)
