"""mixed_precision: float32 state and master weights for 16-bit params, against torch."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optim as fo
from functional_optim.core.mixed_precision import MixedPrecisionState, mixed_precision
from tests.common import assert_within_ulps

SHAPES = [(), (7,), (3, 4)]
STEPS = 30


def bf16_values(rng, shape, scale=1.0) -> np.ndarray:
  """float32 values that bfloat16 represents exactly, so both libraries see the same numbers."""
  x = np.asarray(rng.normal(size=shape) * scale, np.float32)
  return x.astype(jnp.bfloat16).astype(np.float32)


def problem(seed=0):
  """Initial params and one gradient per step, all bfloat16 values held in float32."""
  rng = np.random.default_rng(seed)
  init = [bf16_values(rng, shape) for shape in SHAPES]
  grads = [[bf16_values(rng, shape) for shape in SHAPES] for _ in range(STEPS)]
  return init, grads


def as_dtype(values, dtype):
  return [jnp.asarray(x, dtype) for x in values]


def jitted_step(tx):
  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state, updates
  return step


def run_torch(torch, name, kwargs, init, grads):
  params = [torch.tensor(x, requires_grad=True) for x in init]
  opt = getattr(torch.optim, name)(params, **kwargs)
  for step_grads in grads:
    for p, g in zip(params, step_grads):
      p.grad = torch.tensor(g)
    opt.step()
  state = [{k: np.asarray(v) for k, v in opt.state[p].items()} for p in params]
  return [p.detach().numpy() for p in params], state


def run_ours(tx, init, grads):
  params = as_dtype(init, jnp.bfloat16)
  state = tx.init(params)
  step = jitted_step(tx)
  for step_grads in grads:
    params, state, _ = step(params, state, as_dtype(step_grads, jnp.bfloat16))
  return params, state


# Our master weights run torch's float32 for-loop math on the same numbers; 30
# steps drift by a few float32 ulps (observed, over 5 seeds: below 1e-6 relative,
# the largest at values near zero, which the atol covers). The parity
# tests take x64 so that hyperparameters are float64, as torch's Python floats
# are: in float32, 1 - β2 = 1 - float32(0.999) is 1.3e-5 off torch's 0.001.
RTOL, ATOL = 1e-6, 1e-7
# Each step both libraries round the same math on float32: our master and torch's
# param agree to a few ulps, not bit for bit. Where torch's param lies within those
# ulps of a bfloat16 rounding tie (the midpoint of two bfloat16 values), the two
# round to neighbouring bfloat16 values. With ~20 values per run and bfloat16's 8
# bits that is rare, but a few are allowed, at most one bfloat16 ulp each.
MAX_TIE_FLIPS = 2

# name: (torch.optim's class, ours, kwargs, state keys)
PARITY = {
    'adam': ('Adam', fo.adam, dict(lr=0.01), ('step', 'exp_avg', 'exp_avg_sq')),
    'adamw': ('AdamW', fo.adamw, dict(lr=0.01, weight_decay=0.1),
              ('step', 'exp_avg', 'exp_avg_sq')),
    'sgd_nesterov': ('SGD', fo.sgd, dict(lr=0.01, momentum=0.9, nesterov=True),
                     ('momentum_buffer',)),
    'adagrad': ('Adagrad', fo.adagrad, dict(lr=0.05), ('step', 'sum')),
}


def check_master_weight_parity(torch, torch_name, ours, kwargs, state_keys, our_kwargs=None):
  init, grads = problem()
  t_params, t_state = run_torch(torch, torch_name, kwargs, init, grads)
  tx = mixed_precision(ours(**kwargs, **(our_kwargs or {})), master_weights=True)
  params, state = run_ours(tx, init, grads)
  assert isinstance(state, MixedPrecisionState)
  flips = 0
  for i, (param, master, theirs) in enumerate(zip(params, state.master, t_params)):
    assert master.dtype == jnp.float32 and param.dtype == jnp.bfloat16
    np.testing.assert_allclose(master, theirs, rtol=RTOL, atol=ATOL, err_msg=f'master {i}')
    # The params are the master weights rounded, exactly on any CPU: the wrapper's
    # landing is exact float32 arithmetic and one correctly rounded conversion
    # (test_params_land_exactly_on_rounded_master).
    np.testing.assert_array_equal(param, master.astype(jnp.bfloat16), err_msg=f'param {i}')
    rounded_theirs = theirs.astype(jnp.bfloat16)
    differs = np.asarray(param) != rounded_theirs
    flips += int(differs.sum())
    # Neighbouring bfloat16 values of one sign have neighbouring bit patterns.
    apart = np.abs(np.asarray(param).view(np.int16).astype(np.int32)
                   - rounded_theirs.view(np.int16).astype(np.int32))
    assert np.all(apart[differs] == 1), f'param {i} is more than one bfloat16 ulp from torch\'s'
  assert flips <= MAX_TIE_FLIPS, f'{flips} params round differently from torch\'s'
  inner_state = fo.kernels.unpack_state(state.inner)  # foreach and fused keep it packed.
  for key in state_keys:
    for i, (buffer, theirs) in enumerate(zip(getattr(inner_state, key), t_state)):
      assert buffer.dtype == jnp.float32, f'{key}[{i}] is {buffer.dtype}'
      np.testing.assert_allclose(buffer, theirs[key], rtol=RTOL, atol=ATOL,
                                 err_msg=f'state {key}[{i}]')


@pytest.mark.parametrize('name', PARITY)
def test_master_weights_follow_torch_float32(name, x64, torch):
  """bfloat16 params with float32 master weights: torch's float32 optimizer, rounded."""
  torch_name, ours, kwargs, state_keys = PARITY[name]
  check_master_weight_parity(torch, torch_name, ours, kwargs, state_keys)


@pytest.mark.parametrize('implementation', fo.kernels.IMPLEMENTATIONS)
def test_master_weights_with_each_implementation(implementation, x64, torch):
  # The fused kernel itself, in interpret mode (on CPU 'fused' otherwise runs XLA).
  with fo.kernels.pallas_options(interpret=True, block_rows=8):
    check_master_weight_parity(torch, 'Adam', fo.adam, dict(lr=0.01, amsgrad=True),
                               ('step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'),
                               dict(implementation=implementation))


# The wrapped step and the reference are two XLA programs: XLA may fuse the same
# float32 math differently in each, and so contract another a·b + c into an FMA
# or sum the global norm in another order. Measured: 0 ulps apart on the Xeon
# these tests were written on, with XLA's AVX-512, AVX2 and SSE4.2 (no FMA) code;
# the bounds leave room for an ulp per step of state, over 3 to 10 steps.
TWO_PROGRAMS = 'the wrapped step and the reference are two XLA programs, fused apart'


def test_without_master_weights_one_rounding_per_step():
  """The inner's float32 update on the cast params, rounded once by apply_updates."""
  init, grads = problem(seed=1)
  inner = fo.adam(lr=0.01)
  tx = mixed_precision(inner)
  params = as_dtype(init, jnp.bfloat16)
  state = tx.init(params)
  assert state.master is None
  reference_state = inner.init(as_dtype(init, jnp.float32))
  step, reference_update = jitted_step(tx), jax.jit(inner.update)
  for step_grads in grads[:10]:
    grads16 = as_dtype(step_grads, jnp.bfloat16)
    expected, reference_state = reference_update(
        [g.astype(jnp.float32) for g in grads16], reference_state,
        [p.astype(jnp.float32) for p in params])
    new_params, state, updates = step(params, state, grads16)
    for param, new, update, want in zip(params, new_params, updates, expected):
      assert update.dtype == jnp.float32 and new.dtype == jnp.bfloat16
      assert_within_ulps(update, want, 4, TWO_PROGRAMS)
      # One float32 addition and one rounding to bfloat16, as numpy makes them:
      # exact on any CPU.
      np.testing.assert_array_equal(new,
                                    (param.astype(jnp.float32) + update).astype(jnp.bfloat16))
    params = new_params
  assert all(b.dtype == jnp.float32 for b in state.inner.exp_avg_sq)


def test_float16_adam_stays_finite(torch):
  """Adam's (1 - β2)·g² and eps = 1e-8 underflow to 0 in float16 (torch then divides by 0)."""
  grad = np.full(4, 1e-4, np.float16)
  torch_param = torch.full((4,), 0.5, dtype=torch.float16, requires_grad=True)
  torch_opt = torch.optim.Adam([torch_param], lr=1e-3, eps=1e-8)
  tx = mixed_precision(fo.adam(lr=1e-3, eps=1e-8))
  params = {'w': jnp.full(4, 0.5, jnp.float16)}
  state = tx.init(params)
  step = jitted_step(tx)
  for _ in range(5):
    torch_param.grad = torch.tensor(grad)
    torch_opt.step()
    params, state, _ = step(params, state, {'w': jnp.asarray(grad)})
  assert not torch.isfinite(torch_param).all()
  assert params['w'].dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(params['w'])))
  assert state.inner.exp_avg_sq['w'].dtype == jnp.float32
  assert bool(jnp.all(state.inner.exp_avg_sq['w'] > 0))


def _given_update():
  """An inner transformation whose update is the ``delta`` passed as an extra argument."""
  def update(updates, state, params=None, *, delta=None, **extra):
    return delta, state
  return fo.GradientTransformationExtraArgs(lambda params: (), update)


# Below these ratios |target| / |param| a float32 sum cannot reach the target
# from the param (the exact difference needs more than 24 bits); found by trying
# every pair of finite 16-bit values. The param then lands within 2**-24·|param|.
NEAR_ZERO_RATIO = {jnp.bfloat16: 2.0 ** -16, jnp.float16: 2.0 ** -13}


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_params_land_exactly_on_rounded_master(dtype):
  """Many random (param, master, update) triples, over magnitudes and step sizes."""
  rng = np.random.default_rng(2)
  n = 1 << 16
  finfo = jnp.finfo(dtype)
  # Normal 16-bit magnitudes, well inside the range (float32 subnormals excluded:
  # XLA's CPU arithmetic flushes them to zero).
  lowest = max(float(finfo.smallest_normal), 2.0 ** -100)
  log_magnitude = rng.uniform(np.log2(lowest) + 4, np.log2(float(finfo.max)) - 8, n)
  param = (np.sign(rng.normal(size=n)) * 2.0 ** log_magnitude).astype(dtype)
  # Masters a little or far off their params, and steps small or large relative to them.
  master = (param.astype(np.float64) * (1 + rng.normal(size=n) * 2.0 ** rng.integers(-20, 1, n)))
  master = master.astype(np.float32)
  delta = (master.astype(np.float64) * rng.normal(size=n) * 2.0 ** rng.integers(-24, 2, n))
  delta = delta.astype(np.float32)

  tx = mixed_precision(_given_update(), master_weights=True)
  params = {'x': jnp.asarray(param)}
  state = tx.init(params)._replace(master={'x': jnp.asarray(master)})

  @jax.jit
  def step(params, state, delta):
    updates, state = tx.update({'x': jnp.zeros_like(params['x'])}, state, params, delta=delta)
    return fo.apply_updates(params, updates), state

  landed, state = step(params, state, {'x': jnp.asarray(delta)})
  new_master = master + delta  # float32, as the wrapper adds: one IEEE addition
  np.testing.assert_array_equal(state.master['x'], new_master)
  target = new_master.astype(dtype).astype(np.float32)
  landed = np.asarray(landed['x']).astype(np.float32)
  param32 = param.astype(np.float32)
  reachable = np.abs(target) >= NEAR_ZERO_RATIO[dtype] * np.abs(param32)
  assert reachable.mean() > 0.99
  np.testing.assert_array_equal(landed[reachable], target[reachable])
  np.testing.assert_array_less(np.abs(landed - target)[~reachable],
                               2.0 ** -24 * np.abs(param32[~reachable]) * (1 + 1e-6))


def test_landing_edge_cases():
  """Overflow, infinite params and near-zero targets, as the docstring describes them."""
  tx = mixed_precision(_given_update(), master_weights=True)

  @jax.jit
  def land(param, master):
    params = {'x': param}
    state = tx.init(params)._replace(master={'x': master})
    updates, _ = tx.update({'x': jnp.zeros_like(param)}, state, params,
                           delta={'x': jnp.zeros_like(master)})
    return fo.apply_updates(params, updates)['x']

  # float16 overflows at 65504: the param becomes inf, as its rounded master, and
  # stays inf while the master is out of range; once the master is back in range
  # no addition can bring an infinite param back (inf + -inf is NaN).
  landed = land(jnp.asarray([6e4, np.inf, np.inf], jnp.float16),
                jnp.asarray([7e4, 7e4, 100.0], jnp.float32))
  np.testing.assert_array_equal(landed, np.asarray([np.inf, np.inf, np.nan], np.float16))
  # A step that takes a param of 1.0 to 2**-30 lands it on 0, off by 2**-30; a
  # param already at its target is kept bit for bit, the sign of a zero included.
  landed = land(jnp.asarray([1.0, -0.0, 3.0], jnp.bfloat16),
                jnp.asarray([2.0 ** -30, -0.0, 3.0], jnp.float32))
  np.testing.assert_array_equal(np.asarray(landed).view(np.uint16),
                                np.asarray([0.0, -0.0, 3.0], jnp.bfloat16).view(np.uint16))


def test_jitted_step_compiles_once_while_lr_changes():
  tx = mixed_precision(fo.adam(lr=0.01), master_weights=True)
  params = {'w': jnp.ones(4, jnp.bfloat16)}
  state = tx.init(params)

  def train_step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  jitted = jax.jit(train_step, donate_argnums=(0, 1))
  grads = {'w': jnp.ones(4, jnp.bfloat16)}
  master = np.ones(4, np.float32)
  for lr in [0.01, 0.02, 0.005, 0.03, 0.001]:
    state = fo.set_hyperparams(state, lr=lr)
    params, state = jitted(params, state, grads)
    # A constant gradient makes each Adam step exactly lr long (up to eps).
    np.testing.assert_allclose(master - np.asarray(state.master['w']), lr, rtol=1e-4)
    master = np.asarray(state.master['w'])
    assert float(fo.get_hyperparams(state)['lr']) == np.float32(lr)
  np.testing.assert_array_equal(params['w'], state.master['w'].astype(jnp.bfloat16))
  assert jitted._cache_size() == 1


def test_chain_partition_float32_leaves_and_hyperparams():
  """Any inner transformation; float32 leaves and None gradients pass through untouched."""
  params = {'w': jnp.asarray(np.linspace(-1, 1, 12).reshape(3, 4), jnp.bfloat16),
            'b': jnp.asarray([0.5, -0.25, 1.0, 2.0], jnp.bfloat16),
            'norm': jnp.asarray([1.0, 0.9, 1.1, 1.2], jnp.float32)}
  inner = fo.partition(
      {'adamw': fo.chain(optax.clip_by_global_norm(1.0), fo.adamw(lr=0.01, weight_decay=0.1)),
       'sgd': fo.sgd(lr=0.05, momentum=0.9)},
      {'w': 'adamw', 'b': 'sgd', 'norm': 'adamw'})
  tx = mixed_precision(inner, master_weights=True)
  state = tx.init(params)
  assert state.master['norm'] is None and state.master['w'].dtype == jnp.float32
  as_float32 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)
  reference_params = as_float32(params)
  reference_state = inner.init(reference_params)

  step = jitted_step(tx)

  @jax.jit
  def reference_step(params, state, grads):
    updates, state = inner.update(grads, state, params)
    return fo.apply_updates(params, updates), state, updates

  rng = np.random.default_rng(3)
  for k in range(3):
    grads = {name: jnp.asarray(rng.normal(size=p.shape), p.dtype) for name, p in params.items()}
    if k == 1:
      grads['b'] = None  # No gradient: the param, its master and its state stay.
    old_b = params['b']
    params, state, updates = step(params, state, grads)
    reference_params, reference_state, expected = reference_step(
        reference_params, reference_state,
        {name: None if g is None else g.astype(jnp.float32) for name, g in grads.items()})
    for name in ('w', 'b'):
      assert_within_ulps(state.master[name], reference_params[name], 8, TWO_PROGRAMS)
      np.testing.assert_array_equal(params[name], state.master[name].astype(jnp.bfloat16))
    assert_within_ulps(updates['norm'], expected['norm'], 8, TWO_PROGRAMS)
    assert_within_ulps(params['norm'], reference_params['norm'], 8, TWO_PROGRAMS)
    if k == 1:
      assert updates['b'] is None
      np.testing.assert_array_equal(params['b'], old_b)  # untouched

  assert fo.get_hyperparams(state.inner.inner_states['adamw'])['weight_decay'] == np.float32(0.1)
  changed = fo.set_hyperparams(state, momentum=0.5)  # Only SGD has a momentum.
  assert isinstance(changed, MixedPrecisionState)
  jax.tree.map(np.testing.assert_array_equal, changed.master, state.master)
  assert float(fo.get_hyperparams(changed.inner.inner_states['sgd'])['momentum']) == 0.5


def test_errors():
  params = {'w': jnp.ones(2, jnp.bfloat16)}
  grads = {'w': jnp.ones(2, jnp.bfloat16)}
  tx = mixed_precision(fo.adam(lr=0.1), master_weights=True)
  state = tx.init(params)
  with pytest.raises(TypeError, match='MixedPrecisionState'):
    tx.update(grads, fo.adam(lr=0.1).init(params), params)
  with pytest.raises(ValueError, match='master weights need params'):
    tx.update(grads, state)
  with pytest.raises(ValueError, match=r'master_weights=False\) got a state with master'):
    mixed_precision(fo.adam(lr=0.1)).update(grads, state, params)
  with pytest.raises(ValueError, match='another structure'):
    tx.update({'v': grads['w']}, state, {'v': params['w'], 'u': params['w']})
  for not_floating in (jnp.int32, jnp.complex64, 'not a dtype'):
    with pytest.raises(TypeError, match='state_dtype must be a floating dtype'):
      mixed_precision(fo.adam(), state_dtype=not_floating)
  # The failed calls changed nothing: the state steps as a fresh one does (one
  # program on equal inputs, so bit for bit).
  update = jax.jit(tx.update)
  updates, after = update(grads, state, params)
  fresh_updates, fresh_after = update(grads, tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, (updates, after), (fresh_updates, fresh_after))
