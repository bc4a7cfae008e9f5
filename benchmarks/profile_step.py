"""Why a step compiles slowly or needs temporaries: the program, not the clock.

Three reports, each for the trees of ``model_shapes.py`` (``--models``) and the
algorithms of its ``ALGORITHMS`` (``--algorithms``):

* ``program``: per library (ours: the default implementation; optax; for Adam
  also ``minimal``, a hand-written per-leaf Adam below with one count and its
  bias corrections computed once per step, the smallest program an optax-style
  Adam can be), the traced step's jaxpr equations, StableHLO lines, the optimized
  entry computation's kernels by opcode (on XLA:CPU each is a thunk) and per leaf,
  the temp bytes of ``memory_analysis``, and the trace, lowering and XLA compile
  seconds (jax's caches cleared before each). Leaf-sized kernels (those whose
  output has the largest leaf's shape) are listed by name for the largest leaf:
  every ``copy`` or extra fusion there is a pass over memory, and a kernel whose
  result is no output is a temporary.
* ``trace``: cProfile of ``jax.jit(step).trace`` for ours, the cumulative time of
  functional_optim's functions (the per-leaf loop, the scalars, the math, the
  checks, the hyperparameters) and the number of calls: what tracing pays for.
* ``passes``: for the largest leaf of each tree, the leaf-sized kernels of our
  step and optax's with the bytes each reads and writes per element (float32
  operands and output of the leaf's shape), their sum against the algorithm's
  minimum (each input read once, each output written once: ``bench_step``'s
  bytes per element), and the measured step of ours, optax and torch fused on a
  single tensor of that many elements, as GB/s of the minimum traffic.

To measure a change to the library without touching this checkout, copy the
package, edit the copy and run with it first on the path from another directory::

    mkdir -p /tmp/proto && git archive HEAD functional_optim | tar -x -C /tmp/proto
    cd /tmp && PYTHONPATH=/tmp/proto python /path/to/benchmarks/profile_step.py program

    python benchmarks/profile_step.py {program,trace,passes} [--models transformer48,resnet50]
        [--algorithms adam,rmsprop_momentum] [--libraries ours,optax,minimal] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import re
import statistics
import sys
import time

# model_shapes (and through it bench_step and steptiming) from this directory,
# wherever the script runs from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import functional_optim as fo  # noqa: E402
from model_shapes import ALGORITHMS, QUICK_SCALE, describe, make_tree  # noqa: E402
from steptiming import MB, compile_in_phases, jax_runner, log  # noqa: E402


def minimal_adam(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam with torch's formulas, one ``count`` for every leaf and the bias corrections
  computed once per step: per leaf only the three updates (m, v, the param)."""
  def init(params):
    return (jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params=None):
    del params
    count, m, v = state
    t = (count + 1).astype(jnp.float32)
    step_size = lr / (1 - b1 ** t)
    bias_correction2_sqrt = jnp.sqrt(1 - b2 ** t)
    m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), m, grads)
    v = jax.tree.map(lambda v, g: b2 * v + ((1 - b2) * g) * g, v, grads)
    updates = jax.tree.map(
        lambda m, v: (-step_size * m) / (jnp.sqrt(v) / bias_correction2_sqrt + eps), m, v)
    return updates, (count + 1, m, v)

  return optax.GradientTransformation(init, update)


def _make(library: str, algorithm: str):
  """``(transformation, apply_updates)``, or None where the library has no such algorithm."""
  algo = ALGORITHMS[algorithm]
  if library == 'ours':
    return algo.ours(), fo.apply_updates
  if library == 'optax':
    return None if algo.optax is None else (algo.optax(), optax.apply_updates)
  if library == 'minimal':
    return (minimal_adam(), optax.apply_updates) if algorithm == 'adam' else None
  raise ValueError(library)


def _step(tx, apply_updates):
  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state
  return step


def _arrays(tree, scale=1.0):
  return jax.tree.map(lambda s: jnp.full(s.shape, scale, s.dtype), tree)


# The optimized module, read as text ----------------------------------------------------

_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(\S+)\s+([a-z][a-z0-9\-]*)\((.*?)\)(?:,|$)')
_ARRAY = re.compile(r'^([a-z]+\d*)\[([0-9,]*)\]')


_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4,
          's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8, 'c64': 8, 'c128': 16}


def _shape_of(type_text: str):
  match = _ARRAY.match(type_text)
  if not match:
    return None, None
  dims = tuple(int(d) for d in match.group(2).split(',') if d)
  return match.group(1), dims


def leaf_kernels(hlo_text: str, shape: tuple[int, ...]) -> list[dict]:
  """The entry computation's kernels whose output has ``shape``: each one's name, opcode,
  and the bytes per element it reads (operands of ``shape``) and writes."""
  start = hlo_text.index('\nENTRY')
  end = hlo_text.find('\n}', start)
  types = {}
  kernels = []
  for line in hlo_text[start:end].splitlines()[1:]:
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, type_text, opcode, operands = match.groups()
    types[name] = _shape_of(type_text)
    if opcode in ('parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast'):
      continue
    dtype, dims = types[name]
    if dims != shape:
      continue
    reads = 0
    for operand in re.findall(r'%([\w.\-]+)', operands):
      o_dtype, o_dims = types.get(operand, (None, None))
      if o_dims == shape:
        reads += _BYTES.get(o_dtype, 0)
    writes = _BYTES.get(dtype, 0)
    kernels.append({'name': name, 'opcode': opcode, 'reads': reads, 'writes': writes})
  return kernels


# Reports ------------------------------------------------------------------------------

def report_program(trees, algorithms, libraries, scale) -> None:
  print('| tree | algorithm | library | trace s | lower s | compile s | jaxpr eqns '
        '| StableHLO lines | kernels (per leaf) | kernels by opcode | temp MB '
        '| leaf-sized kernels per leaf of the largest shape |')
  print('|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|')
  for tree_name in trees:
    label, tree = make_tree(tree_name, scale)
    leaves = jax.tree.leaves(tree)
    largest = max(leaves, key=lambda s: np.prod(s.shape)).shape
    params, grads = _arrays(tree), _arrays(tree, 0.01)
    for algorithm in algorithms:
      for library in libraries:
        made = _make(library, algorithm)
        if made is None:
          continue
        tx, apply_updates = made
        state = tx.init(params)
        c = compile_in_phases(_step(tx, apply_updates), (params, grads, state),
                              donate_argnums=(0, 2))
        # The kernels over leaves of the largest shape, per such leaf, by name stem.
        same = sum(1 for s in leaves if s.shape == largest)
        stems = collections.Counter(re.sub(r'\.\d+$', '', k['name'])
                                    for k in leaf_kernels(c.compiled.as_text(), largest))
        big = [f'{stem} ×{count / same:g}' for stem, count in stems.most_common()]
        opcodes = ', '.join(f'{k} {v}' for k, v in c.kernels.most_common())
        print(f'| {label} | {algorithm} | {library} | {c.trace_seconds:.2f} | '
              f'{c.lower_seconds:.2f} | {c.compile_seconds:.2f} | {c.jaxpr_equations} | '
              f'{c.stablehlo_lines} | {c.kernel_count} ({c.kernel_count / len(leaves):.2f}) | '
              f'{opcodes} | {c.memory.temp / MB:.1f} | '
              f'{", ".join(big)} |', flush=True)
        del state, c


def report_trace(trees, algorithms, scale, top: int = 25) -> None:
  for tree_name in trees:
    label, tree = make_tree(tree_name, scale)
    params, grads = _arrays(tree), _arrays(tree, 0.01)
    for algorithm in algorithms:
      tx, apply_updates = _make('ours', algorithm)
      state = tx.init(params)
      jax.clear_caches()
      jitted = jax.jit(_step(tx, apply_updates), donate_argnums=(0, 2))
      profile = cProfile.Profile()
      start = time.perf_counter()
      profile.enable()
      traced = jitted.trace(params, grads, state)
      profile.disable()
      seconds = time.perf_counter() - start
      stats = pstats.Stats(profile)
      rows = []
      for (filename, line, function), (_, calls, _, cumulative, _) in stats.stats.items():
        if 'functional_optim' in filename:
          where = filename.split('functional_optim/')[-1]
          rows.append((cumulative, calls, f'{where}:{line} {function}'))
      rows.sort(reverse=True)
      print(f'### {label}, {algorithm}: trace {seconds:.2f} s under cProfile '
            f'({len(traced.jaxpr.eqns)} jaxpr equations)\n')
      print('| functional_optim function | calls | cumulative s | share |')
      print('|---|---:|---:|---:|')
      for cumulative, calls, where in rows[:top]:
        print(f'| `{where}` | {calls} | {cumulative:.3f} | {100 * cumulative / seconds:.0f}% |')
      print()


def _time(run, repeats: int = 15) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def report_passes(trees, algorithms, scale, repeats: int) -> None:
  print('| tree (largest leaf) | algorithm | library | leaf-sized kernels: reads + writes, '
        'B/element | total B/element | minimum | passes ÷ minimum | one tensor: ms | GB/s '
        'of the minimum |')
  print('|---|---|---|---|---:|---:|---:|---:|---:|')
  for tree_name in trees:
    label, tree = make_tree(tree_name, scale)
    shape = max(jax.tree.leaves(tree), key=lambda s: np.prod(s.shape)).shape
    n = int(np.prod(shape))
    one = {'w': jax.ShapeDtypeStruct(shape, jnp.float32)}
    for algorithm in algorithms:
      algo = ALGORITHMS[algorithm]
      rng = np.random.default_rng(0)
      host_p = rng.standard_normal(shape, dtype=np.float32)
      host_g = rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-2)
      for library in ('ours', 'optax', 'torch fused'):
        if library == 'torch fused':
          if not algo.torch_fused:
            continue
          t = torch.from_numpy(host_p.copy()).requires_grad_()
          t.grad = torch.from_numpy(host_g)
          opt = algo.torch([t], fused=True)
          opt.step()
          seconds = _time(opt.step, repeats)
          print(f'| {label} {shape} | {algorithm} | torch fused | one kernel | '
                f'{algo.bytes_per_element} | {algo.bytes_per_element} | 1.00 | '
                f'{seconds * 1e3:.2f} | {algo.bytes_per_element * n / seconds / 1e9:.1f} |')
          del opt, t
          continue
        made = _make(library, algorithm)
        if made is None:
          continue
        tx, apply_updates = made
        params, grads = {'w': jnp.asarray(host_p)}, {'w': jnp.asarray(host_g)}
        state = tx.init(params)
        c = compile_in_phases(_step(tx, apply_updates), (params, grads, state),
                              donate_argnums=(0, 2))
        kernels = leaf_kernels(c.compiled.as_text(), shape)
        total = sum(k['reads'] + k['writes'] for k in kernels)
        run = jax_runner(c.compiled, params, grads, state)
        seconds = _time(run, repeats)
        cells = ', '.join(f'{k["name"]} {k["reads"]}+{k["writes"]}' for k in kernels)
        print(f'| {label} {shape} | {algorithm} | {library} | {cells} | {total} | '
              f'{algo.bytes_per_element} | {total / algo.bytes_per_element:.2f} | '
              f'{seconds * 1e3:.2f} | {algo.bytes_per_element * n / seconds / 1e9:.1f} |',
              flush=True)
        del run, c, state, params, grads
    del one


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('report', choices=('program', 'trace', 'passes'))
  parser.add_argument('--models', default='transformer48,resnet50')
  parser.add_argument('--algorithms', default='adam,sgd,rmsprop_momentum,adadelta,rprop')
  parser.add_argument('--libraries', default='ours,optax,minimal')
  parser.add_argument('--quick', action='store_true',
                      help=f'leaves / {QUICK_SCALE} (the same counts)')
  parser.add_argument('--repeats', type=int, default=15, help='passes: timed steps')
  args = parser.parse_args(argv)
  trees = [t for t in args.models.split(',') if t]
  algorithms = [a for a in args.algorithms.split(',') if a]
  scale = QUICK_SCALE if args.quick else 1
  log(f'functional_optim from {os.path.dirname(fo.__file__)}; trees: '
      + ', '.join(f'{t} {describe(make_tree(t, scale)[1])}' for t in trees))
  print(f'functional_optim: `{os.path.dirname(fo.__file__)}`; jax {jax.__version__}, '
        f'optax {optax.__version__}, torch {torch.__version__}\n')
  if args.report == 'program':
    report_program(trees, algorithms, [lib for lib in args.libraries.split(',') if lib],
                   scale)
  elif args.report == 'trace':
    report_trace(trees, algorithms, scale)
  else:
    report_passes(trees, algorithms, scale, args.repeats)


if __name__ == '__main__':
  main()
