"""One LBFGS step: functional_optim (jitted) against torch.optim.LBFGS on CPU.

Two 100k-parameter problems, float32, each with a fixed step and with strong
Wolfe (``max_iter=20``: up to 25 evaluations of loss and gradient; tolerances
0, so that both libraries always do the whole step):

* multinomial logistic regression, 2000 samples × 500 features × 200 classes
  (a 500×200 weight matrix and 200 biases: 100,200 parameters), mean
  cross-entropy plus ``1e-3·‖W‖²``; labels drawn with noise, so the minimum is an
  ordinary one. Each evaluation is two matrix products: the objective dominates.
* Rosenbrock in 100,000 dimensions: an evaluation costs a few elementwise
  passes, so the optimizer's own work (two-loop recursion, line search, and in
  torch the Python around them) dominates.

Every timed step starts from the same params and a fresh optimizer state, so
both libraries do the same work each time (the table shows the evaluations each
made). The two libraries alternate, run by run, so that a change in the
machine's load hits both; times are medians over ``--repeats`` runs. Ours
excludes compilation, reported on its own (tracing plus XLA compilation), and
donates the state, as a training loop would. "one evaluation" is the median time
of the loss and gradient alone (torch: forward and backward; ours: the jitted
``jax.value_and_grad``): what the objective costs in each framework, apart from
the optimizer.

Both run on one thread by default (``--threads 1``): on a shared machine,
multithreaded timings measure the neighbours (torch's OpenMP threads, spinning
at barriers on oversubscribed cores, ran 10 times slower than one thread while
the tests of other jobs shared this one). ``--threads 0`` keeps each library's
default.

    python benchmarks/lbfgs_step.py [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=9)
  parser.add_argument('--threads', type=int, default=1,
                      help='threads for each library (0: its default)')
  return parser.parse_args(argv)


if __name__ == '__main__' and _parse_args().threads == 1:
  # Must be set before jax starts its CPU client.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen'
                             '=false intra_op_parallelism_threads=1').strip()

import jax
import jax.numpy as jnp
import numpy as np
import torch

import functional_optim as fo
from functional_optim.optimizers import lbfgs

SAMPLES, FEATURES, CLASSES = 2000, 500, 200
L2 = 1e-3
ROSENBROCK_DIM = 100_000
# No tolerances: every step runs its max_iter iterations (or max_eval
# evaluations) in both libraries, whatever float32 rounding does near a stall.
SETTINGS = dict(max_iter=20, tolerance_grad=0.0, tolerance_change=0.0)


class Problem(NamedTuple):
  name: str
  init: dict[str, np.ndarray]      # params, float32, in jax's (sorted) key order
  torch_loss: Callable             # dict of tensors -> loss
  jax_loss: Callable               # dict of arrays -> loss


def logistic_regression(seed: int = 0) -> Problem:
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(SAMPLES, FEATURES)).astype(np.float32)
  true_w = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32) / np.sqrt(FEATURES)
  y = np.argmax(X @ true_w + rng.gumbel(size=(SAMPLES, CLASSES)), axis=1)
  init = {'b': np.zeros(CLASSES, np.float32),
          'w': (rng.normal(size=(FEATURES, CLASSES)) * 0.01).astype(np.float32)}
  Xt, yt, Xj, yj = torch.from_numpy(X), torch.from_numpy(y), jnp.asarray(X), jnp.asarray(y)

  def torch_loss(p):
    logits = Xt @ p['w'] + p['b']
    return torch.nn.functional.cross_entropy(logits, yt) + L2 * (p['w'] * p['w']).sum()

  def jax_loss(p):
    logits = Xj @ p['w'] + p['b']
    picked = jnp.take_along_axis(logits, yj[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked) + L2 * jnp.sum(p['w'] * p['w'])

  return Problem(f'logistic regression {SAMPLES}×{FEATURES}, {CLASSES} classes',
                 init, torch_loss, jax_loss)


def rosenbrock() -> Problem:
  init = {'x': np.array([-1.2, 1.0] * (ROSENBROCK_DIM // 2), np.float32)}

  def loss(p):
    x = p['x']
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

  return Problem(f'Rosenbrock, {ROSENBROCK_DIM:,} dims', init, loss, loss)


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def torch_runner(problem: Problem, line_search_fn):
  """``(one step, one evaluation)``: callables returning (seconds, func_evals)."""
  names = list(problem.init)

  def fresh_params():
    return {k: torch.tensor(problem.init[k], requires_grad=True) for k in names}

  def step():
    params = fresh_params()
    opt = torch.optim.LBFGS(list(params.values()), line_search_fn=line_search_fn,
                            **SETTINGS)

    def closure():
      opt.zero_grad()
      loss = problem.torch_loss(params)
      loss.backward()
      return loss

    seconds = _timed(lambda: opt.step(closure))
    return seconds, opt.state[params[names[0]]]['func_evals']

  def evaluation():
    params = fresh_params()
    return _timed(lambda: problem.torch_loss(params).backward()), 1

  return step, evaluation


def our_runner(problem: Problem, line_search_fn):
  """``(one step, one evaluation, compile seconds)``."""
  loss_fn = problem.jax_loss
  tx = lbfgs(line_search_fn=line_search_fn, **SETTINGS)

  # The state is donated: the history buffers (2 × history_size × n floats,
  # 80 MB here) are then updated in place rather than copied first.
  @functools.partial(jax.jit, donate_argnums=1)
  def train_step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value_fn=loss_fn, value=loss)
    return fo.apply_updates(params, updates), state

  params = {k: jnp.asarray(v) for k, v in problem.init.items()}
  fresh_state = lambda: jax.block_until_ready(tx.init(params))
  start = time.perf_counter()
  compiled = train_step.lower(params, fresh_state()).compile()
  compile_s = time.perf_counter() - start
  value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
  jax.block_until_ready(value_and_grad(params))

  def step():
    state = fresh_state()
    out = []
    seconds = _timed(lambda: out.append(jax.block_until_ready(compiled(params, state))))
    return seconds, int(out[0][1].func_evals)

  def evaluation():
    return _timed(lambda: jax.block_until_ready(value_and_grad(params))), 1

  return step, evaluation, compile_s


def main():
  args = _parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  if args.threads > 1:
    print('note: --threads > 1 sets torch only; XLA keeps its own thread pool\n',
          file=sys.stderr)
  rows = []
  for problem in (logistic_regression(), rosenbrock()):
    n_params = sum(v.size for v in problem.init.values())
    for line_search_fn in (None, 'strong_wolfe'):
      torch_step, torch_eval = torch_runner(problem, line_search_fn)
      our_step, our_eval, compile_s = our_runner(problem, line_search_fn)
      torch_step(), our_step()  # warm-up (allocator, thread pools)
      samples = {'torch': [], 'ours': [], 'torch_eval': [], 'ours_eval': []}
      evals = {}
      for _ in range(args.repeats):
        for key, run in (('torch', torch_step), ('ours', our_step),
                         ('torch_eval', torch_eval), ('ours_eval', our_eval)):
          seconds, evals[key] = run()
          samples[key].append(seconds)
      median = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
      rows.append((f'{problem.name} ({n_params:,} params)', line_search_fn or 'None',
                   median, compile_s, evals['torch'], evals['ours']))

  print(f'One LBFGS step (max_iter=20, float32), {jax.devices()[0].platform.upper()}, '
        f'threads: torch {torch.get_num_threads()}, XLA '
        f'{"1" if args.threads == 1 else "default"}, median of {args.repeats} runs\n')
  print('| problem | line_search_fn | torch (ms) | ours, jitted (ms) | torch / ours '
        '| our compile (s) | evaluations torch / ours | one evaluation torch / ours (ms) |')
  print('|---|---|---:|---:|---:|---:|---:|---:|')
  for problem, ls, m, compile_s, e_torch, e_ours in rows:
    print(f'| {problem} | {ls} | {m["torch"]:.1f} | {m["ours"]:.1f} '
          f'| {m["torch"] / m["ours"]:.2f} | {compile_s:.2f} | {e_torch} / {e_ours} '
          f'| {m["torch_eval"]:.2f} / {m["ours_eval"]:.2f} |')


if __name__ == '__main__':
  main()
