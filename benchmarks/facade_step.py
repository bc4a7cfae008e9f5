"""Adam step time: the facade ``optim.Adam.step`` against a hand-written jitted
functional step (per-leaf loop, foreach, and params kept packed), optax and
torch.optim.Adam, all measured in this run on this machine.

Two sizes: 16M float32 params in 200 leaves (memory bandwidth decides), and a tiny
model of 10 leaves of 10 elements (per-step overhead decides). Also ``step(closure)``
(a closure made anew each step, capturing that step's batch) against the same loss's
``jax.value_and_grad`` and update in one hand-written jitted step.

    python benchmarks/facade_step.py [--repeats 30]

Prints a markdown table of median step times and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import functional_optim as fo
from functional_optim import optim


def _median_seconds(fn, repeats: int, warmup: int = 3) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _shapes(total: int, leaves: int) -> list[tuple[int, ...]]:
  per_leaf = total // leaves
  return [(per_leaf,)] * leaves


def measure(total: int, leaves: int, repeats: int) -> dict[str, float]:
  rng = np.random.default_rng(0)
  shapes = _shapes(total, leaves)
  host_params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
  host_grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
  grads = [jnp.asarray(g) for g in host_grads]
  results = {}

  # The facade: what a ported torch script calls.
  opt = optim.Adam([jnp.asarray(p) for p in host_params], lr=1e-3)
  def facade():
    opt.step(grads)
    jax.block_until_ready(opt.params)
  results['functional_optim facade'] = _median_seconds(facade, repeats)

  # The functional API in a hand-written jitted step with donated buffers.
  def jitted(tx, packed=False):
    params = [jnp.asarray(p) for p in host_params]
    step_grads = fo.kernels.pack(grads) if packed else grads
    params = fo.kernels.pack(params) if packed else params
    state = tx.init(params)
    def step(params, state, grads):
      updates, state = tx.update(grads, state, params)
      return fo.apply_updates(params, updates), state
    step = jax.jit(step, donate_argnums=(0, 1))
    holder = [params, state]
    def run():
      holder[0], holder[1] = step(holder[0], holder[1], step_grads)
      jax.block_until_ready(holder[0])
    return run
  results['functional_optim jitted'] = _median_seconds(jitted(fo.adam(lr=1e-3)), repeats)
  results['functional_optim jitted, foreach'] = _median_seconds(
      jitted(fo.adam(lr=1e-3, implementation='foreach')), repeats)
  results['functional_optim jitted, packed params'] = _median_seconds(
      jitted(fo.adam(lr=1e-3), packed=True), repeats)
  results['optax jitted'] = _median_seconds(jitted(optax.adam(1e-3)), repeats)

  # step(closure): the loss and its gradients computed inside the step, against
  # the same in a hand-written jitted step. A closure made anew per step, as a
  # loop over batches makes it, capturing that step's "batch".
  def loss(params, batch):
    return sum(jnp.vdot(p - b, p - b) for p, b in zip(params, batch)) / 2
  closure_opt = optim.Adam([jnp.asarray(p) for p in host_params], lr=1e-3)
  def closure_step():
    batch = grads
    closure_opt.step(lambda params: loss(params, batch))
    jax.block_until_ready(closure_opt.params)
  results['functional_optim facade, step(closure)'] = _median_seconds(closure_step, repeats)
  tx = fo.adam(lr=1e-3)
  def grad_step(params, state, batch):
    value, g = jax.value_and_grad(loss)(params, batch)
    updates, state = tx.update(g, state, params)
    return fo.apply_updates(params, updates), state, value
  grad_step = jax.jit(grad_step, donate_argnums=(0, 1))
  params = [jnp.asarray(p) for p in host_params]
  holder = [params, tx.init(params)]
  def jitted_grad_step():
    holder[0], holder[1], _ = grad_step(holder[0], holder[1], grads)
    jax.block_until_ready(holder[0])
  results['functional_optim jitted, value_and_grad + step'] = _median_seconds(
      jitted_grad_step, repeats)

  for name, kwargs in [('torch for-loop', {}), ('torch foreach', {'foreach': True}),
                       ('torch fused', {'fused': True})]:
    tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in host_params]
    for t, g in zip(tensors, host_grads):
      t.grad = torch.from_numpy(g)
    topt = torch.optim.Adam(tensors, lr=1e-3, **kwargs)
    results[name] = _median_seconds(topt.step, repeats)
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=30)
  args = parser.parse_args(argv)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, '
        f'{torch.get_num_threads()} torch threads\n')
  for label, total, leaves, repeats in [('16M params, 200 leaves', 16_000_000, 200, args.repeats),
                                        ('tiny: 10 leaves of 10', 100, 10, 50 * args.repeats)]:
    results = measure(total, leaves, repeats)
    facade = results['functional_optim facade']
    print(f'### {label}\n')
    print('| implementation | median step | facade / this |')
    print('|---|---|---|')
    for name, seconds in results.items():
      print(f'| {name} | {seconds * 1e3:.3f} ms | {facade / seconds:.2f} |')
    closure = (results['functional_optim facade, step(closure)']
               / results['functional_optim jitted, value_and_grad + step'])
    print(f'\nstep(closure) / the hand-written jitted value_and_grad + step: {closure:.2f}\n')


if __name__ == '__main__':
  main()
