"""The generic Pallas kernel: fused_update computes what run_math computes.

On CPU the kernel runs in interpret mode, over small buffers cut into several
blocks (and one ragged last block), for the math of every elementwise algorithm
of the registry (``tests/algorithms.py``), and beyond that for AdamW's (Adam with
AMSGrad and decoupled decay), SGD's with Nesterov momentum, Adagrad's and Rprop's
(a bool scalar), with per-row scalars, in float32, float64 and bfloat16 storage
with float32 state. One test lowers the kernel for CUDA (Triton) without a GPU.
"""

import functools
import importlib
import re
from unittest import mock

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

from functional_optim.kernels import pallas
from functional_optim.kernels import run_math
from functional_optim.kernels.pallas import fused_update, pallas_options
from tests.algorithms import ELEMENTWISE, PerAlgorithm

LANES = 128


def _optimizer_module(name):
  # The math functions are the algorithm modules' own (functional_optim.optimizers
  # exports only the builders and states).
  return importlib.import_module(f'functional_optim.optimizers._{name}')


adam_module = _optimizer_module('adam')
adagrad_module = _optimizer_module('adagrad')
rprop_module = _optimizer_module('rprop')
sgd_module = _optimizer_module('sgd')


def _adam_case(step, dtype, decoupled=True, maximize=False):
  """AdamW's math (Adam's with decoupled decay) unless ``decoupled=False``: Adam's L2."""
  hp = {'lr': jnp.array(1e-2, dtype), 'betas': (jnp.array(0.9, dtype), jnp.array(0.999, dtype)),
        'eps': jnp.array(1e-8, dtype), 'weight_decay': jnp.array(0.1, dtype)}
  math = functools.partial(adam_module._adam_math, maximize=maximize, amsgrad=True,
                           weight_decay=True, decoupled=decoupled)
  return math, adam_module._adam_scalars(step, hp), ('exp_avg', 'exp_avg_sq', 'max_exp_avg_sq')


def _sgd_case(step, dtype):
  hp = {'lr': jnp.array(0.1, dtype), 'momentum': jnp.array(0.9, dtype),
        'dampening': jnp.array(0.1, dtype), 'weight_decay': jnp.array(0.01, dtype)}
  math = functools.partial(sgd_module._sgd_math, maximize=False, weight_decay=True,
                           momentum=True, nesterov=True)
  return math, sgd_module._sgd_scalars(step, hp), ('momentum_buffer',)


def _adagrad_case(step, dtype):
  hp = {'lr': jnp.array(0.1, dtype), 'lr_decay': jnp.array(0.01, dtype),
        'eps': jnp.array(1e-10, dtype), 'weight_decay': jnp.array(0.1, dtype)}
  math = functools.partial(adagrad_module._adagrad_math, maximize=True, weight_decay=True)
  return math, adagrad_module._adagrad_scalars(step, hp), ('sum',)


def _rprop_case(step, dtype):
  hp = {'lr': jnp.array(0.01, dtype), 'etas': (jnp.array(0.5, dtype), jnp.array(1.2, dtype)),
        'step_sizes': (jnp.array(1e-6, dtype), jnp.array(50.0, dtype))}
  math = functools.partial(rprop_module._rprop_math, maximize=False)
  return math, rprop_module._rprop_scalars(step, hp), ('prev', 'step_size')


def _simple_case(name, math_options, hp, buffer_names, **scalar_state):
  """An optimizer's math and scalars at ``step``, with float hyperparameters ``hp``."""
  module = _optimizer_module(name)

  def case(step, dtype):
    as_array = lambda v: tuple(map(as_array, v)) if isinstance(v, tuple) else jnp.array(v, dtype)
    math = functools.partial(getattr(module, f'_{name}_math'), **math_options)
    state = {k: jnp.full(step.shape, v, jnp.float32) for k, v in scalar_state.items()}
    scalars = getattr(module, f'_{name}_scalars')(step, {k: as_array(v) for k, v in hp.items()},
                                                  **state)
    return math, scalars, buffer_names
  return case


DECAY = dict(maximize=False, weight_decay=True)
# An elementwise algorithm of the registry without a case here fails
# test_equals_run_math_float32.
CASES = PerAlgorithm('test_pallas.py CASES', {
    'adam': functools.partial(_adam_case, decoupled=False, maximize=True),
    'adamw': _adam_case, 'sgd': _sgd_case, 'adagrad': _adagrad_case, 'rprop': _rprop_case,
    # The other elementwise optimizers: the kernel is the same for every math.
    'nadam': _simple_case('nadam', dict(DECAY, decoupled=True),
                          dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3,
                               weight_decay=0.1), ('exp_avg', 'exp_avg_sq'), mu_product=0.9),
    'radam': _simple_case('radam', dict(DECAY, decoupled=False),
                          dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
                          ('exp_avg', 'exp_avg_sq')),
    'rmsprop': _simple_case('rmsprop', dict(DECAY, momentum=True, centered=True),
                            dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1, momentum=0.5),
                            ('square_avg', 'momentum_buffer', 'grad_avg')),
    'adadelta': _simple_case('adadelta', DECAY, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1),
                             ('square_avg', 'acc_delta')),
    'adamax': _simple_case('adamax', DECAY, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                                 weight_decay=0.1), ('exp_avg', 'exp_inf')),
    'asgd': _simple_case('asgd', DECAY, dict(lr=0.01, lambd=1e-4, alpha=0.75, t0=2.0,
                                             weight_decay=0.1), ('ax',), eta=0.01, mu=1.0),
})


def _arrays(rows, grad_dtype, buffer_dtype, buffer_names, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 2 + len(buffer_names))
  grad = jax.random.normal(keys[0], (rows, LANES), grad_dtype)
  param = jax.random.normal(keys[1], (rows, LANES), grad_dtype)
  # Nonnegative: second moments, sums of squares and step sizes are.
  buffers = {k: jnp.abs(jax.random.normal(key, (rows, LANES), buffer_dtype))
             for k, key in zip(buffer_names, keys[2:])}
  return grad, param, buffers


def _reference(math, grad, param, buffers, scalars):
  # Jitted as the kernel is: eager and fused XLA round a few results differently.
  return jax.jit(functools.partial(run_math, math))(grad, param, buffers, scalars)


def _pallas_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'pallas_call':
      yield eqn
    else:  # Inside custom_jvp_call, pjit, ...
      for param in eqn.params.values():
        inner = getattr(param, 'jaxpr', param)
        if hasattr(inner, 'eqns'):
          yield from _pallas_eqns(inner)


def _pallas_eqn(closed_jaxpr):
  [eqn] = _pallas_eqns(closed_jaxpr.jaxpr)
  return eqn


def _assert_same(actual, expected, rtol):
  update, buffers = actual
  expected_update, expected_buffers = expected
  assert update.dtype == expected_update.dtype
  assert set(buffers) == set(expected_buffers)
  for k in expected_buffers:
    assert buffers[k].dtype == expected_buffers[k].dtype, k
  for a, b in [(update, expected_update), *((buffers[k], expected_buffers[k]) for k in buffers)]:
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=rtol, atol=rtol)  # the inputs are of order 1


# ----------------------------------------------------------------------------
# Values: the kernel computes run_math's numbers


# Three leaves of 8 rows at steps 1, 4 and 100: per-row scalars (bias
# corrections), and both sides of SGD's and Rprop's first-step branches.
STEPS = jnp.repeat(jnp.array([1.0, 4.0, 100.0]), 8)[:, None]


@pytest.mark.parametrize('name', CASES.names(ELEMENTWISE))
def test_equals_run_math_float32(name):
  math, scalars, buffer_names = CASES[name](STEPS, jnp.float32)
  # RMSprop's and Adadelta's scalars do not depend on the step: all 0-d.
  per_row = any(jnp.shape(v) == (24, 1) for v in scalars.values())
  assert per_row == (name not in ('rmsprop', 'adadelta'))
  grad, param, buffers = _arrays(24, jnp.float32, jnp.float32, buffer_names)
  with pallas_options(block_rows=8):  # 3 blocks, one per leaf
    actual = fused_update(math, grad, param, buffers, scalars)
  _assert_same(actual, _reference(math, grad, param, buffers, scalars), rtol=1e-6)
  # Each block used its own rows' scalars: the first leaf's, alone, give its values.
  first_leaf = {k: v[:8] if v.ndim else v for k, v in scalars.items()}
  alone = _reference(math, grad[:8], param[:8], {k: v[:8] for k, v in buffers.items()},
                     first_leaf)
  _assert_same(jax.tree.map(lambda x: x[:8], actual), alone, rtol=1e-6)


def test_rprop_first_step_is_a_bool_scalar():
  _, scalars, _ = _rprop_case(STEPS, jnp.float32)
  assert scalars['first_step'].dtype == jnp.bool_


def test_ragged_last_block_and_0d_scalars():
  # 24 rows in blocks of 16: the second block is half outside the buffers.
  math, scalars, buffer_names = _adam_case(jnp.array(4.0), jnp.float32)
  grad, param, buffers = _arrays(24, jnp.float32, jnp.float32, buffer_names, seed=2)
  jaxpr = jax.make_jaxpr(functools.partial(fused_update, math, block_rows=16))(
      grad, param, buffers, scalars)
  assert _pallas_eqn(jaxpr).params['grid_mapping'].grid == (2,)
  actual = fused_update(math, grad, param, buffers, scalars, block_rows=16)
  _assert_same(actual, _reference(math, grad, param, buffers, scalars), rtol=1e-6)


def test_equals_run_math_float64(x64):
  math, scalars, buffer_names = _adam_case(STEPS.astype(jnp.float64), jnp.float64)
  grad, param, buffers = _arrays(24, jnp.float64, jnp.float64, buffer_names)
  actual = fused_update(math, grad, param, buffers, scalars, block_rows=8)
  assert actual[0].dtype == jnp.float64
  _assert_same(actual, _reference(math, grad, param, buffers, scalars), rtol=1e-15)


def test_bfloat16_storage_with_float32_state_in_place():
  math, scalars, buffer_names = _adam_case(STEPS[:16], jnp.float32)
  grad, param, buffers = _arrays(16, jnp.bfloat16, jnp.float32, buffer_names)

  # Inputs: grad 0, param 1, buffers 2-4; outputs: update 0, buffers 1-3.
  jaxpr = jax.make_jaxpr(functools.partial(fused_update, math))(grad, param, buffers, scalars)
  assert dict(_pallas_eqn(jaxpr).params['input_output_aliases']) == {0: 0, 2: 1, 3: 2, 4: 3}

  expected_update, expected_buffers = _reference(math, grad, param, buffers, scalars)
  # Grad and state donated, as an optimizer step donates them.
  step = jax.jit(functools.partial(fused_update, math, block_rows=8), donate_argnums=(0, 2))
  update, new_buffers = step(*jax.tree.map(jnp.copy, (grad, param, buffers)), scalars)
  assert update.dtype == jnp.bfloat16
  assert {k: v.dtype for k, v in new_buffers.items()} == {k: jnp.float32 for k in buffer_names}
  # float32 arithmetic, rounded once: within a bfloat16 ulp (float32 for the state).
  np.testing.assert_allclose(np.asarray(update, np.float32),
                             np.asarray(expected_update, np.float32), rtol=2**-8, atol=2**-16)
  for k in buffer_names:
    np.testing.assert_allclose(new_buffers[k], expected_buffers[k], rtol=1e-6, atol=1e-6)


def test_without_param_and_with_a_missing_buffer():
  # Rprop reads no param; a None buffer (one this leaf does not keep) stays None.
  def math(grad, param, buffers, s):
    assert param is None and buffers['unused'] is None
    return -s['lr'] * jnp.sign(grad), {'total': buffers['total'] + grad, 'unused': None}
  grad = jnp.arange(16 * LANES, dtype=jnp.float32).reshape(16, LANES) - 1000
  buffers = {'total': jnp.ones((16, LANES)), 'unused': None}
  update, new_buffers = fused_update(math, grad, None, buffers, {'lr': 0.5}, block_rows=8)
  # Halves and small integers: exact.
  np.testing.assert_array_equal(update, -0.5 * jnp.sign(grad))
  np.testing.assert_array_equal(new_buffers['total'], grad + 1)
  assert new_buffers['unused'] is None


def _jaxlib_version():
  return tuple(int(x) for x in re.findall(r'\d+', jaxlib.__version__)[:3])


@pytest.mark.skipif(_jaxlib_version() > (0, 10, 2),
                    reason='later jaxlibs compile Triton kernels while lowering: a GPU is needed')
@pytest.mark.parametrize('name', ['adamw', 'rprop'])
def test_lowers_to_triton_for_cuda_without_a_gpu(name):
  # The Triton IR is built on the host: every op of the math has a Triton lowering.
  step = jnp.repeat(jnp.array([1.0, 3.0]), 8)[:, None]
  math, scalars, buffer_names = CASES[name](step, jnp.float32)
  grad, param, buffers = _arrays(16, jnp.bfloat16, jnp.float32, buffer_names)
  with mock.patch.object(pallas, '_backend', lambda: 'gpu'):
    traced = jax.jit(functools.partial(fused_update, math, interpret=False),
                     donate_argnums=(0, 2)).trace(grad, param, buffers, scalars)
  text = traced.lower(lowering_platforms=('cuda',)).as_text()
  assert 'xla.gpu.triton' in text
  assert text.count('stablehlo.output_operand_alias<') == 1 + len(buffer_names)


# ----------------------------------------------------------------------------
# Options and checks


def test_options_nest_and_are_read_when_traced():
  math, scalars, buffer_names = _adagrad_case(jnp.array(2.0), jnp.float32)
  grad, param, buffers = _arrays(24, jnp.float32, jnp.float32, buffer_names)
  trace = lambda: jax.make_jaxpr(functools.partial(fused_update, math))(
      grad, param, buffers, scalars)
  with pallas_options(block_rows=8, interpret=True):
    with pallas_options(block_rows=16):
      assert pallas.current_options().interpret
      assert _pallas_eqn(trace()).params['grid_mapping'].grid == (2,)
    assert _pallas_eqn(trace()).params['grid_mapping'].grid == (3,)
  # The default block is larger than these buffers: clamped to one block.
  assert pallas.current_options() == pallas.PallasOptions()
  assert _pallas_eqn(trace()).params['grid_mapping'].grid == (1,)


def test_compile_and_run_decisions_on_cpu():
  assert not pallas.can_compile(jnp.float32)
  assert not pallas.will_run(jnp.float32)  # XLA's packed run instead of interpreting
  with pallas_options(interpret=True):
    assert pallas.will_run(jnp.float32) and pallas.will_run(jnp.bfloat16)
  with mock.patch.object(pallas, '_backend', lambda: 'gpu'):
    assert [pallas.can_compile(d) for d in (jnp.float32, jnp.bfloat16, jnp.float16,
                                            jnp.float64, jnp.complex64)] == [
        True, True, True, False, False]
    # A jax without Pallas's Triton backend: XLA, unless Mosaic GPU is asked for.
    with mock.patch.object(pallas, '_has_triton', lambda: False):
      assert not pallas.can_compile(jnp.float32)
      with pallas_options(gpu_backend='mosaic_gpu'):
        assert pallas.can_compile(jnp.float32)


def test_block_rows_on_gpu_divide_the_rows():
  assert pallas.block_rows_for(24, 32, ragged_ok=False) == 8
  assert pallas.block_rows_for(96, 64, ragged_ok=False) == 32
  assert pallas.block_rows_for(1024, 48, ragged_ok=False) == 32
  assert pallas.block_rows_for(24, 32, ragged_ok=True) == 24


@pytest.mark.parametrize('bad, message', [
    (dict(grad=jnp.zeros((8, 64))), r'\[rows, 128\]'),
    (dict(grad=jnp.zeros((8, LANES), jnp.complex64)), 'real float'),
    (dict(scalars={'lr': jnp.ones(8)}), "scalar 'lr' has shape"),
    (dict(buffers={'total': jnp.zeros((16, LANES))}), "total has shape"),
])
def test_bad_arguments(bad, message):
  math = lambda g, p, b, s: (-s['lr'] * g, {'total': b['total'] + g})
  arguments = dict(grad=jnp.zeros((8, LANES)), param=None,
                   buffers={'total': jnp.zeros((8, LANES))}, scalars={'lr': 1.0})
  with pytest.raises(ValueError, match=message):
    fused_update(math, **{**arguments, **bad})


def test_bad_options():
  with pytest.raises(ValueError, match='block_rows'):
    with pallas_options(block_rows=0):
      pass
  with pytest.raises(ValueError, match='gpu_backend'):
    with pallas_options(gpu_backend='cuda'):
      pass


def test_differentiable_as_run_math():
  # A Pallas call with aliased buffers has no JVP: the tangents are run_math's.
  math, scalars, buffer_names = _adam_case(STEPS[:8], jnp.float32)
  grad, param, buffers = _arrays(8, jnp.float32, jnp.float32, buffer_names)

  def loss(grad, step):
    update, new_buffers = step(grad, param, buffers, scalars)
    return jnp.sum(update ** 2) + jnp.sum(new_buffers['exp_avg'])
  gradient = jax.jit(jax.grad(loss), static_argnums=1)
  np.testing.assert_allclose(gradient(grad, functools.partial(fused_update, math)),
                             gradient(grad, functools.partial(run_math, math)),
                             rtol=1e-6, atol=1e-9)
