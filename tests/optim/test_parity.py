"""optim.X against torch.optim.X: two param groups, named and unnamed params, and
state handed between the two libraries mid-run, both ways."""

import copy
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from functional_optim import optim
from functional_optim.interop.torch import state_dict_to_torch
from tests.parity.harness import assert_close, initial_params, loss, precision

# class name -> (defaults, overrides of the second group)
CLASSES = {
    'SGD': (dict(lr=0.05, momentum=0.9, weight_decay=0.01),
            dict(lr=0.02, nesterov=True, maximize=False, dampening=0.0)),
    'Adam': (dict(lr=0.05, amsgrad=True),
             dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    'AdamW': (dict(lr=0.05, weight_decay=0.05),
              dict(lr=0.02, eps=1e-6, amsgrad=True)),
}


def _groups(params, overrides, named):
  entries = [(f'p{i}', p) for i, p in enumerate(params)] if named else list(params)
  return [{'params': entries[:2]}, {'params': entries[2:], **overrides}]


def _torch_opt(name, init, named, overrides=None):
  defaults, second = CLASSES[name]
  tensors = [torch.tensor(x, requires_grad=True) for x in init]
  return tensors, getattr(torch.optim, name)(
      _groups(tensors, overrides or second, named), **defaults)


def _our_opt(name, init, named, overrides=None):
  defaults, second = CLASSES[name]
  return getattr(optim, name)(
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
      assert_close(ours_sd['state'][pid][key], value.numpy(), f'state {pid} {key}')


@pytest.mark.parametrize('named', [False, True], ids=['unnamed', 'named'])
@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CLASSES)
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


@pytest.mark.parametrize('name', CLASSES)
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


@pytest.mark.parametrize('name', CLASSES)
def test_handoff_to_torch(name, x64):
  """We train 10 steps; torch loads our state dict and continues alongside us."""
  init = initial_params(np.float64)
  opt = _our_opt(name, init, named=False)
  for _ in range(10):
    opt.step(_our_grads(opt, named=False))
  tensors, topt = _torch_opt(name, _our_flat_params(opt, False), named=False)
  topt.load_state_dict(state_dict_to_torch(opt.state_dict()))
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
