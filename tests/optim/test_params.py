"""Param identity as torch has it: order, names, nnx groups (torch-free).

A facade built from a dict, a nested pytree or an nnx Module lists its params in
the order they were written (dict insertion order, attribute definition order:
torch's ``named_parameters()``), names them by dotted path, saves ``param_names``,
and loads a state dict by name when both sides have names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import optim

nnx = pytest.importorskip('flax.nnx')


def layers(order=('q', 'k', 'v', 'o')):
  """Four same-shape layers, each with its own values, in ``order``."""
  value = {'q': 1.0, 'k': 2.0, 'v': 3.0, 'o': 4.0}
  return {name: {'weight': jnp.full((2, 2), value[name]), 'bias': jnp.full(2, value[name])}
          for name in order}


def grads_of(params, scale=1.0):
  return jax.tree.map(lambda p: scale * (p + 0.5), params)


def test_a_dict_keeps_insertion_order_and_dotted_names():
  opt = optim.Adam(layers(), lr=0.1)
  assert opt.param_groups[0]['param_names'] == [
      'q.weight', 'q.bias', 'k.weight', 'k.bias', 'v.weight', 'v.bias', 'o.weight', 'o.bias']
  saved = opt.state_dict()['param_groups'][0]
  assert saved['params'] == list(range(8)) and saved['param_names'][0] == 'q.weight'
  opt.step(grads_of(opt.params))
  # The state by name and by torch's id lands on the param that has that name.
  for i, name in enumerate(saved['param_names']):
    layer, kind = name.split('.')
    want = np.asarray(grads_of(layers())[layer][kind]) * 0.1  # (1-β1)·g
    np.testing.assert_allclose(opt.state[name]['exp_avg'], want, rtol=1e-6)
    np.testing.assert_allclose(opt.state[i]['exp_avg'], want, rtol=1e-6)


def test_a_nested_pytree_is_named_by_its_path_with_list_indices():
  params = {'h': [{'attn': {'w': jnp.ones(2)}}, {'attn': {'w': jnp.zeros(2)}}],
            'ln_f': jnp.ones(3)}
  opt = optim.SGD(params, lr=0.1)
  assert opt.param_groups[0]['param_names'] == ['h.0.attn.w', 'h.1.attn.w', 'ln_f']


class Attention(nnx.Module):
  def __init__(self, rngs):
    # Defined out of alphabetical order, as models are: torch lists them so.
    self.q = nnx.Linear(2, 2, rngs=rngs)
    self.k = nnx.Linear(2, 2, rngs=rngs)
    self.v = nnx.Linear(2, 2, rngs=rngs)
    self.o = nnx.Linear(2, 2, rngs=rngs)


class Model(nnx.Module):
  def __init__(self, rngs):
    self.encoder = Attention(rngs)
    self.blocks = nnx.List([nnx.Linear(2, 2, rngs=rngs), nnx.Linear(2, 2, rngs=rngs)])
    self.head = nnx.Linear(2, 1, rngs=rngs)

  def __call__(self, x):
    e = self.encoder
    x = e.o(e.v(x) * e.k(x) + e.q(x))
    for block in self.blocks:
      x = jnp.tanh(block(x))
    return self.head(x)


X = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)


def loss(model):
  return jnp.mean(model(X) ** 2)


def test_an_nnx_module_keeps_definition_order_and_names():
  model = Model(nnx.Rngs(0))
  names = optim.SGD(model, lr=0.1).param_groups[0]['param_names']
  assert names[:8] == ['encoder.q.kernel', 'encoder.q.bias', 'encoder.k.kernel',
                       'encoder.k.bias', 'encoder.v.kernel', 'encoder.v.bias',
                       'encoder.o.kernel', 'encoder.o.bias']
  assert names[8:] == ['blocks.0.kernel', 'blocks.0.bias', 'blocks.1.kernel',
                       'blocks.1.bias', 'head.kernel', 'head.bias']
  assert [n for n, _ in optim.named_parameters(model)] == names


def _train(make_opt, steps=3):
  model = Model(nnx.Rngs(0))
  opt = make_opt(model)
  for _ in range(steps):
    opt.step(nnx.grad(loss)(model))
  return nnx.state(model, nnx.Param)


@pytest.mark.parametrize('make_groups', [
    lambda m: [{'params': m.encoder}, {'params': m.blocks}, {'params': m.head, 'lr': 0.05}],
    lambda m: [{'params': [(n, p) for n, p in optim.named_parameters(m)
                           if not n.startswith('head')]},
               {'params': [(n, p) for n, p in optim.named_parameters(m)
                           if n.startswith('head')], 'lr': 0.05}],
], ids=['submodules', 'named_parameters'])
def test_nnx_groups_step_with_the_whole_models_grads(make_groups):
  """Each group's gradients are found in the model's nnx.grad result (sub-modules
  by their paths and shapes, named params by name): the same as giving each group
  its own, as a list."""
  whole = _train(lambda m: optim.Adam(make_groups(m), lr=0.1))

  def by_group(model):
    groups = make_groups(model)
    opt = optim.Adam(groups, lr=0.1)
    opt.step = (lambda step: lambda grads: step(
        [grads_for(model, group['params'], grads) for group in groups]))(opt.step)
    return opt
  per_group = _train(by_group)
  jax.tree.map(np.testing.assert_array_equal, whole, per_group)  # the same program
  reference = _train(lambda m: optim.Adam(m, lr=0.1))
  # The head took the lr 0.05: it moved, and differently from a one-group run.
  assert not np.allclose(whole['head']['kernel'][...], reference['head']['kernel'][...])


def grads_for(model, params, grads):
  """One group's gradients out of the model's, cut by hand."""
  if isinstance(params, nnx.Module):
    path = {id(module): name for name, module in
            [('encoder', model.encoder), ('blocks', model.blocks), ('head', model.head)]}
    return grads[path[id(params)]]
  flat = {'.'.join(map(str, k)): v for k, v in nnx.to_flat_state(grads)}
  return [flat[name][...] for name, _ in params]


def test_unnamed_variables_with_a_models_grads_ask_for_names():
  model = Model(nnx.Rngs(0))
  variables = [p for _, p in optim.named_parameters(model)]
  opt = optim.SGD([{'params': variables[:2]}, {'params': variables[2:]}], lr=0.1)
  with pytest.raises(ValueError, match=r'neither a module nor named.*named_parameters'):
    opt.step(nnx.grad(loss)(model))


def test_ambiguous_submodule_groups_are_refused_with_a_remedy():
  model = Model(nnx.Rngs(0))
  opt = optim.SGD([{'params': model.blocks[0]}, {'params': model.blocks[1]}], lr=0.1)
  with pytest.raises(ValueError, match=r'exactly once \(found at blocks.0, blocks.1, .*'
                                       r'one entry per group'):
    opt.step(nnx.grad(loss)(model))
  # A list per group works.
  grads = nnx.grad(loss)(model)
  opt.step([grads['blocks'][0], grads['blocks'][1]])


def test_overlapping_nnx_groups_are_refused_as_torch_refuses():
  model = Model(nnx.Rngs(0))
  with pytest.raises(ValueError, match='some parameters appear in more than one parameter '
                                       'group'):
    optim.SGD([{'params': model}, {'params': model.blocks[1]}], lr=0.1)
