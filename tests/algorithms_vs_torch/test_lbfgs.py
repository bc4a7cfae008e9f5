"""LBFGS against torch.optim.LBFGS: iterates, state, evaluation counts, stopping.

Each problem runs three ``step`` calls in both libraries (state carried over) and
after every step compares the params, every state entry torch keeps (``d``,
``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``,
``prev_loss``), the loss torch's ``step`` returns, and, exactly, ``func_evals``
and ``n_iter``: the same evaluations and the same stopping iteration (or those of
torch's own run from a start one rounding away, where that run's differ: then a
comparison at the rounding level decided torch's run, and another CPU may decide
it the other way).

Tolerances. The libraries sum in different orders (torch's cascade sum and BLAS
``dot`` against XLA's reductions) and XLA fuses ``a*b + c`` into FMAs, so
``‖g‖₁``, ``gᵀd``, ``yᵀs`` differ in the last bit from the first iteration on.
LBFGS feeds each such rounding into the next direction, and on a problem as
curved as Rosenbrock's valley the difference grows by orders of magnitude over
tens of iterations. torch does the same to itself: moved by one rounding error,
its own starting point gives iterates as far from its first run as ours are.
So every quantity, measured relative to the largest magnitude it takes in
torch's run, must be within ``max(floor, 10 × noise)``, where ``noise`` is how far
torch's run moves when its starting point moves by one rounding error (every
coordinate up, every one down, and alternately up and down, both ways: four
runs), and ``floor`` is 1e-11 in float64 (1e-5 in float32). Well-conditioned
cases therefore stay near 1e-12 and the chaotic ones are held to torch's own
spread; each case records the worst relative errors it reached (``-rP`` prints
them, ``--junitxml`` keeps them as properties).

The line search alone is held to more: run op by op (``jax.disable_jit``, so
that XLA cannot fuse), it reproduces torch's ``_strong_wolfe`` bit for bit, once
torch's square roots are IEEE's (torch's CPU sqrt is MKL's, within an ulp).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim.optimizers._line_search import cubic_interpolate, strong_wolfe
from functional_optim.optimizers import lbfgs
from tests.common import assert_within_ulps, precision

# ----------------------------------------------------------------------------
# Problems, each written once over a namespace xp (torch or jax.numpy).


def _rosenbrock(p, data, xp):
  x = p['x']
  return xp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def _logistic(p, data, xp):
  X, y = data
  z = X @ p['w'] + p['b']
  # softplus(z) - y z, stable for both signs; (z + |z|) / 2 is max(z, 0).
  nll = xp.log1p(xp.exp(-xp.abs(z))) + (z + xp.abs(z)) / 2 - y * z
  return xp.mean(nll) + 5e-3 * xp.sum(p['w'] ** 2)


def _mlp(p, data, xp):
  X, y = data
  h = xp.tanh(X @ p['w1'] + p['b1'])
  out = h @ p['w2'] + p['b2']
  return xp.mean((out[:, 0] - y) ** 2)


def _data(kind: str):
  rng = np.random.default_rng(0)
  X = rng.normal(size=(100, 5))
  if kind == 'logistic':
    logits = X @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + 0.3
    y = (rng.uniform(size=100) < 1 / (1 + np.exp(-logits))).astype(np.float64)
  else:
    y = np.sin(X @ np.array([0.8, -0.5, 0.3, 0.2, -0.7]))
  return X, y


def _init(kind: str) -> dict[str, np.ndarray]:
  if kind == 'rosenbrock2':
    return {'x': np.array([-1.5, 2.0])}
  if kind == 'rosenbrock10':
    return {'x': np.array([-1.2, 1.0] * 5)}
  if kind == 'logistic':
    return {'b': np.array(0.0), 'w': np.zeros(5)}
  rng = np.random.default_rng(1)
  return {'b1': np.zeros(8), 'b2': np.zeros(1), 'w1': rng.normal(size=(5, 8)) * 0.5,
          'w2': rng.normal(size=(8, 1)) * 0.5}


PROBLEMS = {'rosenbrock2': _rosenbrock, 'rosenbrock10': _rosenbrock,
            'logistic': _logistic, 'mlp': _mlp}


HYPERPARAMS = ('lr', 'tolerance_grad', 'tolerance_change')
DEFAULTS = {'lr': 1.0, 'tolerance_grad': 1e-7, 'tolerance_change': 1e-9}
STATE_KEYS = ('d', 't', 'old_dirs', 'old_stps', 'ro', 'H_diag', 'prev_flat_grad',
              'prev_loss')


@dataclasses.dataclass
class Run:
  params: list[np.ndarray] = dataclasses.field(default_factory=list)  # flat, per step
  losses: list[float] = dataclasses.field(default_factory=list)       # step's return
  state: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _flat(params: dict) -> np.ndarray:
  return np.concatenate([np.ravel(params[k]) for k in sorted(params)])


def _torch_state(s) -> dict[str, Any]:
  out = {k: s[k] for k in ('func_evals', 'n_iter')}
  out.update({k: s[k].numpy().copy() for k in ('d', 'prev_flat_grad')})
  out.update({k: float(s[k]) for k in ('t', 'H_diag', 'prev_loss')})
  n = out['d'].size
  for k in ('old_dirs', 'old_stps'):
    out[k] = np.array([v.numpy() for v in s[k]]).reshape(len(s[k]), n)
  out['ro'] = np.array([float(v) for v in s['ro']])
  return out


def _hyperparams_at(kwargs, lrs, step):
  hp = {k: kwargs.get(k, DEFAULTS[k]) for k in HYPERPARAMS}
  if lrs is not None:
    hp['lr'] = lrs[step]
  return hp


def run_torch(torch, kind, kwargs, dtype, steps, lrs=None, init=None) -> Run:
  loss_fn = PROBLEMS[kind]
  init = _init(kind) if init is None else init
  names = sorted(init)  # jax's order for a dict
  params = [torch.tensor(init[k].astype(dtype), requires_grad=True) for k in names]
  data = tuple(torch.tensor(a.astype(dtype)) for a in _data(kind))
  opt = torch.optim.LBFGS(params, **kwargs)

  def closure():
    opt.zero_grad()
    loss = loss_fn(dict(zip(names, params)), data, torch)
    loss.backward()
    return loss

  run = Run()
  for i in range(steps):
    opt.param_groups[0]['lr'] = _hyperparams_at(kwargs, lrs, i)['lr']
    run.losses.append(opt.step(closure).item())
    run.params.append(_flat({k: p.detach().numpy() for k, p in zip(names, params)}))
    run.state.append(_torch_state(opt.state[params[0]]))
  return run


TRACES: dict[Any, int] = {}


@functools.lru_cache(maxsize=None)
def _step_fn(kind, structure, dtype):
  """One jitted LBFGS step per problem and structural options; the numeric
  hyperparameters come in through the state, so other values reuse it."""
  tx = lbfgs(**dict(structure))
  data = tuple(jnp.asarray(a.astype(dtype)) for a in _data(kind))
  value_fn = lambda p: PROBLEMS[kind](p, data, jnp)
  key = (kind, structure, dtype)

  @jax.jit
  def step(params, state):
    TRACES[key] = TRACES.get(key, 0) + 1
    loss, grads = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grads, state, params, value_fn=value_fn, value=loss)
    return fo.apply_updates(params, updates), state

  return tx, step


def _structure(kwargs):
  return tuple(sorted((k, v) for k, v in kwargs.items() if k not in HYPERPARAMS))


def run_ours(kind, kwargs, dtype, steps, lrs=None) -> Run:
  tx, step = _step_fn(kind, _structure(kwargs), np.dtype(dtype))
  params = {k: jnp.asarray(v.astype(dtype)) for k, v in _init(kind).items()}
  state = tx.init(params)
  run = Run()
  for i in range(steps):
    state = fo.set_hyperparams(state, **_hyperparams_at(kwargs, lrs, i))
    params, state = step(params, state)
    run.losses.append(float(state.loss))
    run.params.append(_flat(params))
    old_dirs, old_stps, ro = state.history()
    run.state.append(dict(
        func_evals=int(state.func_evals), n_iter=int(state.n_iter),
        old_dirs=np.asarray(old_dirs), old_stps=np.asarray(old_stps), ro=np.asarray(ro),
        **{k: np.asarray(getattr(state, k)) for k in ('d', 'prev_flat_grad', 't',
                                                       'H_diag', 'prev_loss')}))
  return run


def _quantities(run: Run, i: int) -> dict[str, np.ndarray]:
  return {'params': run.params[i], 'loss': np.asarray(run.losses[i]),
          **{k: run.state[i][k] for k in STATE_KEYS}}


def _scales(run: Run) -> dict[str, float]:
  """The largest magnitude each quantity reaches over the run."""
  scales = {}
  for i in range(len(run.params)):
    for k, v in _quantities(run, i).items():
      scales[k] = max(scales.get(k, 0.0), float(np.max(np.abs(v), initial=0.0)))
  return scales


def _errors(ours: Run, theirs: Run, i: int, scales) -> dict[str, float]:
  out = {}
  for k, t in _quantities(theirs, i).items():
    o = _quantities(ours, i)[k]
    assert np.shape(o) == np.shape(t), f'{k} after step {i + 1}: {np.shape(o)} != {np.shape(t)}'
    err = float(np.max(np.abs(np.asarray(o, np.float64) - t), initial=0.0))
    out[k] = err / scales[k] if scales[k] > 0 else err
  return out


def _perturbed_init(kind, sign, dtype, alternate=False):
  """The start moved by one rounding error: every coordinate ``sign`` ways, or with
  ``alternate`` every other one the other way.

  Both kinds: two runs alone estimate torch's own spread poorly. With MKL's AVX2
  code (MKL_ENABLE_INSTRUCTIONS=AVX2), the two uniform nudges of
  logistic-wolfe-lr30 move t after step 1 by 2.4e-13 and 2.6e-13 relative, an
  alternating one by 1.3e-11, which is how far ours is (1.2e-11 with AVX-512,
  1.3e-11 with AVX2).
  """
  eps = float(np.finfo(dtype).eps)
  out = {}
  for k, v in _init(kind).items():
    signs = np.full(np.shape(v), float(sign))
    if alternate:
      signs.flat[1::2] *= -1
    out[k] = (v + signs * eps * np.maximum(np.abs(v), 1.0)).astype(dtype)
  return out


def check(torch, kind, kwargs, dtype=np.float64, steps=3, lrs=None, floor=None):
  """Runs both, compares after every step; returns the worst relative errors
  ``(of the params, of any quantity)``.

  Counts (``n_iter``, ``func_evals``) must be torch's, or those of one of torch's
  own runs from a start nudged by one rounding error (:func:`_perturbed_init`,
  four ways): where those
  differ from torch's, a comparison at the rounding level decided torch's run
  (never, for these cases on the Xeon they were written on, also with MKL's and
  XLA's AVX2 code paths), another CPU may decide it the other way, and the
  comparison stops there, as the runs may part. Every other quantity, taken
  relative to the largest magnitude it reaches in torch's run, must be within
  ``max(floor, 10 · noise)``, where ``noise`` is how far those nudged runs move.
  """
  dtype = np.dtype(dtype)
  floor = floor if floor is not None else (1e-11 if dtype == np.float64 else 1e-5)
  with precision(dtype):
    theirs = run_torch(torch, kind, kwargs, dtype, steps, lrs)
    nudged = [run_torch(torch, kind, kwargs, dtype, steps, lrs,
                        _perturbed_init(kind, s, dtype, alternate))
              for s in (1, -1) for alternate in (False, True)]
    ours = run_ours(kind, kwargs, dtype, steps, lrs)
  scales = _scales(theirs)
  worst, worst_params = 0.0, 0.0
  for i in range(steps):
    where = f'after step {i + 1}'
    o, t = ours.state[i], theirs.state[i]
    counts = lambda s: (s['n_iter'], s['func_evals'])
    allowed = {counts(t)} | {counts(n.state[i]) for n in nudged}
    assert counts(o) in allowed, (
        f'(n_iter, func_evals) {where}: ours {counts(o)}, torch {counts(t)}, '
        f'torch nudged {[counts(n.state[i]) for n in nudged]}')
    if len(allowed) > 1:
      # A comparison at the rounding level decided torch's own run (another
      # CPU, another summation order); from here on the runs may part.
      break
    errors = _errors(ours, theirs, i, scales)
    noise = [_errors(n, theirs, i, scales) if len(n.state[i]['ro']) == len(t['ro'])
             else {} for n in nudged]
    for k, err in errors.items():
      bound = max(floor, 10 * max(n.get(k, 0.0) for n in noise))
      assert err <= bound, f'{k} {where}: relative error {err:.2e} > {bound:.1e}'
    worst = max(worst, *errors.values())
    worst_params = max(worst_params, errors['params'])
  return worst_params, worst


# ----------------------------------------------------------------------------
# Parity.

W = 'strong_wolfe'
# (problem, torch kwargs, lr per step or None): what ends each step in torch is
# noted; "ls" lists the line-search branches the case goes through.
CASES = {
    # Fixed step, full history: max_iter ends every step.
    'rosenbrock2-fixed': ('rosenbrock2', {}, None),
    # history_size 3 < iterations: the ring buffer wraps.
    'rosenbrock2-fixed-history3': ('rosenbrock2', dict(history_size=3, lr=0.5), None),
    # lr 1e-10, then 0.5 (set as data): |t·d| ends step 1, then max_iter.
    'rosenbrock2-fixed-lr-changes': ('rosenbrock2', {}, [1e-10, 0.5, 0.5]),
    # max_eval, max_eval, g·d.
    'rosenbrock2-wolfe': ('rosenbrock2', dict(line_search_fn=W), None),
    # max_iter, max_eval, max_eval; ls: Armijo and "not lower" brackets,
    # extrapolation, uphill, insufficient progress, both zoom updates.
    'rosenbrock2-wolfe-lr2-history3': (
        'rosenbrock2', dict(line_search_fn=W, lr=2.0, history_size=3), None),
    # max_eval; ls: long extrapolations that use up max_ls ([0, t] bracket).
    'rosenbrock2-wolfe-short-steps': (
        'rosenbrock2', dict(line_search_fn=W, lr=1e-3, max_eval=6, history_size=3), None),
    'rosenbrock10-wolfe-history3': (
        'rosenbrock10', dict(line_search_fn=W, history_size=3), None),
    # max_eval counts the fixed-step evaluations.
    'rosenbrock10-fixed-max-eval': ('rosenbrock10', dict(lr=0.05, max_eval=12), None),
    # tolerance_grad inside the loop, then at the top of steps 2 and 3.
    'logistic-fixed-tolerance-grad': ('logistic', dict(tolerance_grad=1e-5), None),
    # |loss - prev_loss|, then g·d.
    'logistic-wolfe-lr30': ('logistic', dict(line_search_fn=W, lr=30.0, history_size=3), None),
    # ls: the trial moved 0.1·len away from a bracket end.
    'logistic-wolfe-lr1000': (
        'logistic', dict(line_search_fn=W, lr=1000.0, history_size=3), None),
    'mlp-fixed': ('mlp', {}, None),
    'mlp-wolfe-history3': ('mlp', dict(line_search_fn=W, history_size=3), None),
}


def _record(record_property, worst: tuple[float, float]) -> None:
  """What a case reached, kept with its result: its worst relative errors."""
  params, anything = worst
  record_property('worst_relative_error_params', params)
  record_property('worst_relative_error_any_quantity', anything)
  print(f'worst relative error: params {params:.1e}, any quantity {anything:.1e}')


@pytest.mark.parametrize('name', CASES)
def test_parity_float64(name, torch, record_property):
  kind, kwargs, lrs = CASES[name]
  _record(record_property, check(torch, kind, kwargs, np.float64, lrs=lrs))


# Float32: torch keeps the loss and some scalars in Python doubles where we keep
# float32, and float32 rounding is 1e9 times coarser: over tens of iterations the
# runs spread as two torch runs do (held by the same rule, floor 1e-5), so these
# cases are short or well conditioned.
F32_CASES = {
    'logistic-fixed-tolerance-grad': CASES['logistic-fixed-tolerance-grad'],
    'mlp-wolfe-history3-5-iterations': (
        'mlp', dict(line_search_fn=W, history_size=3, max_iter=5), None),
    'rosenbrock2-wolfe-5-iterations': ('rosenbrock2', dict(line_search_fn=W, max_iter=5), None),
}


@pytest.mark.parametrize('name', F32_CASES)
def test_parity_float32(name, torch, record_property):
  kind, kwargs, lrs = F32_CASES[name]
  _record(record_property, check(torch, kind, kwargs, np.float32, lrs=lrs))


def test_one_compilation_serves_every_step():
  # lr, tolerance_grad and tolerance_change are data in the state: the three
  # steps of both rosenbrock2-fixed cases ran through one compiled step.
  kind, kwargs, lrs = CASES['rosenbrock2-fixed-lr-changes']
  with precision(np.float64):
    run_ours(kind, kwargs, np.float64, 3, lrs)
    run_ours(kind, dict(tolerance_grad=1e-3, tolerance_change=1e-6), np.float64, 2)
  tx, step = _step_fn(kind, _structure(kwargs), np.dtype(np.float64))
  assert TRACES[(kind, _structure(kwargs), np.dtype(np.float64))] == 1
  assert step._cache_size() == 1


# ----------------------------------------------------------------------------
# The strong-Wolfe search alone, against torch's _strong_wolfe.

def _polynomial(a, scale, z):
  """A degree-6 polynomial of u = z / scale (Horner) and its derivative in z,
  written once for torch and jax.numpy: the same operations in the same order."""
  u = z / scale
  f, g = a[5], 6 * a[5]
  for k in (4, 3, 2, 1):
    f = f * u + a[k]
    g = g * u + (k + 1) * a[k]
  f = f * u + a[0]
  return f * u, g / scale


def _search_problem(seed):
  """A random 1-D line search: a polynomial bounded below, a descent direction,
  an initial step over six decades, and max_ls from 0 to 25."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=6) * 3
  if rng.uniform() < 0.5:
    a[4:] = 0.0
  a[5 if a[5] else 3] = abs(a[5 if a[5] else 3]) + 0.1
  scale = 1e-10 if rng.uniform() < 0.25 else 1.0  # tiny scales end in short brackets
  x = rng.normal(size=1) * 2 * scale
  g = _polynomial(a, scale, x)[1]
  step_scale = 10.0 ** rng.uniform(-2, 2)
  d = -np.sign(g) * step_scale * scale
  t = float(10.0 ** rng.uniform(-3, 3) / step_scale)
  max_ls = int(rng.choice([25, 25, 25, 4, 1, 0]))
  t_is_tensor = bool(rng.uniform() < 0.3)
  return a, scale, x, d, t, max_ls, t_is_tensor


# Seeds 0-11 and 15, 16, 30, 49 take every branch of the search (Armijo, "not
# lower", uphill and curvature exits of the bracketing phase, extrapolation,
# running out of evaluations, both zoom updates, insufficient progress, the
# moved trial, the bracket-length stop), as a branch-counting copy of torch's
# function showed.
SEARCH_SEEDS = list(range(12)) + [15, 16, 30, 49]


def _ieee_sqrt(torch, nudge=None):
  """A replacement for ``torch.Tensor.sqrt``: IEEE's correctly rounded root, and with
  ``nudge=(k, s)`` the root of its k-th call moved one ulp up (s = 1) or down (-1).
  Returns the method and the list its calls append to.

  torch's own CPU sqrt is MKL's: within an ulp, not correctly rounded, and its
  code path depends on the CPU. With ``MKL_ENABLE_INSTRUCTIONS=AVX2`` on the Xeon
  these tests were written on, one case of ``test_cubic_interpolate_is_torchs``
  gets a root one ulp off; on an AMD EPYC seed 10 of the search test ended at
  t = 0.013318658317263619, 14 ulps from here, which is exactly where this
  seed's third root moved one ulp up takes it. Every other operation the search
  and the polynomial make in torch (+, -, *, / of float64 tensors and Python
  floats, a 1-element dot, comparisons, min and max) is an IEEE single operation,
  the same on every CPU, as each of ours is op by op.
  """
  calls = []

  def sqrt(self):
    root = np.sqrt(self.detach().numpy())
    if nudge is not None and len(calls) == nudge[0]:
      root = np.nextafter(root, np.inf * nudge[1])
    calls.append(root)
    return torch.as_tensor(root, dtype=self.dtype)

  return sqrt, calls


def _torch_search(torch, seed, sqrt=None):
  """torch's ``_strong_wolfe`` on the seed's problem: ``(f, g, t, evals)`` as floats
  and an int, with ``sqrt`` (from :func:`_ieee_sqrt`) as ``Tensor.sqrt`` if given."""
  torch_lbfgs = importlib.import_module('torch.optim.lbfgs')
  a, scale, x, d, t, max_ls, t_is_tensor = _search_problem(seed)

  def objective(x0, step, direction):
    f, g = _polynomial([float(v) for v in a], scale, x0 + step * direction)
    return float(f), g

  x_t, d_t = torch.tensor(x), torch.tensor(d)
  with pytest.MonkeyPatch.context() as patch:
    if sqrt is not None:
      patch.setattr(torch.Tensor, 'sqrt', sqrt)
    f0, g0 = objective(x_t, 0.0, d_t)
    t_t = torch.tensor(t, dtype=torch.float64) if t_is_tensor else t
    f, g, t, evals = torch_lbfgs._strong_wolfe(objective, x_t, t_t, d_t, f0, g0,
                                               g0.dot(d_t), max_ls=max_ls)
  return float(f), float(g[0]), float(t), evals


@pytest.mark.parametrize('seed', SEARCH_SEEDS)
def test_strong_wolfe_is_torchs_search_op_for_op(x64, seed, torch):
  """Ours, op by op, is torch's search: the same branches, evaluations and numbers.

  Against torch with IEEE square roots it holds bit for bit on every CPU (see
  :func:`_ieee_sqrt`). Against torch as it runs here, each of its roots may be an
  ulp off: its evaluation count is ours unless one root moved by an ulp changes
  torch's own count (seed 30: its first root one ulp up takes 23 evaluations, not
  20), and where the count is ours, t, f and g are within the sum of what each
  root moved one ulp either way changes them by (measured, in ulps of (f, g, t):
  seed 10 (36, 1466, 141), seed 49 (360, 155, 126), the others 1 at most; torch
  on this Xeon was at 0 from its IEEE twin on every seed, with MKL's AVX2 code too).
  """
  a, scale, x, d, t, max_ls, t_is_tensor = _search_problem(seed)
  with jax.disable_jit():  # op by op: no fused multiply-adds
    a_j, x_j, d_j = jnp.asarray(a), jnp.asarray(x), jnp.asarray(d)
    f0_j, g0_j = _polynomial(a_j, scale, x_j)
    f, g, step, evals = strong_wolfe(
        lambda step: _polynomial(a_j, scale, x_j + step * d_j), t, d_j, f0_j[0], g0_j,
        g0_j @ d_j, max_ls, t_is_tensor=t_is_tensor)
  ours = (float(f), float(g[0]), float(step), int(evals))

  sqrt, roots = _ieee_sqrt(torch)
  exact = _torch_search(torch, seed, sqrt)
  assert ours == exact  # (f, g, t, evaluations), bit for bit

  outcomes, reach = {exact[3]}, np.zeros(3)
  for k in range(len(roots)):
    moved = [_torch_search(torch, seed, _ieee_sqrt(torch, (k, s))[0]) for s in (1, -1)]
    outcomes |= {m[3] for m in moved}
    kept = [np.abs(np.subtract(m[:3], exact[:3])) for m in moved if m[3] == exact[3]]
    reach += np.max(kept, axis=0, initial=0.0)
  theirs = _torch_search(torch, seed)
  assert theirs[3] in outcomes, f'torch evaluated {theirs[3]} times here, not {outcomes}'
  if theirs[3] == exact[3]:
    apart = np.abs(np.subtract(theirs[:3], exact[:3]))
    assert np.all(apart <= reach), f'(f, g, t) {apart} apart, more than {reach}'


def test_cubic_interpolate_is_torchs(x64, torch):
  """Op for op: bit for bit against torch's with IEEE square roots; torch's own,
  whose root may be an ulp off (see :func:`_ieee_sqrt`), is the result of that
  root or of its neighbours (one of these 200 cases, with MKL's AVX2 code here:
  24 ulps of the result, from one ulp of the root and the cancellation in
  g2 + d2 - d1)."""
  torch_lbfgs = importlib.import_module('torch.optim.lbfgs')
  rng = np.random.default_rng(0)
  for _ in range(200):
    x1, f1, x2, f2 = rng.normal(size=4) * 3
    g1, g2 = rng.normal(size=2) * 10
    bounds = tuple(sorted(rng.normal(size=2) * 5)) if rng.uniform() < 0.5 else None

    def theirs(sqrt=None):
      with pytest.MonkeyPatch.context() as patch:
        if sqrt is not None:
          patch.setattr(torch.Tensor, 'sqrt', sqrt)
        return float(torch_lbfgs._cubic_interpolate(
            x1, f1, torch.tensor(g1), x2, f2, torch.tensor(g2), bounds=bounds))

    with jax.disable_jit():
      ours = float(cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=bounds))
    assert ours == theirs(_ieee_sqrt(torch)[0])
    assert theirs() in {ours, *(theirs(_ieee_sqrt(torch, (0, s))[0]) for s in (1, -1))}


# ----------------------------------------------------------------------------
# Arguments, as torch checks them.

BAD = [dict(lr=-1.0), dict(lr=-0.5, line_search_fn=W), dict(lr=-2)]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_bad_arguments_raise_torchs_error(kwargs, torch):
  with pytest.raises(Exception) as theirs:
    torch.optim.LBFGS([torch.zeros(2, requires_grad=True)], **kwargs)
  with pytest.raises(type(theirs.value)) as ours:
    lbfgs(**kwargs)
  assert str(ours.value) == str(theirs.value)


def test_unknown_line_search_raises_torchs_error_at_construction(torch):
  # torch accepts the name and raises at the first step; we raise it up front.
  p = torch.ones(2, requires_grad=True)
  opt = torch.optim.LBFGS([p], line_search_fn='armijo')

  def closure():
    opt.zero_grad()
    loss = (p ** 2).sum()
    loss.backward()
    return loss

  with pytest.raises(Exception) as theirs:
    opt.step(closure)
  with pytest.raises(type(theirs.value)) as ours:
    lbfgs(line_search_fn='armijo')
  assert str(ours.value) == str(theirs.value) == "only 'strong_wolfe' is supported"


def test_arguments_torch_does_not_check():
  # torch fails later (IndexError at the first curvature pair) or loops oddly.
  with pytest.raises(ValueError, match='history_size must be at least 1, got 0'):
    lbfgs(history_size=0)
  with pytest.raises(TypeError, match='max_iter must be an integer'):
    lbfgs(max_iter=2.5)
  with pytest.raises(ValueError, match='lr as an array must be 1-element'):
    lbfgs(lr=jnp.ones(3))
  # Taken, and as meant: an integral float max_iter counts as that integer (20
  # iterations end this step), a callable lr is a schedule (0.5 here).
  fn = lambda p: _rosenbrock(p, None, jnp)
  params = {'x': jnp.array([-1.5, 2.0])}
  steps = []
  for tx in (lbfgs(max_iter=20.0, lr=lambda count: 0.5), lbfgs(max_iter=20, lr=0.5)):
    updates, state = tx.update(None, tx.init(params), params, value_fn=fn)
    steps.append(updates['x'])
    assert int(state.n_iter) == 20
  # The same numbers, in programs that differ (a constant lr, an lr in the state)
  # and so may contract a product into an FMA apart: equal but for rounding.
  np.testing.assert_allclose(steps[0], steps[1], rtol=1e-6)


def test_update_needs_the_objective_and_params():
  tx = lbfgs()
  params = jnp.ones(2)
  state = tx.init(params)
  with pytest.raises(ValueError, match='value_fn'):
    tx.update(params, state, params)
  with pytest.raises(ValueError, match='needs params'):
    tx.update(params, state, value_fn=jnp.sum)


# ----------------------------------------------------------------------------
# The ways to hand in the objective, and complex params.


def test_every_way_to_give_the_objective_takes_the_same_step(x64):
  fn = lambda p: _rosenbrock(p, None, jnp)
  params = {'x': jnp.array([-1.5, 2.0])}
  tx = lbfgs(max_iter=3)
  state = tx.init(params)

  @jax.jit
  def every_way(params, state):
    grads = jax.grad(fn)(params)
    return [tx.update(grads, state, params, value_fn=fn),
            tx.update(grads, state, params, value_fn=fn, value=fn(params)),
            tx.update(grads, state, params, value_and_grad_fn=jax.value_and_grad(fn)),
            tx.update(None, state, params, value_fn=fn)]

  results = every_way(params, state)
  for updates, new_state in results:
    assert_within_ulps(
        updates['x'], results[0][0]['x'], 256,
        'each way computes the first loss and gradient with its own ops, which XLA may '
        'fuse and contract (FMA) apart; a gradient one ulp off moves this update by 128 '
        'ulps (measured), and the four were 0 ulps apart on the Xeon this was written '
        'on, with XLA\'s AVX-512, AVX2 and SSE4.2 code')
    assert int(new_state.func_evals) == 3  # the first evaluation, then one per step but the last
    # Exact: 100·(2 - 1.5²)² + (1 + 1.5)², every intermediate representable.
    assert float(new_state.loss) == 12.5


def test_complex_params_are_real_pairs(x64, torch):
  c = np.array([0.5 - 1.0j, -0.3 + 0.2j, 1.2 + 0.4j])

  def loss(z, xp):
    w = z - xp.asarray(c) if xp is jnp else z - torch.tensor(c)
    return xp.sum((w.real ** 2 + 2 * w.imag ** 2) * (1 + 0.1 * w.real ** 2))

  def torch_run(z0):
    """torch's two steps from z0: (params, func_evals) after each, and the last d."""
    p = torch.tensor(z0, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=5, line_search_fn=W)

    def closure():
      opt.zero_grad()
      value = loss(p, torch)
      value.backward()
      return value

    steps = []
    for _ in range(2):
      opt.step(closure)
      steps.append((p.detach().numpy().copy(), opt.state[p]['func_evals']))
    return steps, opt.state[p]['d'].numpy()

  z0 = np.array([1.0 + 1.0j, -1.0 + 0.5j, 0.25 - 2.0j])
  theirs, their_d = torch_run(z0)
  # torch's own runs from a start one rounding away: their counts are as valid
  # (measured: the same 6 and 11 evaluations, also with MKL's AVX2 code).
  eps = np.finfo(np.float64).eps
  nudged = [torch_run(z0 * (1 + s * eps))[0] for s in (1, -1)]

  tx = lbfgs(max_iter=5, line_search_fn=W)
  z = jnp.asarray(z0)
  state = tx.init(z)
  step = jax.jit(lambda z, s: tx.update(None, s, z, value_fn=lambda q: loss(q, jnp)))
  for i in range(2):
    updates, state = step(z, state)
    z = fo.apply_updates(z, updates)
    allowed = {theirs[i][1]} | {n[i][1] for n in nudged}
    assert int(state.func_evals) in allowed
    if len(allowed) > 1:
      return  # a comparison at the rounding level decided torch's run: they may part
    np.testing.assert_allclose(np.asarray(z), theirs[i][0], rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(np.asarray(state.d), their_d, rtol=1e-10, atol=1e-14)

