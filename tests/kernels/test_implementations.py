"""The three implementations (loop, foreach, fused) against torch and each other.

The parity harness's problem runs through torch and through the fused Pallas
kernel (interpret mode on CPU) or the packed foreach path, with some params
going without a gradient on some steps. Then a tree that mixes dtypes, complex,
empty, scalar and odd-sized leaves (sizes that fill no whole row or block) runs
through the implementations, which must agree to the parity tolerances: it is
the same math on the same numbers, contracted a little differently.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from tests.algorithms import ELEMENTWISE
from tests.common import precision


def _some_without_gradient(step, i):
  return (step + i) % 4 != 0


@pytest.fixture
def pallas_interpreted():
  """The fused implementation's Pallas kernel, in interpret mode on CPU."""
  with fo.kernels.pallas_options(interpret=True, block_rows=8):
    yield
  jax.clear_caches()


# The registry's configurations (the richest option set of each algorithm). The
# fused kernel (interpret mode) against torch, on the four algorithms torch fuses,
# float32 as well for Adam; the packed foreach path with params going without a
# gradient, on the algorithms with 0-d state (NAdam, ASGD). Elsewhere: every
# algorithm's foreach and fused flags against torch's in tests/algorithms_vs_torch
# (both precisions), and the kernel against run_math for every algorithm's math in
# test_pallas.py.
PARITY_RUNS = ([(name, 'fused', np.float64) for name in ('adam', 'adamw', 'sgd', 'adagrad')]
               + [('adam', 'fused', np.float32)]
               + [(name, 'foreach', np.float64) for name in ('nadam', 'asgd')])


@pytest.mark.parametrize('name,implementation,dtype', PARITY_RUNS,
                         ids=[f'{n}-{i}-{np.dtype(d)}' for n, i, d in PARITY_RUNS])
def test_parity_with_torch(name, implementation, dtype, pallas_interpreted, torch):
  from tests.algorithms_vs_torch.harness import Case, check_parity  # here: it needs torch
  algorithm = ELEMENTWISE[name]
  case = Case(getattr(torch.optim, algorithm.torch_name), algorithm.builder,
              dict(algorithm.kwargs), steps=20, has_grad=_some_without_gradient,
              our_kwargs=dict(implementation=implementation))
  with precision(dtype):
    check_parity(case, dtype, algorithm.state_keys)


def _mixed_tree(rng):
  def normal(shape, dtype):
    x = rng.normal(size=shape)
    if np.issubdtype(dtype, np.complexfloating):
      x = x + 1j * rng.normal(size=shape)
    return jnp.asarray(x, dtype)
  return {
      'scalar': normal((), np.float32),
      'empty': normal((0, 3), np.float32),
      'odd': normal((3, 43), np.float32),     # 129 elements: a row and one more
      'rows': normal((9, 128), np.float32),   # more rows than one 8-row block
      'half': normal((5, 7), jnp.bfloat16),
      'complex': normal((11,), np.complex64),
      'double': normal((2, 65), np.float64),
  }


# The layout does not depend on the algorithm: one of each kind (moments and a
# max, momentum seeded at the first step, a bool first-step scalar, 0-d state),
# the fused kernel on three of them.
MIXED_TREE_RUNS = [(name, ('loop', 'foreach', 'fused') if name in ('adam', 'rprop', 'asgd')
                    else ('loop', 'foreach')) for name in ('adam', 'sgd', 'rprop', 'asgd')]


@pytest.mark.parametrize('name,implementations', MIXED_TREE_RUNS,
                         ids=[name for name, _ in MIXED_TREE_RUNS])
def test_implementations_agree_on_a_mixed_tree(name, implementations, pallas_interpreted):
  """Mixed dtypes, complex, empty, scalar and odd-sized leaves; the same numbers."""
  algorithm = ELEMENTWISE[name]
  with jax.enable_x64(True):
    params = _mixed_tree(np.random.default_rng(1))
    results = {}
    for implementation in implementations:
      tx = algorithm.build(implementation=implementation)

      @jax.jit
      def step(p, s, grads, tx=tx):
        updates, s = tx.update(grads, s, p)
        return fo.apply_updates(p, updates), s

      p, s = params, jax.jit(tx.init)(params)
      for t in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x * (t + 1)).astype(x.dtype), p)
        grads['scalar'] = None  # the same every step: one compilation per implementation
        p, s = step(p, s, grads)
      results[implementation] = (p, fo.kernels.unpack_state(s))
    loop_params, loop_state = results['loop']
    for implementation in implementations[1:]:
      params_i, state_i = results[implementation]
      for (path, a), b in zip(jax.tree_util.tree_flatten_with_path((loop_params, loop_state))[0],
                              jax.tree.leaves((params_i, state_i))):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        # The parity tolerances: the same operations, contracted and fused a little
        # differently per leaf, packed and in Pallas, differ by an ulp here and
        # there, which cancellation in the momenta magnifies over the steps.
        rtol, atol = {np.dtype(np.float64): (1e-12, 1e-14),
                      np.dtype(jnp.bfloat16): (1e-2, 1e-3)}.get(np.dtype(a.dtype), (1e-5, 1e-5))
        np.testing.assert_allclose(np.asarray(a, np.complex128), np.asarray(b, np.complex128),
                                   rtol=rtol, atol=atol,
                                   err_msg=f'{implementation} {jax.tree_util.keystr(path)}')
