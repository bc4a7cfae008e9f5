"""SparseAdam against torch.optim.SparseAdam: embedding tables with sparse gradients.

The harness's dense problem does not fit SparseAdam, so this file runs its own:
two embedding tables, a batch of rows looked up from each at every step (one row
twice, so duplicates must be summed), and a smooth loss of the looked-up rows.
torch differentiates ``F.embedding(..., sparse=True)``; ours takes ``jax.grad``
with respect to the looked-up rows and scatters it as a BCOO array with the row
indices, which is what torch's sparse gradient holds.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import functional_optim as fo
from functional_optim.optimizers import sparse_adam
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, assert_close, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

TABLES = [(20, 4), (12, 3)]
BATCH = [6, 4]
UNUSED_ROWS = 4  # The last rows of each table are never looked up.


def lookups(step: int, table: int, gaps: bool):
  """Row indices that ``table`` looks up at ``step``; None for no gradient at all.

  With ``gaps``, table 1 sometimes gets no gradient and sometimes one that
  stores nothing (each such pattern compiles our train step once more).
  """
  if gaps and table == 1 and step % 5 == 2:
    return None
  if gaps and table == 1 and step % 7 == 4:
    return np.zeros(0, np.int64)
  rng = np.random.default_rng([step, table])
  rows = rng.integers(0, TABLES[table][0] - UNUSED_ROWS, BATCH[table])
  rows[-1] = rows[0]
  return rows


def position_weights(n: int) -> np.ndarray:
  # Each position weighs its row differently, so a row looked up twice gets two
  # different gradients.
  return np.arange(1, n + 1)[:, None] / n


def lookup_loss(rows, weights, xp):
  """Smooth and non-quadratic in the looked-up rows."""
  return xp.sum(weights * (xp.log(xp.cosh(rows - 0.2)) + 0.05 * rows ** 4))


def initial_tables(dtype):
  rng = np.random.default_rng(0)
  return [rng.normal(size=shape).astype(dtype) for shape in TABLES]


def _sign(kwargs):
  return -1.0 if kwargs.get('maximize') else 1.0


@contextlib.contextmanager
def one_torch_thread():
  # torch's dense += sparse add (SparseAdam's updates) busy-waits on its worker
  # threads: about 30 ms a step with two threads on two cores, under 1 ms with one.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(threads)


@one_torch_thread()
def run_torch(kwargs, init, steps, edit, gaps):
  tables = [torch.tensor(x, requires_grad=True) for x in init]
  opt = torch.optim.SparseAdam(tables, **kwargs)
  for step in range(steps):
    if edit:
      opt.param_groups[0].update(edit(step))
    opt.zero_grad()
    total = 0.0
    for i, table in enumerate(tables):
      rows = lookups(step, i, gaps)
      if rows is None:
        continue
      if rows.size == 0:
        table.grad = torch.sparse_coo_tensor(
            torch.zeros((1, 0), dtype=torch.long),
            torch.zeros((0, table.shape[1]), dtype=table.dtype), table.shape,
            check_invariants=True)
        continue
      looked_up = torch.nn.functional.embedding(torch.tensor(rows), table, sparse=True)
      weights = torch.tensor(position_weights(rows.size), dtype=table.dtype)
      total = total + _sign(kwargs) * lookup_loss(looked_up, weights, torch)
    total.backward()
    opt.step()
  return [t.detach().numpy() for t in tables], [opt.state[t] for t in tables]


def sparse_grad(table, rows, sign):
  """The gradient of the loss of ``table[rows]`` as a BCOO array of row indices."""
  if rows is None:
    return None
  weights = jnp.asarray(position_weights(rows.size), table.dtype)
  grad_rows = jax.grad(lambda r: sign * lookup_loss(r, weights, jnp))(table[rows])
  return sparse.BCOO((grad_rows, rows[:, None]), shape=table.shape)


def run_ours(kwargs, init, steps, edit, gaps):
  tx = sparse_adam(**kwargs)
  tables = [jnp.asarray(x) for x in init]
  state = tx.init(tables)

  @jax.jit
  def train_step(tables, state, rows):
    grads = [sparse_grad(t, r, _sign(kwargs)) for t, r in zip(tables, rows)]
    updates, state = tx.update(grads, state)
    return fo.apply_updates(tables, updates), state

  for step in range(steps):
    if edit:
      state = fo.set_hyperparams(state, **edit(step))
    rows = [None if r is None else jnp.asarray(r, jnp.int32)
            for r in (lookups(step, i, gaps) for i in range(len(tables)))]
    tables, state = train_step(tables, state, rows)
  return [np.asarray(t) for t in tables], state


def check_sparse_adam(kwargs, dtype, steps=50, edit=None, gaps=False):
  init = initial_tables(dtype)
  t_tables, t_state = run_torch(kwargs, init, steps, edit, gaps)
  o_tables, o_state = run_ours(kwargs, init, steps, edit, gaps)
  for i, (ours, theirs) in enumerate(zip(o_tables, t_tables)):
    assert_close(ours, theirs, f'table {i}')
    # Rows never looked up neither move nor gather moments.
    unused = slice(TABLES[i][0] - UNUSED_ROWS, None)
    np.testing.assert_array_equal(ours[unused], init[i][unused])
    np.testing.assert_array_equal(theirs[unused], init[i][unused])
    np.testing.assert_array_equal(o_state.exp_avg[i][unused], 0)
    assert float(o_state.step[i]) == t_state[i]['step']
    for key in ('exp_avg', 'exp_avg_sq'):
      assert_close(getattr(o_state, key)[i], t_state[i][key].numpy(), f'{key}[{i}]')
  return o_state


CASES = {
    'default': dict(),
    'lr': dict(lr=0.05),
    'betas_eps': dict(lr=0.02, betas=(0.8, 0.95), eps=1e-3),
    'beta1_zero': dict(lr=0.05, betas=(0.0, 0.99)),
    'maximize': dict(lr=0.05, maximize=True),
}


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CASES)
def test_parity(name, dtype):
  with precision(dtype):
    check_sparse_adam(CASES[name], dtype)


def test_missing_and_empty_gradients(x64):
  """No gradient: nothing changes. A gradient storing nothing: only ``step`` counts it."""
  state = check_sparse_adam(dict(lr=0.05), np.float64, gaps=True)
  no_gradient = sum(lookups(step, 1, gaps=True) is None for step in range(50))
  assert float(state.step[0]) == 50 and float(state.step[1]) == 50 - no_gradient


def test_hyperparams_changed_between_steps(x64):
  def edit(step):
    return dict(lr=0.05 * 0.96 ** step, betas=(0.8 + 0.01 * (step % 10), 0.99 - 0.001 * step),
                eps=1e-8 * (1 + step))
  check_sparse_adam(dict(lr=0.05), np.float64, edit=edit)


def test_explicit_zeros_count_as_touched(x64):
  """Entries stored with value 0 update their moments and move; element indices."""
  steps = [([[1, 0], [3, 2]], [0.5, -1.0]),
           ([[1, 0], [3, 2], [2, 1]], [0.0, 0.0, 2.0]),
           ([[1, 0], [1, 0]], [0.25, -0.25])]  # A duplicate that sums to zero.
  param = np.linspace(-1.0, 1.0, 15).reshape(5, 3)
  theirs = torch.tensor(param, requires_grad=True)
  opt = torch.optim.SparseAdam([theirs], lr=0.1)
  tx = sparse_adam(lr=0.1)
  ours = jnp.asarray(param)
  state = tx.init(ours)
  history = []
  for indices, values in steps:
    theirs.grad = torch.sparse_coo_tensor(
        torch.tensor(indices).T, torch.tensor(values, dtype=torch.float64), param.shape,
        check_invariants=True)
    opt.step()
    grad = sparse.BCOO((jnp.asarray(values), jnp.asarray(indices)), shape=param.shape)
    updates, state = tx.update(grad, state)
    ours = fo.apply_updates(ours, updates)
    history.append(np.asarray(ours))
  assert_close(ours, theirs.detach().numpy(), 'param')
  assert_close(state.exp_avg, opt.state[theirs]['exp_avg'].numpy(), 'exp_avg')
  assert_close(state.exp_avg_sq, opt.state[theirs]['exp_avg_sq'].numpy(), 'exp_avg_sq')
  # A zero gradient still moves the entry on its momentum.
  assert history[1][1, 0] != history[0][1, 0] and history[2][1, 0] != history[1][1, 0]
  untouched = np.ones(param.shape, bool)
  untouched[[1, 3, 2], [0, 2, 1]] = False
  np.testing.assert_array_equal(np.asarray(ours)[untouched], param[untouched])


BAD = [
    dict(lr=0.0),
    dict(lr=-1e-3),
    dict(eps=0.0),
    dict(eps=-1e-8),
    dict(betas=(1.0, 0.999)),
    dict(betas=(-0.1, 0.999)),
    dict(betas=(0.9, 1.0)),
    # Several bad arguments: the first that torch checks is the one reported.
    dict(lr=0.0, eps=0.0, betas=(1.0, 1.0)),
    dict(eps=0.0, betas=(1.0, 1.0)),
]


@pytest.mark.parametrize('kwargs', BAD, ids=[str(k) for k in BAD])
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.SparseAdam, sparse_adam, kwargs)


def test_complex_params_rejected_as_torch_does():
  with pytest.raises(ValueError) as theirs:
    torch.optim.SparseAdam([torch.zeros(2, requires_grad=True),
                            torch.zeros(2, dtype=torch.complex64, requires_grad=True)])
  with pytest.raises(ValueError) as ours:
    sparse_adam().init([jnp.zeros(2), jnp.zeros(2, jnp.complex64)])
  assert str(ours.value) == str(theirs.value)


def test_sparse_params_rejected_as_torch_does():
  sparse_param = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.tensor([1.0]), (3,),
                                         check_invariants=True)
  with pytest.raises(ValueError) as theirs:
    torch.optim.SparseAdam([sparse_param.requires_grad_()])
  with pytest.raises(ValueError) as ours:
    sparse_adam().init([sparse.BCOO.fromdense(jnp.array([1.0, 0.0, 0.0]))])
  assert str(ours.value) == str(theirs.value)


def test_dense_gradient_rejected_as_torch_does():
  param = torch.zeros(3, requires_grad=True)
  param.grad = torch.ones(3)
  with pytest.raises(RuntimeError) as theirs:
    torch.optim.SparseAdam([param]).step()
  tx = sparse_adam()
  with pytest.raises(RuntimeError) as ours:
    tx.update([jnp.ones(3)], tx.init([jnp.zeros(3)]))
  assert str(ours.value) == str(theirs.value)


def test_array_lr_must_hold_one_element():
  with pytest.raises(ValueError):
    torch.optim.SparseAdam([torch.zeros(2, requires_grad=True)], lr=torch.ones(3))
  with pytest.raises(ValueError, match='lr as an array must be 1-element'):
    sparse_adam(lr=jnp.ones(3))
