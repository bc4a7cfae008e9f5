"""The facade owns what it created and nothing else.

An array the user can reach stays valid after any number of steps (the facade
donates only buffers no one else refers to), and edits to a model's params
between steps are what the next step starts from, as in torch, where a param is
edited in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from functional_optim import optim

X = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)


class MLP(nnx.Module):

  def __init__(self, seed: int = 0):
    self.hidden = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))
    self.out = nnx.Linear(4, 1, rngs=nnx.Rngs(seed + 1))

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


def loss(model):
  return jnp.mean(model(X) ** 2)


def grads_of(model):
  return nnx.grad(loss)(model)


OPTIMIZERS = {
    'sgd': lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
    'adam': lambda p: optim.Adam(p, lr=0.01),
}


def values(state: nnx.State) -> nnx.State:
  """An nnx state with its Variables' values as leaves (the facade's tree)."""
  return jax.tree.map(lambda v: v[...], state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def readable(tree) -> list[np.ndarray]:
  """Every array of ``tree`` read back (raises if one was donated or deleted)."""
  if isinstance(tree, nnx.Module):
    tree = values(nnx.state(tree))
  return [np.array(x.numpy() if hasattr(x, 'detach') else x)  # a torch tensor: its copy
          for x in jax.tree.leaves(tree)]


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# Edits between steps.

EDITS = {
    'index_assign': lambda m, w: m.hidden.kernel.__setitem__(..., w),
    'set_value': lambda m, w: m.hidden.kernel.set_value(w),
    'nnx_update': lambda m, w: nnx.update(m, nnx.State({'hidden': {'kernel': nnx.Param(w)}})),
}


@pytest.mark.parametrize('edit', EDITS)
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_edits_to_an_nnx_model_are_what_the_next_step_starts_from(name, edit):
  model = MLP()
  opt = OPTIMIZERS[name](model)
  opt.step(grads_of(model))
  pretrained = jnp.full((3, 4), 0.25)
  EDITS[edit](model, pretrained)
  np.testing.assert_array_equal(model.hidden.kernel[...], pretrained)
  # What the step must do: the algorithm from the edited params and the state.
  params = values(nnx.state(model, nnx.Param))
  grads = values(grads_of(model))
  state = opt.opt_state
  updates, _ = jax.jit(opt.transformation.update)(grads, state, params)
  expected = readable(optax.apply_updates(params, updates))
  opt.step(grads)
  got = readable(values(nnx.state(model, nnx.Param)))
  # Another program (the facade's compiled step against this jitted update) may
  # round one multiply-add differently: a few float32 ulps.
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # And the edit is not lost: one step moves the kernel by far less than its edit did.
  assert np.max(np.abs(model.hidden.kernel[...] - pretrained)) < 0.2


def test_the_params_setter_then_edits_to_the_model_both_count():
  model = MLP()
  opt = optim.SGD(model, lr=0.5)
  opt.step(grads_of(model))
  model.out.bias[...] = jnp.array([3.0])
  g = grads_of(model)
  opt.step(g)
  np.testing.assert_allclose(model.out.bias[...], 3.0 - 0.5 * g['out']['bias'][...], rtol=1e-6)


# ----------------------------------------------------------------------------
# Arrays the user holds stay valid.

HELD = {
    # what the user keeps, read from the model or the optimizer before a step
    'nnx_clone': lambda model, opt: nnx.clone(model),
    'variable_value': lambda model, opt: model.hidden.kernel.get_value(),
    'index_read': lambda model, opt: model.hidden.kernel[...],
    'pure_dict': lambda model, opt: nnx.to_pure_dict(nnx.state(model)),
    'state_values': lambda model, opt: jax.tree.leaves(values(nnx.state(model))),
    'opt_params': lambda model, opt: opt.params,
    'opt_state': lambda model, opt: opt.opt_state,
    'state_dict': lambda model, opt: opt.state_dict(),
}


@pytest.mark.parametrize('held', HELD)
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_arrays_read_before_a_step_stay_valid(name, held):
  model = MLP()
  opt = OPTIMIZERS[name](model)
  opt.step(grads_of(model))
  kept = HELD[held](model, opt)
  copies = readable(kept)
  for _ in range(3):
    opt.step(grads_of(model))
  assert_same(readable(kept), copies)


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_arrays_given_to_the_optimizer_stay_valid(name):
  make = OPTIMIZERS[name]
  params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
  extra = {'v': jnp.full(4, 2.0)}
  replacement = {'w': jnp.full((3, 2), 5.0), 'b': jnp.full(2, -1.0)}
  copies = [readable(params), readable(extra), readable(replacement)]
  opt = make(params)
  opt.add_param_group({'params': extra})
  grads = [{'w': jnp.ones((3, 2)), 'b': jnp.ones(2)}, {'v': jnp.ones(4)}]
  opt.step(grads)
  opt.params = [replacement, opt.params[1]]
  for _ in range(3):
    opt.step(grads)
  assert_same(readable(params), copies[0])
  assert_same(readable(extra), copies[1])
  assert_same(readable(replacement), copies[2])


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_a_rollback_to_a_kept_state_replays_the_same_steps(name):
  make = OPTIMIZERS[name]
  opt = make({'w': jnp.linspace(-1.0, 1.0, 6)})
  grads = [{'w': jnp.full(6, float(i + 1))} for i in range(3)]
  opt.step(grads[0])
  saved_params, saved_state = opt.params, opt.opt_state
  for g in grads[1:]:
    opt.step(g)
  first = readable((opt.params, opt.opt_state))
  opt.params, opt.opt_state = saved_params, saved_state
  for g in grads[1:]:
    opt.step(g)
  # The same compiled step on the same inputs: bit for bit.
  assert_same(readable((opt.params, opt.opt_state)), first)


def test_a_model_edited_through_a_clone_is_not_the_optimizers():
  model = MLP()
  opt = optim.SGD(model, lr=0.1)
  clone = nnx.clone(model)
  opt.step(grads_of(model))
  # The clone is the user's: it keeps the values of before the step.
  assert not np.array_equal(clone.hidden.kernel[...], model.hidden.kernel[...])
  clone.hidden.kernel[...] = jnp.zeros((3, 4))
  opt.step(grads_of(model))
  assert not np.array_equal(model.hidden.kernel[...], 0.0)
