"""Muon against torch.optim.Muon: the Newton–Schulz iteration, every option, errors.

Muon takes 2-D params only, so these tests use their own matrices: a wide one, a
tall one (transposed inside the iteration) and a square one.

How close is close. Muon's update is a bfloat16 matrix: one bfloat16 rounding
that goes the other way moves an element of the param by ``lr'·2⁻⁸·|O|``, some
10⁴ float32 ulps. Two things make roundings go the other way:

* torch's bfloat16 matmuls and XLA's sum their float32 products in different
  orders (torch: AMX tiles on this CPU, another kernel elsewhere; XLA may fuse
  ``b·A + c·A²`` into an FMA), and a sum next to a bfloat16 rounding boundary
  then rounds differently: a few Newton–Schulz calls in a thousand for 4×4
  random matrices, more for larger ones.
  :func:`test_newton_schulz_matches_torch` compares the iteration alone.
* torch's autograd and ``jax.grad`` round the same gradient differently (an
  ulp), which in float32 crosses a bfloat16 boundary about once in 10⁵ elements.

After such a flip two free-running trajectories separate by ``lr'·2⁻⁸`` and
then drift apart: the loss is not contractive, and the next roundings no longer
see the same inputs. So the optimizer is compared step by step: every step
starts ours from torch's params, gradient and momentum buffer, and must land
where torch lands, at the harness's tolerances (observed worst error, relative
to ``|θ| + atol``: 2e-14 in float64, 6e-6 in float32). A step that a flipped
rounding moved instead must stay within two bfloat16 ulps of the update, and
such steps must be rare (observed: 2 of the 1500 here, one Newton–Schulz call
seen in both dtypes). ``tests/test_partition.py`` runs Muon and AdamW free
for 30 steps in float64.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim.optimizers._muon import adjusted_lr_ratio, muon, newton_schulz
from tests.common import precision
from tests.algorithms_vs_torch.problem import assert_close, loss


pytestmark = pytest.mark.usefixtures('one_torch_thread')


SHAPES = [(3, 4), (5, 2), (4, 4)]

# Every option, in few programs (each case compiles one).
CASES = {
    'default': dict(lr=0.02),
    'plain_no_decay_rms': dict(lr=0.02, nesterov=False, weight_decay=0.0,
                               adjust_lr_fn='match_rms_adamw'),
    # eps = 5 floors the norm of these gradients, so it changes the update.
    'original_ns_options': dict(lr=0.05, adjust_lr_fn='original', momentum=0.8,
                                weight_decay=0.3, ns_steps=3,
                                ns_coefficients=(2.0, -1.5, 0.5), eps=5.0),
    'no_momentum_rms': dict(lr=0.02, momentum=0.0, weight_decay=0.05,
                            adjust_lr_fn='match_rms_adamw'),
}


def initial_matrices(dtype, seed: int = 1) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


def _numpy(t) -> np.ndarray:
  # A copy of a torch tensor: torch updates its tensors in place, and JAX may alias numpy memory.
  return t.detach().numpy().copy()


# ----------------------------------------------------------------------------
# The Newton–Schulz iteration alone


def test_newton_schulz_matches_torch(torch):
  """Bit for bit with torch's ``_zeropower_via_newtonschulz``, up to its sums' order.

  Inputs of float32 and float64, wide, tall and square, of scales from 1e-3 to
  1e3, with torch's coefficients and others, 0 to 5 iterations, and a zero
  matrix (the eps floor). At least 95% must be bitwise equal (observed: all
  120) and the rest within 2 bfloat16 ulps of 1.
  """
  zeropower_via_newtonschulz = importlib.import_module(
      'torch.optim._muon')._zeropower_via_newtonschulz
  rng = np.random.default_rng(0)
  shapes = SHAPES + [(8, 8), (1, 5)]
  settings = [((3.4445, -4.775, 2.0315), 5), ((2.0, -1.5, 0.5), 3),
              ((3.4445, -4.775, 2.0315), 1), ((3.4445, -4.775, 2.0315), 0)]
  equal = total = 0
  with jax.enable_x64(True):
    for i in range(120):
      shape = shapes[i % len(shapes)]
      coefficients, steps = settings[i % len(settings)]
      x = np.zeros(shape) if i == 0 else rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3)
      x = x.astype((np.float32, np.float64)[i % 2])
      theirs = zeropower_via_newtonschulz(torch.tensor(x), coefficients, steps, 1e-7)
      ours = newton_schulz(jnp.asarray(x), coefficients, steps, 1e-7)
      assert ours.dtype == jnp.bfloat16 and ours.shape == shape
      ours, theirs = np.asarray(ours, np.float32), theirs.float().numpy()
      equal += np.array_equal(ours, theirs)
      total += 1
      np.testing.assert_allclose(ours, theirs, rtol=0, atol=2 * 2.0 ** -7)
  assert equal >= 0.95 * total, f'only {equal} of {total} bitwise equal'


def test_newton_schulz_rejects_non_matrices():
  with pytest.raises(ValueError, match='Input tensor gradient must be a 2D matrix'):
    newton_schulz(jnp.ones(3), (3.4445, -4.775, 2.0315), 5, 1e-7)


# ----------------------------------------------------------------------------
# The optimizer, step by step from torch's state


def check_step_by_step(torch, kwargs, dtype, *, steps: int = 50, hyperparams_at=None,
                       has_grad=None, our_kwargs=None):
  """Runs torch.optim.Muon and checks each of its steps against ours from the same state.

  ``hyperparams_at(step)`` gives edits made in both before a step;
  ``has_grad(step, i)`` says whether matrix ``i`` gets a gradient at that step;
  ``our_kwargs`` replace some of ``kwargs`` for our builder (an array for a tensor).
  Returns our last state.
  """
  init = initial_matrices(dtype)
  params = [torch.tensor(x, requires_grad=True) for x in init]
  opt = torch.optim.Muon(params, **kwargs)
  tx = muon(**{**kwargs, **(our_kwargs or {})})
  state = tx.init([jnp.asarray(x) for x in init])

  @jax.jit
  def step_fn(grads, state, params):
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  flipped = 0
  for step in range(steps):
    if hyperparams_at:
      opt.param_groups[0].update(hyperparams_at(step))
      state = fo.set_hyperparams(state, **hyperparams_at(step))
    opt.zero_grad()
    loss(params, torch).backward()
    for i, p in enumerate(params):
      if has_grad and not has_grad(step, i):
        p.grad = None
    before = [jnp.asarray(_numpy(p)) for p in params]
    grads = [None if p.grad is None else jnp.asarray(_numpy(p.grad)) for p in params]
    state = state._replace(momentum_buffer=[
        jnp.asarray(_numpy(opt.state[p]['momentum_buffer'])) if opt.state[p] else buf
        for p, buf in zip(params, state.momentum_buffer)])
    opt.step()
    after, state = step_fn(grads, state, before)
    for i, p in enumerate(params):
      if opt.state[p]:
        assert_close(state.momentum_buffer[i], _numpy(opt.state[p]['momentum_buffer']),
                     f'step {step}: momentum_buffer[{i}]')
      try:
        assert_close(after[i], _numpy(p), f'step {step}: param {i}')
      except AssertionError:
        flipped += 1
        group = opt.param_groups[0]
        two_ulps = 2 * 2.0 ** -7 * float(group['lr']) * adjusted_lr_ratio(
            group['adjust_lr_fn'], p.shape)
        np.testing.assert_allclose(after[i], _numpy(p), rtol=0, atol=two_ulps,
                                   err_msg=f'step {step}: param {i}')
  assert flipped <= 0.02 * steps * len(params), f'{flipped} steps flipped a rounding'
  return state


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CASES)
def test_parity(name, dtype, torch):
  with precision(dtype):
    check_step_by_step(torch, CASES[name], dtype)


def test_hyperparams_changed_between_steps(x64, torch):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.03 * 0.97 ** step, momentum=0.9 + 0.005 * (step % 10),
                weight_decay=0.05 * (1 + step % 3), eps=1e-7 * (1 + step),
                ns_coefficients=(3.4445 - 0.01 * (step % 4), -4.775, 2.0315))
  check_step_by_step(torch, dict(lr=0.03), np.float64, hyperparams_at=edit)


def test_missing_gradients(x64, torch):
  """Matrices without a gradient keep their value, buffer and step count.

  Matrices 0 and 2 get none in the first 5 steps (torch has no state for them
  yet) and every third step after.
  """
  state = check_step_by_step(
      torch, dict(lr=0.02, adjust_lr_fn='match_rms_adamw'), np.float64,
      has_grad=lambda step, i: i == 1 or not (step < 5 or step % 3 == 1))
  assert [int(s) for s in state.step] == [30, 50, 30]


def test_state_and_hyperparams():
  tx = muon(lr=0.02, ns_coefficients=[3.0, -3.0, 1.0])
  state = tx.init({'w': jnp.zeros((2, 3))})
  assert state._fields == ('count', 'hyperparams', 'step', 'momentum_buffer')
  np.testing.assert_array_equal(state.momentum_buffer['w'], np.zeros((2, 3)))
  hp = fo.get_hyperparams(state)
  assert sorted(hp) == ['eps', 'lr', 'momentum', 'ns_coefficients', 'weight_decay']
  assert [float(c) for c in hp['ns_coefficients']] == [3.0, -3.0, 1.0]
  assert 'weight_decay' not in fo.get_hyperparams(muon(weight_decay=0).init({}))


def test_bfloat16_params_keep_their_dtype():
  params = {'w': jnp.ones((3, 2), jnp.bfloat16)}
  tx = muon(lr=0.1)
  updates, state = jax.jit(tx.update)({'w': jnp.full((3, 2), 0.5, jnp.bfloat16)},
                                      tx.init(params), params)
  assert updates['w'].dtype == state.momentum_buffer['w'].dtype == jnp.bfloat16


# ----------------------------------------------------------------------------
# Errors

CONSTRUCTOR_ERRORS = [
    dict(lr=-0.1),
    dict(momentum=-0.5),
    dict(weight_decay=-1e-4),
    dict(adjust_lr_fn='unknown'),
    dict(lr=-1.0, momentum=-1.0, weight_decay=-1.0, adjust_lr_fn='unknown'),  # order
    dict(momentum=-1.0, adjust_lr_fn='unknown', ns_steps=100),
]
# torch notices these in its first step; we refuse them at construction.
STEP_ERRORS = [
    dict(ns_steps=100),
    dict(ns_coefficients=(3.4445, -4.775)),
    dict(ns_coefficients=(1.0, 2.0, 3.0, 4.0)),
    dict(ns_steps=100, ns_coefficients=(1.0,)),
]


def _torch_error(torch, kwargs, param=None) -> Exception:
  """What torch raises at construction or in its first step."""
  param = torch.ones(2, 2, requires_grad=True) if param is None else param
  with pytest.raises(Exception) as theirs:
    opt = torch.optim.Muon([param], **kwargs)
    param.grad = torch.ones_like(param)
    opt.step()
  return theirs.value


@pytest.mark.parametrize('kwargs', CONSTRUCTOR_ERRORS + STEP_ERRORS, ids=repr)
def test_same_error_as_torch(kwargs, torch):
  theirs = _torch_error(torch, kwargs)
  with pytest.raises(type(theirs)) as ours:
    muon(**kwargs)
  assert str(ours.value) == str(theirs)


def test_array_hyperparameters_are_checked_like_numbers():
  with pytest.raises(ValueError, match='Learning rate should be >= 0 but is: -0.5'):
    muon(lr=jnp.asarray(-0.5))
  muon(lr=lambda count: 0.02, momentum=jnp.asarray(0.9))


@pytest.mark.parametrize('shape', [(3,), (2, 3, 4), ()])
def test_only_matrices(shape, torch):
  theirs = _torch_error(torch, {}, torch.ones(shape, requires_grad=True))
  params = {'layer': {'kernel': jnp.ones((3, 4)), 'other': jnp.ones(shape)}}
  with pytest.raises(type(theirs)) as ours:
    muon().init(params)
  message = str(ours.value)
  assert message.startswith(str(theirs).split(': torch.Size')[0])
  assert f'size: {shape}' in message and "['layer']['other']" in message


def test_no_complex_params(torch):
  theirs = _torch_error(torch, {}, torch.ones(2, 2, dtype=torch.complex64, requires_grad=True))
  with pytest.raises(type(theirs), match=str(theirs)):
    muon().init({'w': jnp.ones((2, 2), jnp.complex64)})
