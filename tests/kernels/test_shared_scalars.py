"""Per-param scalars (torch's per-param ``step``) kept once per group of params.

Params that stepped together share their ``step`` (and NAdam's ``mu_product``,
ASGD's ``eta``/``mu``), so a step computes their scalars once: XLA:CPU then
compiles one kernel per output of each leaf, as for optax's shared count. A
param without a gradient still keeps its own step, as torch's does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim.kernels import pack_state, unpack_state
from functional_optim.core.shared_scalars import SharedPerLeaf, groups_of_equal
from tests.algorithms import ELEMENTWISE
from tests.kernels.test_temporaries import EXCEPTIONS  # Adadelta copies its old acc_delta

pytestmark = pytest.mark.skipif(jax.default_backend() != 'cpu',
                                reason="XLA:CPU's kernels are what is counted")


def _entry_kernels(compiled) -> int:
  """The instructions of the compiled program's entry computation that run code."""
  text = compiled.as_text()
  entry = text[text.index('\nENTRY'):]
  entry = entry[:entry.index('\n}')]
  skip = (' parameter(', ' constant(', ' tuple(', ' get-tuple-element(', ' bitcast(')
  return sum(1 for line in entry.splitlines()[1:] if not any(s in line for s in skip))


def _kernels(tx, num_leaves: int) -> int:
  params = {f'p{i:03d}': jnp.ones((8, 16)) for i in range(num_leaves)}

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  state = jax.jit(tx.init)(params)
  return _entry_kernels(jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile())


@pytest.mark.parametrize('name', ELEMENTWISE)
def test_a_leaf_costs_one_kernel_per_output(name):
  """Leaves beyond the first add one loop per output (the param and each buffer),
  and none for their scalars: kept per leaf, Adam's were four more kernels each."""
  tx = ELEMENTWISE[name].build()
  outputs = 1 + sum(1 for v in jax.tree.leaves(jax.eval_shape(tx.init, {'w': jnp.ones((8, 16))}))
                    if v.shape == (8, 16))
  if name in EXCEPTIONS:  # a kernel more per leaf, documented there
    outputs += 1
  extra = _kernels(tx, 12) - _kernels(tx, 6)
  assert extra <= 6 * outputs, f'{extra / 6:.1f} kernels per leaf for {outputs} outputs'


def _steps(state) -> list[float]:
  return [float(s) for s in jax.tree.leaves(state.step.tree())]


@pytest.mark.parametrize('name', ['adam', 'nadam', 'asgd'])
def test_a_missing_gradient_parts_the_group_and_each_param_keeps_its_own_step(name):
  # Eager: the same operations on the same values, grouped or not: equal by construction.
  tx = ELEMENTWISE[name].build()
  keys = ['a', 'b', 'c']
  params = {k: jnp.arange(3.0) + i for i, k in enumerate(keys)}
  grad = lambda t: {k: jnp.sin(params[k] * (t + 1)) for k in keys}
  grouped = tx.init(params)
  assert grouped.step.groups == ((0, 1, 2),)
  plain = unpack_state(grouped)  # a tree per field: grouped anew from the values each step
  missing = [(), ('b',), (), ('a',)]
  p_grouped, p_plain = params, params
  for t, absent in enumerate(missing):
    g = {k: None if k in absent else v for k, v in grad(t).items()}
    u, grouped = tx.update(g, grouped, p_grouped)
    p_grouped = fo.apply_updates(p_grouped, u)
    u, plain = tx.update(g, plain, p_plain)
    p_plain = fo.apply_updates(p_plain, u)
    plain = unpack_state(plain)
  assert _steps(grouped) == [3.0, 3.0, 4.0]
  assert grouped.step.groups == ((0,), (1,), (2,))  # a and b hold 3 by other histories
  for k in keys:
    np.testing.assert_array_equal(p_grouped[k], p_plain[k])
  for field in grouped._fields:
    ours, theirs = unpack_state(getattr(grouped, field)), getattr(plain, field)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_a_scan_over_steps_keeps_the_state_structure():
  tx = fo.adam(lr=0.1)
  params = {'w': jnp.ones(4), 'b': jnp.zeros(2)}

  def body(carry, t):
    params, state = carry
    grads = jax.tree.map(lambda p: p * t, params)
    updates, state = tx.update(grads, state, params)
    return (fo.apply_updates(params, updates), state), None

  (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(5.0))
  assert _steps(state) == [5.0, 5.0] and state.step.groups == ((0, 1),)


def test_states_built_from_values_are_grouped_by_value():
  tx = fo.nadam(lr=0.1)
  params = {'a': jnp.ones(2), 'b': jnp.ones(2), 'c': jnp.ones(2)}
  state = unpack_state(tx.init(params))
  state = state._replace(step={'a': jnp.float32(3), 'b': jnp.float32(2), 'c': jnp.float32(3)},
                         mu_product={'a': jnp.float32(0.5), 'b': jnp.float32(0.7),
                                     'c': jnp.float32(0.6)})
  regrouped = pack_state(state, tx.init(params))
  # a and c share a step but not a mu_product: every 0-d field must agree.
  assert regrouped.step.groups == regrouped.mu_product.groups == ((0,), (1,), (2,))
  assert groups_of_equal([[3.0, 2.0, 3.0]]) == ((0, 2), (1,))
  state = state._replace(mu_product={k: jnp.float32(0.5) for k in params})
  assert pack_state(state, tx.init(params)).step.groups == ((0, 2), (1,))


def test_the_tree_of_values_reads_as_the_per_param_tree():
  steps = SharedPerLeaf.full(jax.tree.structure({'b': 0, 'w': [0, 0]}), 2, jnp.float32)
  assert float(steps['w'][1]) == 2.0 and len(steps) == 2 and list(steps) == ['b', 'w']
  assert jax.tree.structure(steps.tree()) == jax.tree.structure({'b': 0, 'w': [0, 0]})
  assert 'SharedPerLeaf' in repr(steps)


def test_a_traced_tree_state_steps_each_param_exactly():
  """A tree of steps inside jit has unknown values: every param its own group."""
  tx = fo.adam(lr=0.1)
  params = {'a': jnp.ones(2), 'b': jnp.ones(2)}
  plain = unpack_state(tx.init(params))
  plain = plain._replace(step={'a': jnp.float32(4), 'b': jnp.float32(1)})
  _, state = jax.jit(tx.update)(params, plain, params)
  assert _steps(state) == [5.0, 2.0] and state.step.groups == ((0,), (1,))


def test_checkpoints_hold_every_params_step_whatever_the_grouping(tmp_path):
  """Saved as trees, restored onto a fresh state's structure, grouped by value."""
  from functional_optim import optim
  tx = fo.adam(lr=0.1)
  params = {'a': jnp.ones(2), 'b': jnp.ones(2)}
  state = tx.init(params)
  _, state = tx.update({'a': jnp.ones(2), 'b': None}, state, params)  # parts a from b
  fo.distributed.save_state(tmp_path / 'functional', state)
  restored = fo.distributed.restore_state(tmp_path / 'functional', tx.init(params))
  assert restored.step.groups == ((0,), (1,)) and _steps(restored) == [1.0, 0.0]
  jax.tree.map(np.testing.assert_array_equal, unpack_state(restored), unpack_state(state))

  opt = optim.Adam(params, lr=0.1)
  opt.step({'a': jnp.ones(2), 'b': None})
  fo.distributed.save_optimizer(tmp_path / 'facade', opt)
  resumed = optim.Adam(dict(opt.params), lr=0.1)  # the params are the model's to save
  fo.distributed.restore_optimizer(tmp_path / 'facade', resumed)
  assert [int(resumed.state[k].get('step', 0)) for k in ('a', 'b')] == [1, 0]
  for twin in (opt, resumed):
    twin.step({'a': jnp.ones(2), 'b': jnp.ones(2)})
  jax.tree.map(np.testing.assert_array_equal, resumed.params, opt.params)


def test_fields_grouped_differently_step_in_their_common_refinement():
  from functional_optim.core.shared_scalars import common_groups
  treedef = jax.tree.structure([0, 0, 0])
  a = SharedPerLeaf([jnp.float32(1), jnp.float32(2)], ((0, 1), (2,)), treedef)
  b = SharedPerLeaf([jnp.float32(5), jnp.float32(6)], ((0,), (1, 2)), treedef)
  assert common_groups([a, b]) == ((0,), (1,), (2,))
  assert common_groups([a, a]) == a.groups
