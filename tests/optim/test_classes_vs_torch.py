"""The facade's classes against torch's: optim.X against torch.optim.X, for every
algorithm of the registry (``tests/algorithms.py``), with two param groups, named
and unnamed params, and state handed between the two libraries mid-run, both ways.

(Each algorithm's functional builder against torch, option by option:
``tests/algorithms_vs_torch/``.)"""

import copy
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import optim
from functional_optim.interop.torch import state_dict_to_torch
from tests.algorithms import ALGORITHMS, NotHere, PerAlgorithm
from tests.algorithms_vs_torch.harness import assert_close, initial_params, loss, precision
from tests.common import TORCH_REASON

torch = pytest.importorskip('torch', reason=TORCH_REASON)

# registry name -> (defaults, overrides of the second group); the algorithms whose
# class needs a problem of its own, NotHere.
CLASSES = PerAlgorithm('test_classes_vs_torch.py CLASSES', {
    'sgd': (dict(lr=0.05, momentum=0.9, weight_decay=0.01),
            dict(lr=0.02, nesterov=True, maximize=False, dampening=0.0)),
    'adam': (dict(lr=0.05, amsgrad=True),
             dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    'adamw': (dict(lr=0.05, weight_decay=0.05),
              dict(lr=0.02, eps=1e-6, amsgrad=True)),
    'adadelta': (dict(lr=1.0, weight_decay=0.01), dict(lr=0.5, rho=0.8, eps=1e-5)),
    'adafactor': (dict(lr=0.01), dict(lr=0.02, d=2.0, weight_decay=0.01)),
    'adagrad': (dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
                dict(lr=0.05, weight_decay=0.01)),
    'adamax': (dict(lr=0.02), dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
    'asgd': (dict(lr=0.05, t0=10), dict(lr=0.02, lambd=1e-3)),
    'nadam': (dict(lr=0.02), dict(lr=0.01, momentum_decay=0.01, weight_decay=0.01,
                                  decoupled_weight_decay=True)),
    'radam': (dict(lr=0.02), dict(lr=0.01, weight_decay=0.01)),
    # The second group has no momentum: torch keeps no momentum_buffer for it.
    'rmsprop': (dict(lr=0.01, alpha=0.9, eps=1e-2, momentum=0.5),
                dict(lr=0.005, centered=True, momentum=0.0)),
    'rprop': (dict(lr=0.01), dict(lr=0.02, etas=(0.4, 1.3))),
    'muon': NotHere('test_muon_two_groups: matrices only'),
    'sparse_adam': NotHere('test_sparse_adam_with_sparse_gradients: sparse gradients'),
    'lbfgs': NotHere('test_lbfgs_closure_steps, test_lbfgs_state_dict_handoff_both_ways: '
                     'steps with a closure'),
})
FLOAT32 = ('sgd', 'adam', 'adamw')
FLOAT32_SCALARS = ('eta', 'mu', 'mu_product')


def _groups(params, overrides, named):
  entries = [(f'p{i}', p) for i, p in enumerate(params)] if named else list(params)
  return [{'params': entries[:2]}, {'params': entries[2:], **overrides}]


def _torch_opt(name, init, named, overrides=None):
  defaults, second = CLASSES[name]
  tensors = [torch.tensor(x, requires_grad=True) for x in init]
  return tensors, getattr(torch.optim, ALGORITHMS[name].torch_name)(
      _groups(tensors, overrides or second, named), **defaults)


def _our_opt(name, init, named, overrides=None):
  defaults, second = CLASSES[name]
  return ALGORITHMS[name].facade(
      _groups([jnp.asarray(x) for x in init], overrides or second, named), **defaults)


def _our_grads(opt, named):
  flat = opt.params[0] if not named else list(opt.params[0].values())
  flat = flat + (opt.params[1] if not named else list(opt.params[1].values()))
  grads = jax.grad(lambda ps: loss(ps, jnp))(flat)
  if named:
    return [{f'p{i}': grads[i] for i in range(2)}, {f'p{i}': grads[i] for i in range(2, 4)}]
  return [grads[:2], grads[2:]]


def _torch_step(tensors, opt):
  opt.zero_grad()
  loss(tensors, torch).backward()
  opt.step()


def _our_flat_params(opt, named):
  return [np.asarray(p) for group in opt.param_groups for p in group['params']]


def _compare(opt, tensors, topt):
  for i, (ours, theirs) in enumerate(zip(_our_flat_params(opt, False), tensors)):
    assert_close(ours, theirs.detach().numpy(), f'param {i}')
  ours_sd, theirs_sd = opt.state_dict(), topt.state_dict()
  assert ours_sd['param_groups'] == theirs_sd['param_groups']
  assert set(ours_sd['state']) == set(theirs_sd['state'])
  for pid, entry in theirs_sd['state'].items():
    assert set(ours_sd['state'][pid]) == set(entry), pid
    for key, value in entry.items():
      ours = ours_sd['state'][pid][key]
      value = value.numpy()
      assert_close(ours, value, f'state {pid} {key}')


RUNS = ([(name, np.float64, named) for name in CLASSES.names() for named in (False, True)]
        + [(name, np.float32, named) for name in FLOAT32 for named in (False, True)])
# The ids name the classes, as torch does.
CLASS_NAMES = [ALGORITHMS[name].torch_name for name in CLASSES.names()]


@pytest.mark.parametrize('name,dtype,named', RUNS,
                         ids=[f'{ALGORITHMS[n].torch_name}-{np.dtype(d).name}-'
                              f'{"named" if m else "unnamed"}' for n, d, m in RUNS])
def test_two_groups_50_steps(name, dtype, named):
  with precision(dtype):
    init = initial_params(dtype)
    tensors, topt = _torch_opt(name, init, named)
    opt = _our_opt(name, init, named)
    for step in range(50):
      _torch_step(tensors, topt)
      opt.step(_our_grads(opt, named))
      if step % 7 == 3:  # param-group edits mid-run, in both
        for ours, theirs in zip(opt.param_groups, topt.param_groups):
          ours['lr'] = theirs['lr'] = theirs['lr'] * 0.7
    _compare(opt, tensors, topt)
    assert sum(fn._cache_size() for fn in opt._compiled.values()) == 1


@pytest.mark.parametrize('name', CLASSES.names(), ids=CLASS_NAMES)
def test_handoff_from_torch(name, x64):
  """torch trains 10 steps, saves; we load and continue; torch continues alongside."""
  init = initial_params(np.float64)
  tensors, topt = _torch_opt(name, init, named=True)
  for _ in range(10):
    _torch_step(tensors, topt)
  buffer = io.BytesIO()
  torch.save(topt.state_dict(), buffer)
  buffer.seek(0)
  saved = torch.load(buffer)
  opt = _our_opt(name, [t.detach().numpy() for t in tensors], named=True)
  opt.load_state_dict(saved)
  for _ in range(15):
    _torch_step(tensors, topt)
    opt.step(_our_grads(opt, named=True))
  _compare(opt, tensors, topt)


@pytest.mark.parametrize('name', CLASSES.names(), ids=CLASS_NAMES)
def test_handoff_to_torch(name, x64):
  """We train 10 steps; torch loads our state dict and continues alongside us."""
  init = initial_params(np.float64)
  opt = _our_opt(name, init, named=False)
  for _ in range(10):
    opt.step(_our_grads(opt, named=False))
  tensors, topt = _torch_opt(name, _our_flat_params(opt, False), named=False)
  topt.load_state_dict(state_dict_to_torch(opt.state_dict()))
  # torch's loader casts every state tensor but `step` to the param's dtype, so
  # NAdam's mu_product and ASGD's eta/mu would go on in float64, unlike a torch
  # run that never reloaded. Put back the float32 that torch itself creates.
  for entry in topt.state.values():
    for key in FLOAT32_SCALARS:
      if key in entry:
        entry[key] = entry[key].float()
  for _ in range(15):
    _torch_step(tensors, topt)
    opt.step(_our_grads(opt, named=False))
  _compare(opt, tensors, topt)


def test_named_parameter_load_hook_from_torch_docs(x64):
  """torch's documented MoE example: one layer's state copied into two by name.

  The hook is the documentation's, unchanged but for ``clone`` on arrays.
  """
  rng = np.random.default_rng(3)
  w, b = rng.normal(size=(4, 3)), rng.normal(size=4)
  x = rng.normal(size=(8, 3))

  # torch: OneLayerModel trained, then TwoLayerModel resumed from it.
  fc = [torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)]
  opt1 = torch.optim.SGD(list(zip(['fc.weight', 'fc.bias'], fc)), lr=0.01, momentum=0.9)
  for _ in range(5):
    opt1.zero_grad()
    torch.sum(torch.tanh(torch.tensor(x) @ fc[0].T + fc[1]) ** 2).backward()
    opt1.step()
  saved = opt1.state_dict()

  def adapt_state_dict_ids(optimizer, state_dict):
    adapted_state_dict = copy.deepcopy(optimizer.state_dict())
    for k, v in state_dict['param_groups'][0].items():
      if k not in ['params', 'param_names']:
        adapted_state_dict['param_groups'][0][k] = v
    lookup_dict = {'fc1.weight': 'fc.weight', 'fc1.bias': 'fc.bias',
                   'fc2.weight': 'fc.weight', 'fc2.bias': 'fc.bias'}
    clone_deepcopy = lambda d: {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v))
                                for k, v in d.items()}
    for param_id, param_name in zip(
        optimizer.state_dict()['param_groups'][0]['params'],
        optimizer.state_dict()['param_groups'][0]['param_names']):
      name_in_loaded = lookup_dict[param_name]
      index_in_loaded_list = state_dict['param_groups'][0]['param_names'].index(name_in_loaded)
      id_in_loaded = state_dict['param_groups'][0]['params'][index_in_loaded_list]
      if id_in_loaded in state_dict['state']:
        adapted_state_dict['state'][param_id] = clone_deepcopy(state_dict['state'][id_in_loaded])
    return adapted_state_dict

  names = ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
  start = [t.detach().numpy().copy() for t in fc] * 2
  t2 = [torch.tensor(v, requires_grad=True) for v in start]
  topt2 = torch.optim.SGD(list(zip(names, t2)), lr=0.01, momentum=0.9)
  topt2.register_load_state_dict_pre_hook(adapt_state_dict_ids)
  topt2.load_state_dict(copy.deepcopy(saved))
  opt2 = optim.SGD(list(zip(names, [jnp.asarray(v) for v in start])), lr=0.01, momentum=0.9)
  opt2.register_load_state_dict_pre_hook(adapt_state_dict_ids)
  opt2.load_state_dict(copy.deepcopy(saved))

  def two_layer(ps, xp, xs):
    return xp.sum(((xp.tanh(xs @ ps[0].T + ps[1]) + xp.tanh(xs @ ps[2].T + ps[3])) / 2) ** 2)

  for _ in range(5):
    topt2.zero_grad()
    two_layer(t2, torch, torch.tensor(x)).backward()
    topt2.step()
    params = list(opt2.params.values())
    grads = jax.grad(lambda ps: two_layer(ps, jnp, jnp.asarray(x)))(params)
    opt2.step(dict(zip(names, grads)))
  for name, theirs in zip(names, t2):
    assert_close(np.asarray(opt2.params[name]), theirs.detach().numpy(), name)
  np.testing.assert_array_equal(opt2.state['fc1.weight']['momentum_buffer'].shape, (4, 3))


def test_sparse_adam_with_sparse_gradients(x64):
  """An embedding table: each step's BCOO gradient touches a few rows (some twice)."""
  from jax.experimental import sparse
  rng = np.random.default_rng(5)
  table = rng.normal(size=(12, 3))
  theirs_param = torch.tensor(table, requires_grad=True)
  topt = torch.optim.SparseAdam([theirs_param], lr=0.05)
  opt = optim.SparseAdam([jnp.asarray(table)], lr=0.05)
  for _ in range(20):
    rows = rng.integers(0, 12, size=5)
    values = rng.normal(size=(5, 3))
    theirs_param.grad = torch.sparse_coo_tensor(
        torch.tensor(rows)[None], torch.tensor(values), (12, 3))
    topt.step()
    opt.step([sparse.BCOO((jnp.asarray(values), jnp.asarray(rows)[:, None]), shape=(12, 3))])
  assert_close(np.asarray(opt.params[0]), theirs_param.detach().numpy(), 'table')
  ours, theirs = opt.state_dict()['state'][0], topt.state_dict()['state'][0]
  assert ours['step'] == theirs['step'] == 20 and isinstance(ours['step'], int)
  for key in ('exp_avg', 'exp_avg_sq'):
    assert_close(ours[key], theirs[key].numpy(), key)


def test_muon_two_groups(x64):
  rng = np.random.default_rng(6)
  init = [rng.normal(size=s) for s in [(4, 3), (3, 5), (2, 2)]]
  tensors = [torch.tensor(x, requires_grad=True) for x in init]
  groups = lambda ps: [{'params': ps[:2]}, {'params': ps[2:], 'lr': 0.01, 'nesterov': False}]
  topt = torch.optim.Muon(groups(tensors), lr=0.02, adjust_lr_fn='match_rms_adamw')
  opt = optim.Muon(groups([jnp.asarray(x) for x in init]), lr=0.02,
                   adjust_lr_fn='match_rms_adamw')
  objective = lambda ps, xp: sum(xp.sum(xp.log(xp.cosh(p - 0.2))) for p in ps)
  for _ in range(10):
    topt.zero_grad()
    objective(tensors, torch).backward()
    topt.step()
    grads = jax.grad(lambda ps: objective(ps[0] + ps[1], jnp))(opt.params)
    opt.step(grads)
  # Newton-Schulz runs in bfloat16 in both libraries, with the same operations,
  # so the orthogonalized updates agree bit for bit and float64 params to rounding.
  for i, (ours, theirs) in enumerate(zip(opt.params[0] + opt.params[1], tensors)):
    assert_close(np.asarray(ours), theirs.detach().numpy(), f'param {i}')


def _lbfgs_counts_nearby(objective, w0, steps, **kwargs):
  """(func_evals, n_iter) of torch's LBFGS after ``steps`` steps from ``w0`` moved by
  one rounding error, either way.

  Where they differ from torch's own, a comparison at the rounding level (a
  tolerance, a line-search condition) decided torch's run, and on another CPU it
  may go the other way: ours may equal any of them.
  """
  counts = set()
  for sign in (1, -1):
    w = torch.tensor(w0 + sign * np.finfo(w0.dtype).eps * np.maximum(np.abs(w0), 1.0),
                     requires_grad=True)
    opt = torch.optim.LBFGS([w], **kwargs)

    def closure(w=w, opt=opt):
      opt.zero_grad()
      loss = objective(w)
      loss.backward()
      return loss

    for _ in range(steps):
      opt.step(closure)
    counts.add((opt.state[w]['func_evals'], opt.state[w]['n_iter']))
  return counts


@pytest.mark.parametrize('line_search_fn', [None, 'strong_wolfe'])
def test_lbfgs_closure_steps(line_search_fn, x64):
  """Logistic regression, 3 steps of 20 inner iterations, closure in both libraries."""
  rng = np.random.default_rng(7)
  x, y = rng.normal(size=(60, 4)), (rng.random(60) > 0.5).astype(np.float64)
  w0 = rng.normal(size=4) * 0.1

  def nll(w, xp, xs, ys):
    z = xs @ w
    return xp.mean(xp.log(1 + xp.exp(-z)) + (1 - ys) * z) + 0.01 * xp.sum(w * w)

  tw = torch.tensor(w0, requires_grad=True)
  topt = torch.optim.LBFGS([tw], lr=0.8, history_size=5, line_search_fn=line_search_fn)
  def torch_closure():
    topt.zero_grad()
    loss = nll(tw, torch, torch.tensor(x), torch.tensor(y))
    loss.backward()
    return loss
  opt = optim.LBFGS([('w', jnp.asarray(w0))], lr=0.8, history_size=5,
                    line_search_fn=line_search_fn)
  closure = lambda params: nll(params['w'], jnp, jnp.asarray(x), jnp.asarray(y))
  for _ in range(3):
    theirs = topt.step(torch_closure).detach()
    ours = opt.step(closure)
    np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-12)
    assert_close(np.asarray(opt.params['w']), tw.detach().numpy(), 'w')
  state = topt.state[tw]
  # Measured: torch's runs from a start one rounding away count the same (11, 10),
  # with MKL's AVX-512 and AVX2 code: the tolerances stop the steps far from the
  # rounding level.
  allowed = {(state['func_evals'], state['n_iter'])} | _lbfgs_counts_nearby(
      lambda w: nll(w, torch, torch.tensor(x), torch.tensor(y)), w0, 3, lr=0.8,
      history_size=5, line_search_fn=line_search_fn)
  assert (int(opt.opt_state.func_evals), int(opt.opt_state.n_iter)) in allowed
  assert opt._compilations() == 1


def test_lbfgs_state_dict_handoff_both_ways(x64):
  """torch's LBFGS state (lists, Python numbers) loads into ours and back."""
  rng = np.random.default_rng(8)
  a, w0 = rng.normal(size=(6, 6)), rng.normal(size=6)
  objective = lambda w, xp, m: xp.sum(xp.log(xp.cosh(m @ w - 0.5)))
  tw = torch.tensor(w0, requires_grad=True)
  topt = torch.optim.LBFGS([tw], lr=0.5, max_iter=4, history_size=3)
  def torch_closure():
    topt.zero_grad()
    loss = objective(tw, torch, torch.tensor(a))
    loss.backward()
    return loss
  closure = lambda params: objective(params[0], jnp, jnp.asarray(a))
  topt.step(torch_closure)
  opt = optim.LBFGS([jnp.asarray(tw.detach().numpy())], lr=0.5, max_iter=4, history_size=3)
  opt.load_state_dict(topt.state_dict())
  for _ in range(3):  # continue side by side from torch's state
    topt.step(torch_closure)
    opt.step(closure)
  assert_close(np.asarray(opt.params[0]), tw.detach().numpy(), 'w')
  ours, theirs = opt.state_dict()['state'][0], topt.state_dict()['state'][0]
  # max_iter ends each step: 4 steps of 4 evaluations and iterations, as torch's runs
  # from a start one rounding away also count (measured).
  allowed = {(theirs['func_evals'], theirs['n_iter'])} | _lbfgs_counts_nearby(
      lambda w: objective(w, torch, torch.tensor(a)), w0, 4, lr=0.5, max_iter=4,
      history_size=3)
  assert (ours['func_evals'], ours['n_iter']) in allowed
  assert len(ours['old_dirs']) == len(theirs['old_dirs']) == 3
  for key in ('old_dirs', 'old_stps', 'ro'):
    for i, (o, t) in enumerate(zip(ours[key], theirs[key])):
      assert_close(o, t.numpy(), f'{key}[{i}]')
  # And back: torch continues from our state as we do.
  topt2 = torch.optim.LBFGS([torch.tensor(np.asarray(opt.params[0]), requires_grad=True)],
                            lr=0.5, max_iter=4, history_size=3)
  topt2.load_state_dict(state_dict_to_torch(opt.state_dict()))
  assert topt2.state_dict()['state'][0]['n_iter'] == ours['n_iter']
