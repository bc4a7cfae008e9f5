"""Optimizer steps on the parameter trees of real models: our default step against
optax's same algorithm and torch.optim's for-loop, foreach and fused, in one process.

The trees are written from the models' public architectures (no weights are
loaded: the values are random), float32, in flax's layouts (a Dense kernel is
``(in, out)``, a Conv kernel ``(kh, kw, in, out)``), with the names of the usual
implementations. What counts as a leaf is what an optimizer updates: the params
of the model's ``torch.nn.Module`` (``model.parameters()``), once each.

* ``gpt2``: GPT-2 small (HF ``GPT2LMHeadModel``), 148 leaves, 124,439,808 params.
  Token (50257x768) and position (1024x768) embeddings; 12 blocks of 12 leaves
  (ln_1, attn.c_attn (768x2304), attn.c_proj, ln_2, mlp.c_fc (768x3072),
  mlp.c_proj, each a weight and a bias); ln_f. The LM head is tied to the token
  embedding, so it is the same leaf: counted once, as ``parameters()`` yields it.
* ``resnet50``: torchvision's ResNet-50, 161 leaves, 25,557,032 params. The stem
  conv (7x7x3x64, no bias) and its BatchNorm; 16 bottlenecks ([3, 4, 6, 3]) of 3
  convs and 3 BatchNorms; the first bottleneck of each stage has a projection
  shortcut (1x1 conv + BatchNorm); the fc layer (2048x1000 and a bias). Each
  BatchNorm is 2 leaves, its scale and bias: its running mean and variance are
  buffers, not params, and no optimizer sees them (3 + 16·9 + 4·3 + 2 = 161).
* ``vit_b16``: ViT-B/16 (timm's ``vit_base_patch16_224``, torchvision's
  ``vit_b_16``), 152 leaves, 86,567,656 params. cls token, position embedding
  (197x768), patch embedding (a 16x16x3x768 conv with a bias); 12 blocks of 12
  leaves (norm1, attn.qkv (768x2304), attn.proj, norm2, mlp.fc1, mlp.fc2); the
  final norm; a 1000-class head (4 + 144 + 2 + 2 = 152).
* ``transformer48``: a 48-layer transformer with d=256, written unscanned (each
  layer its own leaves, as a Python loop over layers makes them), separate q, k,
  v and o projections and a 1024-wide MLP, 16 leaves a layer (4 projections, 2
  LayerNorms, 2 MLP layers, each 2 leaves): 768 leaves, 37,908,480 params, and
  no embeddings (the leaf count is the layers').
* ``1x16M``, ``200x80k``, ``2000small``: the synthetic layouts of
  ``bench_step.py`` (one 4000x4000 tensor; 200 leaves of distinct sizes around
  80k; 2000 leaves of distinct sizes from 1k to 10k elements), built by its code.

``python benchmarks/model_shapes.py --list`` prints each tree's counts (and checks
them against the numbers above).

What it times, per tree and algorithm (``ALGORITHMS``):

* ours: the default implementation (``fo.adam(lr=...)`` with no
  ``implementation=``; ``loop`` on CPU) in a jitted step
  ``params, state = step(params, grads, state)`` that runs ``tx.update(grads,
  state, params)`` and ``fo.apply_updates``, params and state donated, grads fixed;
* optax: its same algorithm in the same step (``optax.apply_updates``), where
  optax has one (no ASGD). optax's Adagrad starts its accumulator at 0.1 and uses
  another eps: a speed comparison only;
* torch.optim's for-loop (``foreach=False``), foreach and fused (``fused=True``:
  Adam, AdamW, SGD and Adagrad on CPU) ``opt.step()`` over tensors with ``.grad``
  set once, torch's default thread count.

How. All the cases of one algorithm live in one process at once and are timed
in interleaved rounds (``steptiming.interleave``): each round runs every case
once, after a short sleep and an untimed step, as a block of timed steps, in an
order that rotates from round to round. A case's time is the median of all its
timed steps; a ratio ``ours ÷ reference`` is the median over rounds of the two
round medians' ratio (a pair timed seconds apart), shown with the 25th..75th
percentiles of those per-round ratios: how much the load moved it. Below 1, ours
is faster. Trace, lowering and XLA compile time are measured on their own
(``jax.jit(step).trace``, ``.lower()``, ``.compile()``, jax's caches cleared before
each, as in a fresh process), ours and optax alternately ``--compile-repeats``
times (median), with the optimized program's size: the entry computation's
kernels (``fusion``, ``copy``, ...: on XLA:CPU each runs as a thunk of its own) per
leaf. Memory is the compiled step's ``memory_analysis()``: ``temp`` (scratch) and
``extra = temp + outputs - aliased``, what a donated step holds beyond its
arguments; the target is extra <= one leaf (the largest).

One tree at a time: its host arrays, then per algorithm its cases, freed before
the next algorithm (GPT-2 with Adam: ~9 GB at once, params, grads and state
for ours, optax and three torch optimizers).

    python benchmarks/model_shapes.py [--quick] [--models gpt2,resnet50,...]
        [--algorithms adam,sgd,...] [--torch for-loop,foreach,fused | none]
        [--rounds 10] [--block 3] [--gap 0.05] [--compile-repeats 1]
        [--torch-threads N] [--json results.json] [--list]

``--quick`` divides every leaf's largest dimension by 16 (the synthetic layouts:
every leaf's size; leaf counts and shapes' ranks stay, and so does the compile
time) and times 3 rounds of 2 steps: a smoke run of a few minutes per tree (the
``2000small`` layout compiles for minutes at any size). Progress goes to stderr,
the tables to stdout; ``--json`` also writes every measurement (for plots).
"""

from __future__ import annotations

import os

# On a GPU torch shares the device with XLA: no preallocation of most of its memory.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import functional_optim as fo  # noqa: E402
from functional_optim.kernels import dispatch  # noqa: E402

# This directory is on sys.path when the script runs.
from bench_step import ALGORITHMS as STEP_ALGORITHMS  # noqa: E402
from bench_step import QUICK_SCALE, SCALAR_SLACK, Algorithm, _optax, make_layout  # noqa: E402
from steptiming import (  # noqa: E402
    MB, Compiled, Timed, compile_in_phases, interleave, jax_runner, log, paired_ratio,
    release_memory)
from steptiming import choices as _list  # noqa: E402


# Trees --------------------------------------------------------------------------------

def _f32(*shape: int) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def _dense(d_in: int, d_out: int, bias: bool = True) -> dict:
  """flax's Dense: ``kernel`` is ``(in, out)``."""
  return {'kernel': _f32(d_in, d_out), **({'bias': _f32(d_out)} if bias else {})}


def _norm(d: int) -> dict:
  """A LayerNorm or BatchNorm: ``scale`` and ``bias`` (BatchNorm's running statistics
  are buffers, not params)."""
  return {'scale': _f32(d), 'bias': _f32(d)}


def _conv(kh: int, kw: int, c_in: int, c_out: int, bias: bool = False) -> dict:
  """flax's Conv: ``kernel`` is ``(kh, kw, in, out)``."""
  return {'kernel': _f32(kh, kw, c_in, c_out), **({'bias': _f32(c_out)} if bias else {})}


def gpt2_small() -> dict:
  d, vocab, positions, hidden = 768, 50257, 1024, 3072

  def block():
    return {'ln_1': _norm(d),
            'attn': {'c_attn': _dense(d, 3 * d), 'c_proj': _dense(d, d)},
            'ln_2': _norm(d),
            'mlp': {'c_fc': _dense(d, hidden), 'c_proj': _dense(hidden, d)}}

  # The LM head is the token embedding (tied): no leaf of its own.
  return {'wte': _f32(vocab, d), 'wpe': _f32(positions, d),
          'h': {f'{i:02d}': block() for i in range(12)}, 'ln_f': _norm(d)}


def resnet50() -> dict:
  tree = {'conv1': _conv(7, 7, 3, 64), 'bn1': _norm(64)}
  c_in = 64
  for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 1):
    layer = {}
    for b in range(blocks):
      c_out = 4 * width
      block = {'conv1': _conv(1, 1, c_in, width), 'bn1': _norm(width),
               'conv2': _conv(3, 3, width, width), 'bn2': _norm(width),
               'conv3': _conv(1, 1, width, c_out), 'bn3': _norm(c_out)}
      if b == 0:  # The first block of a stage changes the width: a projection shortcut.
        block['downsample'] = {'conv': _conv(1, 1, c_in, c_out), 'bn': _norm(c_out)}
      layer[str(b)] = block
      c_in = c_out
    tree[f'layer{stage}'] = layer
  tree['fc'] = _dense(2048, 1000)
  return tree


def vit_b16() -> dict:
  d, hidden, patch, tokens = 768, 3072, 16, 197

  def block():
    return {'norm1': _norm(d), 'attn': {'qkv': _dense(d, 3 * d), 'proj': _dense(d, d)},
            'norm2': _norm(d), 'mlp': {'fc1': _dense(d, hidden), 'fc2': _dense(hidden, d)}}

  return {'cls_token': _f32(1, 1, d), 'pos_embed': _f32(1, tokens, d),
          'patch_embed': _conv(patch, patch, 3, d, bias=True),
          'blocks': {f'{i:02d}': block() for i in range(12)},
          'norm': _norm(d), 'head': _dense(d, 1000)}


def transformer48() -> dict:
  d, hidden = 256, 1024

  def layer():
    return {'ln1': _norm(d),
            'attn': {'q': _dense(d, d), 'k': _dense(d, d), 'v': _dense(d, d),
                     'o': _dense(d, d)},
            'ln2': _norm(d), 'mlp': {'fc1': _dense(d, hidden), 'fc2': _dense(hidden, d)}}

  return {'layers': {f'{i:02d}': layer() for i in range(48)}}


@dataclasses.dataclass(frozen=True)
class Model:
  label: str
  build: Callable[[], dict]
  leaves: int
  params: int


MODELS = {
    'gpt2': Model('GPT-2 small', gpt2_small, 148, 124_439_808),
    'resnet50': Model('ResNet-50', resnet50, 161, 25_557_032),
    'vit_b16': Model('ViT-B/16', vit_b16, 152, 86_567_656),
    'transformer48': Model('48-layer transformer, d=256, unscanned', transformer48, 768,
                           37_908_480),
}
LAYOUTS = ('1x16M', '200x80k', '2000small')
ALL_TREES = tuple(MODELS) + LAYOUTS


def _scaled(shape: tuple[int, ...], scale: int) -> tuple[int, ...]:
  """``shape`` with its largest dimension divided by ``scale`` (rounded up)."""
  if scale == 1 or not shape:
    return shape
  i = max(range(len(shape)), key=lambda k: shape[k])
  return shape[:i] + (-(-shape[i] // scale),) + shape[i + 1:]


def make_tree(name: str, scale: int = 1) -> tuple[str, Any]:
  """``(label, tree of jax.ShapeDtypeStruct)``; ``scale`` > 1 shrinks the leaves, not
  their number."""
  if name in MODELS:
    tree = jax.tree.map(lambda s: _f32(*_scaled(s.shape, scale)), MODELS[name].build())
    return MODELS[name].label, tree
  layout = make_layout(name, scale)
  return layout.label, {f'leaf{i:05d}': _f32(*s) for i, s in enumerate(layout.shapes)}


def describe(tree) -> dict[str, int]:
  leaves = jax.tree.leaves(tree)
  sizes = [math.prod(leaf.shape) for leaf in leaves]
  return {'leaves': len(leaves), 'params': sum(sizes), 'largest': max(sizes),
          'shapes': len({leaf.shape for leaf in leaves})}


def list_trees() -> None:
  print('| tree | leaves | params | distinct shapes | largest leaf | quick: params |')
  print('|---|---:|---:|---:|---:|---:|')
  for name in ALL_TREES:
    label, tree = make_tree(name)
    d = describe(tree)
    if name in MODELS:
      model = MODELS[name]
      assert (d['leaves'], d['params']) == (model.leaves, model.params), (name, d)
    quick = describe(make_tree(name, QUICK_SCALE)[1])
    print(f'| {label} (`{name}`) | {d["leaves"]} | {d["params"]:,} | {d["shapes"]} '
          f'| {d["largest"]:,} | {quick["params"]:,} |')


# Algorithms ---------------------------------------------------------------------------

ALGORITHMS: dict[str, Algorithm] = {
    **STEP_ALGORITHMS,
    'rmsprop_momentum': Algorithm(
        lambda **kw: fo.rmsprop(lr=1e-2, momentum=0.9, **kw),
        lambda t, **kw: torch.optim.RMSprop(t, lr=1e-2, momentum=0.9, **kw),
        _optax('rmsprop', 1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.9),
        'p r/w, g r, square_avg r/w, momentum_buffer r/w', 28),
    'rmsprop_centered': Algorithm(
        lambda **kw: fo.rmsprop(lr=1e-2, centered=True, **kw),
        lambda t, **kw: torch.optim.RMSprop(t, lr=1e-2, centered=True, **kw),
        _optax('rmsprop', 1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False, centered=True),
        'p r/w, g r, square_avg r/w, grad_avg r/w', 28),
    'sgd_nesterov': Algorithm(
        lambda **kw: fo.sgd(lr=1e-3, momentum=0.9, nesterov=True, **kw),
        lambda t, **kw: torch.optim.SGD(t, lr=1e-3, momentum=0.9, nesterov=True, **kw),
        _optax('sgd', 1e-3, momentum=0.9, nesterov=True), 'p r/w, g r, buf r/w', 20,
        torch_fused=True),
    'sgd_plain': Algorithm(
        lambda **kw: fo.sgd(lr=1e-3, **kw),
        lambda t, **kw: torch.optim.SGD(t, lr=1e-3, **kw),
        _optax('sgd', 1e-3), 'p r/w, g r', 12, torch_fused=True),
    'adam_amsgrad': Algorithm(
        lambda **kw: fo.adam(lr=1e-3, amsgrad=True, **kw),
        lambda t, **kw: torch.optim.Adam(t, lr=1e-3, amsgrad=True, **kw),
        _optax('amsgrad', 1e-3), 'p r/w, g r, m r/w, v r/w, v_max r/w', 36,
        torch_fused=True),
}
#: Every elementwise algorithm, with the option that changes its program the most
#: (RMSprop's momentum buffer); the other options on request.
DEFAULT_ALGORITHMS = ('sgd', 'adam', 'adamw', 'adadelta', 'adagrad', 'adamax', 'asgd',
                      'nadam', 'radam', 'rmsprop', 'rmsprop_momentum', 'rprop')
TORCH_VARIANTS = {'for-loop': {'foreach': False}, 'foreach': {'foreach': True},
                  'fused': {'fused': True}}


# Measuring ----------------------------------------------------------------------------

#: Slack per leaf on "one leaf" in the memory check: a step's 0-d outputs and copies
#: (steps, per-leaf scalars) are a few bytes each, but XLA:CPU aligns every buffer.
LEAF_SLACK = 256


def scalar_slack(leaves: int) -> int:
  return SCALAR_SLACK + LEAF_SLACK * leaves


@dataclasses.dataclass
class Result:
  """Everything measured for one algorithm on one tree."""
  tree: str
  label: str
  algorithm: str
  elements: int
  largest_leaf_bytes: int
  leaves: int
  timed: dict[str, Timed]
  compiles: dict[str, list[Compiled]]
  notes: dict[str, str] = dataclasses.field(default_factory=dict)

  def median_compile(self, library: str, phase: str) -> float | None:
    runs = self.compiles.get(library)
    if not runs:
      return None
    return statistics.median(getattr(r, phase) for r in runs)

  def ratio(self, case: str, reference: str) -> tuple[float, float, float] | None:
    """Median and quartiles of the per-round ratios ``case / reference``."""
    a, b = self.timed.get(case), self.timed.get(reference)
    if a is None or b is None or not a.rounds or not b.rounds:
      return None
    ratios = sorted(x / y for x, y in zip(a.round_medians(), b.round_medians(), strict=True))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return paired_ratio(a, b), quartiles[0], quartiles[2]


def _step(tx, apply_updates):
  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state
  return step


def measure_algorithm(name: str, label: str, algorithm: str, treedef, host_params,
                      host_grads, jax_grads, torch_grads, args) -> Result:
  algo = ALGORITHMS[algorithm]
  sizes = [p.size for p in host_params]
  result = Result(name, label, algorithm, sum(sizes), 4 * max(sizes), len(sizes), {}, {})

  def params():  # Copies: the step donates its params.
    return treedef.unflatten([jnp.array(p) for p in host_params])

  libraries = [('ours', algo.ours, fo.apply_updates)]
  if algo.optax is not None and not args.no_optax:
    libraries.append(('optax', algo.optax, optax.apply_updates))
  else:
    result.notes['optax'] = 'optax has no such algorithm' if algo.optax is None else 'off'
  built = {}
  for library, make, _ in libraries:
    tx = make()
    p = params()
    built[library] = (tx, p, tx.init(p))
  # Compiled in turns, ours and optax, so that a change of load hits both.
  for _ in range(args.compile_repeats):
    for library, _, apply_updates in libraries:
      tx, p, state = built[library]
      compiled = compile_in_phases(_step(tx, apply_updates), (p, jax_grads, state),
                                   donate_argnums=(0, 2))
      result.compiles.setdefault(library, []).append(compiled)
      log(f'  {algorithm} {library}: trace {compiled.trace_seconds:.2f} s, lower '
          f'{compiled.lower_seconds:.2f} s, compile {compiled.compile_seconds:.2f} s, '
          f'{compiled.kernel_count} kernels')
  cases = []
  for library, _, _ in libraries:
    tx, p, state = built.pop(library)
    executable = result.compiles[library][-1].compiled
    cases.append(Timed(library, jax_runner(executable, p, jax_grads, state)))
    del tx, p, state
  for variant in args.torch:
    flags = TORCH_VARIANTS[variant]
    if variant == 'fused' and not algo.torch_fused:
      result.notes[f'torch {variant}'] = 'torch has none on CPU'
      continue
    tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in host_params]
    for t, g in zip(tensors, torch_grads, strict=True):
      t.grad = g  # The same gradient tensors for every torch optimizer: they only read them.
    try:
      opt = algo.torch(tensors, **flags)
      opt.step()  # Raises here where an implementation does not exist.
    except (RuntimeError, ValueError, TypeError) as e:
      log(f'  {algorithm} torch {variant}: unavailable ({e})')
      result.notes[f'torch {variant}'] = f'unavailable: {e}'
      continue
    cases.append(Timed(f'torch {variant}', opt.step))
    del opt, tensors
  log(f'  {algorithm}: {args.rounds} rounds of {len(cases)} cases')
  interleave(cases, args.rounds, args.block, warmup=1, gap=args.gap)
  for case in cases:
    case.run = None  # The buffers, executables and torch optimizers go with it.
    result.timed[case.name] = case
  for runs in result.compiles.values():
    for r in runs:
      r.compiled = None
  release_memory()
  log('  ' + ', '.join(f'{c.name} {c.seconds * 1e3:.2f} ms' for c in cases))
  return result


def measure_tree(name: str, algorithms: list[str], args) -> list[Result]:
  label, tree = make_tree(name, QUICK_SCALE if args.quick else 1)
  leaves, treedef = jax.tree.flatten(tree)
  d = describe(tree)
  log(f'{label}: {d["leaves"]} leaves, {d["params"]:,} params, {d["shapes"]} distinct shapes')
  rng = np.random.default_rng(0)
  host_params = [rng.standard_normal(leaf.shape, dtype=np.float32) for leaf in leaves]
  host_grads = [rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(1e-2)
                for leaf in leaves]
  jax_grads = treedef.unflatten([jnp.asarray(g) for g in host_grads])
  torch_grads = [torch.from_numpy(g) for g in host_grads]
  results = []
  for algorithm in algorithms:
    log(f'{label}: {algorithm}')
    results.append(measure_algorithm(name, label, algorithm, treedef, host_params,
                                     host_grads, jax_grads, torch_grads, args))
  del jax_grads, torch_grads, host_params, host_grads
  release_memory()
  return results


# Output -------------------------------------------------------------------------------

def _ms(result: Result, case: str) -> str:
  timed = result.timed.get(case)
  if timed is None or timed.seconds is None:
    note = result.notes.get(case, '')
    return 'n/a' if note.startswith(('torch has none', 'optax has')) else '-'
  return f'{timed.seconds * 1e3:.2f}'


def _ratio_cell(ratio) -> str:
  if ratio is None:
    return '-'
  median, low, high = ratio
  return f'{median:.2f} [{low:.2f}, {high:.2f}]'


def torch_reference(result: Result) -> tuple[str | None, str]:
  """torch's fused step where it has one, else its foreach step."""
  for case, mark in (('torch fused', ''), ('torch foreach', ' (foreach)')):
    if case in result.timed:
      return case, mark
  return None, ''


def print_tree_tables(results: list[Result]) -> None:
  first = results[0]
  print(f'### {first.label}: {first.leaves} leaves, {first.elements:,} float32 params\n')
  print('Step time (median ms). Ratios: ours ÷ the reference, the median of per-round '
        'ratios [25th, 75th percentile]; below 1, ours is faster.\n')
  print('| algorithm | ours | optax | torch for-loop | torch foreach | torch fused '
        '| ours ÷ optax | ours ÷ torch fused | ours GB/s |')
  print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
  for r in results:
    reference, mark = torch_reference(r)
    vs_torch = _ratio_cell(r.ratio('ours', reference)) + mark if reference else '-'
    ours = r.timed.get('ours')
    gbps = (ALGORITHMS[r.algorithm].bytes_per_element * r.elements / ours.seconds / 1e9
            if ours and ours.seconds else None)
    print(f'| {r.algorithm} | {_ms(r, "ours")} | {_ms(r, "optax")} | '
          f'{_ms(r, "torch for-loop")} | {_ms(r, "torch foreach")} | {_ms(r, "torch fused")} | '
          f'{_ratio_cell(r.ratio("ours", "optax"))} | {vs_torch} | '
          f'{"-" if gbps is None else f"{gbps:.1f}"} |')
  print()
  print('Trace, lowering and XLA compile (s, median of the repeats; caches cleared before '
        'each); kernels: the optimized entry computation\'s thunks per leaf.\n')
  print('| algorithm | ours trace / lower / compile | optax trace / lower / compile '
        '| ours ÷ optax, all three | ours ÷ optax, compile | kernels per leaf, ours / optax '
        '| jaxpr equations, ours / optax |')
  print('|---|---:|---:|---:|---:|---:|---:|')
  for r in results:
    cells = []
    for library in ('ours', 'optax'):
      if library not in r.compiles:
        cells.append('-')
        continue
      cells.append(' / '.join(f'{r.median_compile(library, phase):.2f}' for phase in
                              ('trace_seconds', 'lower_seconds', 'compile_seconds')))
    both = 'optax' in r.compiles

    def vs_optax(phase, r=r):
      return f'{r.median_compile("ours", phase) / r.median_compile("optax", phase):.2f}'

    total = vs_optax('total_seconds') if both else '-'
    xla = vs_optax('compile_seconds') if both else '-'
    kernels = ' / '.join(f'{r.compiles[lib][-1].kernel_count / r.leaves:.2f}'
                         for lib in ('ours', 'optax') if lib in r.compiles)
    equations = ' / '.join(str(r.compiles[lib][-1].jaxpr_equations)
                           for lib in ('ours', 'optax') if lib in r.compiles)
    print(f'| {r.algorithm} | {cells[0]} | {cells[1]} | {total} | {xla} | {kernels} '
          f'| {equations} |')
  print()
  print('Memory of a donated step (`memory_analysis`, MB). extra = temp + outputs − '
        'aliased: what the step holds beyond params, grads and state. Target: ours ≤ one '
        f'leaf (the largest), plus {SCALAR_SLACK // 1024} KiB and {LEAF_SLACK} B a leaf for '
        '0-d outputs and copies.\n')
  print('| algorithm | ours temp | optax temp | ours extra | optax extra | one leaf '
        '| ours extra ≤ one leaf |')
  print('|---|---:|---:|---:|---:|---:|---|')
  for r in results:
    memories = {lib: r.compiles[lib][-1].memory for lib in r.compiles}

    def cell(lib, attr, memories=memories):
      memory = memories.get(lib)
      return '-' if memory is None else f'{getattr(memory, attr) / MB:.1f}'

    ours = memories.get('ours')
    ok = '-' if ours is None else (
        'yes' if ours.extra <= r.largest_leaf_bytes + scalar_slack(r.leaves) else 'no')
    print(f'| {r.algorithm} | {cell("ours", "temp")} | {cell("optax", "temp")} | '
          f'{cell("ours", "extra")} | {cell("optax", "extra")} | '
          f'{r.largest_leaf_bytes / MB:.1f} | {ok} |')
  print()
  notes = sorted({f'{k}: {v}' for r in results for k, v in r.notes.items()
                  if not v.startswith(('torch has none', 'optax has no'))})
  if notes:
    print('Notes: ' + '; '.join(notes) + '\n')


def _summary(title: str, results: list[Result], trees: list[str], algorithms: list[str],
             cell: Callable[[Result], float | None], target: float) -> None:
  labels = {r.tree: r.label for r in results}
  print(f'{title}\n')
  print('| algorithm | ' + ' | '.join(labels[t] for t in trees if t in labels)
        + f' | all ≤ {target:g} |')
  print('|---|' + '---:|' * len([t for t in trees if t in labels]) + '---|')
  for algorithm in algorithms:
    row, every, any_value = [], True, False
    for tree in trees:
      if tree not in labels:
        continue
      match = [r for r in results if r.tree == tree and r.algorithm == algorithm]
      value = cell(match[0]) if match else None
      if value is None:
        row.append('-')
        continue
      any_value = True
      every &= value <= target
      row.append(f'{value:.2f}')
    if any_value:
      print(f'| {algorithm} | ' + ' | '.join(row) + f' | {"yes" if every else "no"} |')
  print()


def print_summary(results: list[Result], trees: list[str], algorithms: list[str]) -> None:
  print('## Summary: the targets\n')

  def step_vs_optax(r):
    ratio = r.ratio('ours', 'optax')
    return None if ratio is None else ratio[0]

  def compile_vs_optax(r):
    if 'optax' not in r.compiles:
      return None
    return r.median_compile('ours', 'total_seconds') / r.median_compile('optax', 'total_seconds')

  def step_vs_fused(r):
    ratio = r.ratio('ours', 'torch fused')
    return None if ratio is None else ratio[0]

  def extra_over_leaf(r):
    memory = r.compiles['ours'][-1].memory
    if memory is None:
      return None
    return max(0, memory.extra - scalar_slack(r.leaves)) / r.largest_leaf_bytes

  _summary('Step time, ours ÷ optax (target ≤ 1.0):', results, trees, algorithms,
           step_vs_optax, 1.0)
  _summary('Trace + lowering + compile, ours ÷ optax (target ≤ 1.0, aim 0.5):', results,
           trees, algorithms, compile_vs_optax, 1.0)
  _summary('Step time, ours ÷ torch fused (target ≤ 1.0 for Adam, AdamW, SGD):', results,
           trees, [a for a in algorithms if ALGORITHMS[a].torch_fused], step_vs_fused, 1.0)
  _summary('Extra memory of a donated step, in leaves ((extra − the 0-d slack) ÷ the '
           'largest leaf; target ≤ 1.0):', results, trees, algorithms, extra_over_leaf, 1.0)


def to_json(results: list[Result], header: dict) -> dict:
  rows = []
  for r in results:
    rows.append({
        'tree': r.tree, 'label': r.label, 'algorithm': r.algorithm, 'leaves': r.leaves,
        'elements': r.elements, 'largest_leaf_bytes': r.largest_leaf_bytes,
        'bytes_per_element': ALGORITHMS[r.algorithm].bytes_per_element,
        'times_s': {k: t.rounds for k, t in r.timed.items()},
        'median_s': {k: t.seconds for k, t in r.timed.items()},
        'compile': {lib: [{'trace_s': c.trace_seconds, 'lower_s': c.lower_seconds,
                           'compile_s': c.compile_seconds,
                           'jaxpr_equations': c.jaxpr_equations,
                           'stablehlo_lines': c.stablehlo_lines,
                           'kernels': dict(c.kernels),
                           'memory': None if c.memory is None else dataclasses.asdict(c.memory)}
                          for c in runs] for lib, runs in r.compiles.items()},
        'notes': r.notes})
  return {'header': header, 'results': rows}


# Main ---------------------------------------------------------------------------------

def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help=f'leaves / {QUICK_SCALE} (same counts), 3 rounds of 2 steps')
  parser.add_argument('--models', default=','.join(ALL_TREES),
                      help=f'comma-separated, from {", ".join(ALL_TREES)}')
  parser.add_argument('--algorithms', default=','.join(DEFAULT_ALGORITHMS),
                      help=f'comma-separated, from {", ".join(ALGORITHMS)}')
  parser.add_argument('--torch', default=','.join(TORCH_VARIANTS),
                      help='torch variants, comma-separated, or "none"')
  parser.add_argument('--no-optax', action='store_true', help='leave optax out')
  parser.add_argument('--rounds', type=int, default=None, help='default 10 (--quick 3)')
  parser.add_argument('--block', type=int, default=None,
                      help='timed steps per case and round; default 3 (--quick 2)')
  parser.add_argument('--gap', type=float, default=0.05,
                      help='seconds of sleep before each case\'s turn (thread pools settle)')
  parser.add_argument('--compile-repeats', type=int, default=1,
                      help='traces and compiles per library (median); default 1')
  parser.add_argument('--torch-threads', type=int, default=0,
                      help="torch.set_num_threads; 0 (default) keeps torch's default")
  parser.add_argument('--json', default=None, help='also write every measurement here')
  parser.add_argument('--list', action='store_true', help='print the trees and exit')
  args = parser.parse_args(argv)
  if args.list:
    list_trees()
    return
  trees = _list(args.models, ALL_TREES, 'model')
  algorithms = _list(args.algorithms, ALGORITHMS, 'algorithm')
  args.torch = [] if args.torch == 'none' else _list(args.torch, TORCH_VARIANTS, 'torch variant')
  args.rounds = args.rounds or (3 if args.quick else 10)
  args.block = args.block or (2 if args.quick else 3)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)

  begin = time.perf_counter()
  device = jax.devices()[0]
  header = {
      'device': f'{jax.default_backend()} {device.device_kind}', 'cpus': os.cpu_count(),
      'torch_threads': torch.get_num_threads(), 'jax': jax.__version__,
      'optax': optax.__version__, 'torch': torch.__version__,
      'python': sys.version.split()[0], 'quick': args.quick, 'rounds': args.rounds,
      'block': args.block, 'default_implementation': dispatch.default_implementation(),
      'load_average_start': os.getloadavg()}
  print('# model_shapes: optimizer steps on real models\' parameter trees\n')
  print(f'- device: jax backend `{jax.default_backend()}`, `{device.device_kind}`; '
        f'{os.cpu_count()} CPUs; torch with {torch.get_num_threads()} threads')
  print(f'- versions: jax {jax.__version__}, optax {optax.__version__}, torch '
        f'{torch.__version__}, python {header["python"]}')
  sizes = f'quick (largest dimension of each leaf / {QUICK_SCALE})' if args.quick else 'full'
  print(f'- sizes: {sizes}; {args.rounds} interleaved rounds of 1 untimed + {args.block} '
        'timed steps per case')
  print(f'- ours: the default implementation, `{header["default_implementation"]}`; '
        'load average at start: ' + ', '.join(f'{x:.2f}' for x in os.getloadavg()) + '\n')
  sys.stdout.flush()
  results = []
  for tree in trees:
    tree_results = measure_tree(tree, algorithms, args)
    print_tree_tables(tree_results)
    sys.stdout.flush()
    results += tree_results
  print_summary(results, trees, algorithms)
  header['load_average_end'] = os.getloadavg()
  header['seconds'] = time.perf_counter() - begin
  print(f'Total run time: {header["seconds"]:.0f} s; load average at the end: '
        + ', '.join(f'{x:.2f}' for x in os.getloadavg()) + '.')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(to_json(results, header), f, indent=1)


if __name__ == '__main__':
  main()
