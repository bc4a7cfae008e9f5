"""Optimizer step time: every implementation and params layout of ours against optax
and torch.optim's for-loop, foreach and fused optimizers, all measured in this run on
this machine.

What it times, per layout and algorithm (float32 throughout):

* ours (``functional_optim``): a jitted ``params, state = step(params, grads, state)``
  (``tx.update``, then ``fo.apply_updates``; params and state donated, grads fixed)
  for each ``implementation=`` (``loop``, ``foreach``, ``fused``) on the params kept
  as a tree (a dict of leaves), and on the same params kept packed
  (``fo.kernels.pack(tree)``: a ``[rows, 128]`` buffer per dtype, on which every
  implementation is a handful of large kernels; ``loop`` and ``foreach`` run there).
  On CPU, ``fused`` runs the foreach XLA path (Pallas only interprets on CPU, and
  interpret mode is never benchmarked);
* optax's same algorithm in the same jitted, donated step, where optax has one
  (its Adagrad starts its accumulator at 0.1 and uses another eps: a speed
  comparison only);
* torch.optim with ``foreach=False`` (the for-loop), ``foreach=True`` and
  ``fused=True`` (fused exists on CPU for Adam, AdamW, SGD and Adagrad), timing
  ``opt.step()`` with each ``.grad`` set once, torch's default thread count.

Layouts: ``1x16M`` (one 4000x4000 tensor), ``200x80k`` (200 leaves of distinct
sizes and shapes around 80k elements, 16M in all), ``2000small`` (2000 leaves of
distinct sizes drawn from 1k..10k elements with a fixed seed, ~11M in all). With
``--gpu-sizes`` (GPU only): ``1x128M`` and ``10000small`` (10000 leaves of 5k..15k,
~100M).

    python benchmarks/bench_step.py [--quick] [--algorithms adam,sgd]
        [--layouts 1x16M,200x80k,2000small] [--implementations loop,foreach,fused]
        [--repeats 20] [--torch-threads N] [--gpu-sizes] [--block-rows 8,32,64,256]

``--quick`` divides every leaf's size by 16 (the leaf counts stay, and so does the
compile time of a 2000-leaf step) and times 3 repeats: a smoke run. Progress goes
to stderr, the tables to stdout.

The numbers. Each case is built, compiled and timed on its own: ``--repeats``
steps back to back after a warmup. (Timing the cases in turns, one step each,
made torch's steps hundreds of times slower on a 2-core machine: torch's OpenMP
threads and XLA's thread pool share the process, and each pool was still busy
when the other's work began.) A step's time is the median, each call followed by
``block_until_ready`` on its output (torch on a GPU: ``torch.cuda.synchronize``).
A jax step blocks on one output leaf: all the outputs of one execution become
ready together (checked after the first step, which falls back to blocking on
every leaf where they do not), while blocking on each of a 2000-leaf step's
~8000 outputs costs tens of ms by itself. In the tables:

* ``torch fused ÷ this`` and ``optax ÷ this``: the reference's step time over
  this row's; above 1, this row is faster. Where torch has no fused step the
  reference is torch foreach (marked so);
* ``GB/s``: the bytes a step must stream at least, divided by its time: per param
  element the algorithm's float32 reads and writes in place (``ALGORITHMS``
  below, printed at the top: Adam reads p, g, m, v and writes p, m, v: 28 B),
  times the layout's elements (padding not counted);
* ``% triad``: that over the best triad bandwidth of this run, an in-place
  ``a += s * b`` over 16M float32 (12 B an element) timed as a jitted, donated jax
  function, with numpy (``np.add(a, s * b, out=a)``: one thread and a temporary,
  still counted as 12 B) and as torch's ``a.add_(b, alpha=s)``. About 100% is as
  fast as this machine moves memory;
* ``compile s``: ``jit(step).lower(...).compile()`` (tracing plus XLA), ours and
  optax; the goal for the 2000-leaf step is < 5 s;
* ``temp MB``: the compiled step's scratch memory (``memory_analysis()``); the
  memory table then shows, for our default implementation, whether a step needs
  more than params + grads + state plus one leaf (the largest leaf; for packed
  params, the largest buffer).

On a GPU (``jax.default_backend() == 'gpu'``), torch runs on ``cuda``, ``fused``
runs the compiled Pallas kernel, once per ``--block-rows`` value and at the
default block (``fo.kernels.pallas_options(block_rows=...)``; on Triton the
block is the largest power of two at most that which divides the buffer's rows),
and the triad runs over as many elements as the largest layout. Nothing of that
runs on CPU. The loop and optax steps over ``10000small`` may compile for minutes.
"""

from __future__ import annotations

import os

# On a GPU torch shares the device with XLA: no preallocation of most of its memory.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import argparse  # noqa: E402
import dataclasses  # noqa: E402
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

# The timing loop of the facade benchmark, and the helpers the step benchmarks share
# (this directory is on sys.path when run).
from facade_step import _median_seconds  # noqa: E402
from steptiming import MB, Memory, jax_runner, release_memory  # noqa: E402
from steptiming import choices as _list  # noqa: E402
from steptiming import log as _log  # noqa: E402
from steptiming import memory_analysis as _memory_analysis  # noqa: E402
from steptiming import rss_bytes as _rss_bytes  # noqa: E402

IMPLEMENTATIONS = ('loop', 'foreach', 'fused')
DEFAULT_ALGORITHMS = ('adam', 'adamw', 'sgd', 'adagrad')
CPU_LAYOUTS = ('1x16M', '200x80k', '2000small')
GPU_LAYOUTS = ('1x128M', '10000small')
DEFAULT_BLOCK_ROWS = (8, 32, 64, 256)
QUICK_SCALE = 16
TRIAD_ELEMENTS = 16_000_000
#: Slack on "one leaf" in the memory check: a step's 0-d outputs (step counters,
#: hyperparameters) that XLA does not alias are a few bytes each.
SCALAR_SLACK = 64 * 1024


# Algorithms ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One algorithm in the three libraries, with the same hyperparameters.

  Attributes:
    ours: ``(**implementation flags) -> GradientTransformation``.
    torch: ``(tensors, **flags) -> torch.optim.Optimizer``.
    optax: ``() -> optax.GradientTransformation``; None where optax has none.
    traffic: what one element's step reads and writes in place.
    bytes_per_element: float32 bytes of those reads and writes.
    torch_fused: torch has a fused CPU step (``fused=True``).
  """
  ours: Callable[..., Any]
  torch: Callable[..., Any]
  optax: Callable[[], Any] | None
  traffic: str
  bytes_per_element: int
  torch_fused: bool = False


def _optax(name: str, *args, **kwargs) -> Callable[[], Any] | None:
  make = getattr(optax, name, None)
  return None if make is None else (lambda: make(*args, **kwargs))


ALGORITHMS = {
    'adam': Algorithm(
        lambda **kw: fo.adam(lr=1e-3, **kw),
        lambda t, **kw: torch.optim.Adam(t, lr=1e-3, **kw),
        _optax('adam', 1e-3), 'p r/w, g r, m r/w, v r/w', 28, torch_fused=True),
    'adamw': Algorithm(
        lambda **kw: fo.adamw(lr=1e-3, weight_decay=0.01, **kw),
        lambda t, **kw: torch.optim.AdamW(t, lr=1e-3, weight_decay=0.01, **kw),
        _optax('adamw', 1e-3, weight_decay=0.01), 'p r/w, g r, m r/w, v r/w', 28,
        torch_fused=True),
    'sgd': Algorithm(
        lambda **kw: fo.sgd(lr=1e-3, momentum=0.9, **kw),
        lambda t, **kw: torch.optim.SGD(t, lr=1e-3, momentum=0.9, **kw),
        _optax('sgd', 1e-3, momentum=0.9), 'p r/w, g r, buf r/w', 20, torch_fused=True),
    'adagrad': Algorithm(
        lambda **kw: fo.adagrad(lr=1e-2, **kw),
        lambda t, **kw: torch.optim.Adagrad(t, lr=1e-2, **kw),
        _optax('adagrad', 1e-2), 'p r/w, g r, sum r/w', 20, torch_fused=True),
    'rmsprop': Algorithm(
        lambda **kw: fo.rmsprop(lr=1e-2, **kw),
        lambda t, **kw: torch.optim.RMSprop(t, lr=1e-2, **kw),
        _optax('rmsprop', 1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),  # torch's eps
        'p r/w, g r, square_avg r/w', 20),
    'nadam': Algorithm(
        lambda **kw: fo.nadam(lr=2e-3, **kw),
        lambda t, **kw: torch.optim.NAdam(t, lr=2e-3, **kw),
        _optax('nadam', 2e-3), 'p r/w, g r, m r/w, v r/w', 28),
    'radam': Algorithm(
        lambda **kw: fo.radam(lr=1e-3, **kw),
        lambda t, **kw: torch.optim.RAdam(t, lr=1e-3, **kw),
        _optax('radam', 1e-3), 'p r/w, g r, m r/w, v r/w', 28),
    'adamax': Algorithm(
        lambda **kw: fo.adamax(lr=2e-3, **kw),
        lambda t, **kw: torch.optim.Adamax(t, lr=2e-3, **kw),
        _optax('adamax', 2e-3), 'p r/w, g r, exp_avg r/w, exp_inf r/w', 28),
    'adadelta': Algorithm(
        lambda **kw: fo.adadelta(lr=1.0, **kw),
        lambda t, **kw: torch.optim.Adadelta(t, lr=1.0, **kw),
        _optax('adadelta', 1.0, rho=0.9, eps=1e-6),
        'p r/w, g r, square_avg r/w, acc_delta r/w', 28),
    'asgd': Algorithm(
        lambda **kw: fo.asgd(lr=1e-2, **kw),
        lambda t, **kw: torch.optim.ASGD(t, lr=1e-2, **kw),
        None, 'p r/w, g r, ax r/w', 20),
    'rprop': Algorithm(
        lambda **kw: fo.rprop(lr=1e-2, **kw),
        lambda t, **kw: torch.optim.Rprop(t, lr=1e-2, **kw),
        _optax('rprop', 1e-2), 'p r/w, g r, prev r/w, step_size r/w', 28),
}


# Layouts ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
  name: str
  label: str
  shapes: tuple[tuple[int, ...], ...]

  @property
  def elements(self) -> int:
    return sum(math.prod(s) for s in self.shapes)


def _shape(size: int, i: int) -> tuple[int, ...]:
  """A 2-D shape of ``size`` elements where one splits evenly, transposed every other leaf."""
  for cols in (256, 128, 64, 32, 16, 8):
    if size % cols == 0 and size > cols:
      return (size // cols, cols) if i % 2 == 0 else (cols, size // cols)
  return (size,)


def _spread(total: int, leaves: int) -> tuple[tuple[int, ...], ...]:
  """``leaves`` distinct sizes around ``total / leaves`` (±10%) that sum to ``total``."""
  base = total // leaves
  step = max(1, base // 1000)
  sizes = [base + step * (i - leaves // 2) for i in range(leaves)]
  sizes[-1] += total - sum(sizes)
  return tuple(_shape(s, i) for i, s in enumerate(sizes))


def _small(count: int, low: int, high: int, scale: int) -> tuple[tuple[int, ...], ...]:
  """``count`` distinct sizes drawn from ``low..high`` (fixed seed), divided by ``scale``."""
  rng = np.random.default_rng(0)
  sizes = rng.choice(np.arange(low, high + 1), count, replace=False) // scale
  return tuple(_shape(max(1, int(s)), i) for i, s in enumerate(sizes))


def make_layout(name: str, scale: int) -> Layout:
  if name == '1x16M':
    return Layout(name, '1x16M', ((4000, 4000 // scale),))
  if name == '200x80k':
    return Layout(name, '200x80k', _spread(16_000_000 // scale, 200))
  if name == '2000small':
    return Layout(name, '2000 small', _small(2000, 1000, 10_000, scale))
  if name == '1x128M':
    return Layout(name, '1x128M', ((8000, 16_000 // scale),))
  if name == '10000small':
    return Layout(name, '10000 small', _small(10_000, 5000, 15_000, scale))
  raise ValueError(f'unknown layout {name!r}')


# Timing -------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
  """One row: how to run a step, and what was measured."""
  library: str
  algorithm: str
  variant: str
  run: Callable[[], None] | None
  implementation: str | None = None
  packed: bool = False
  block_rows: int | None = None
  compile_seconds: float | None = None
  memory: Memory | None = None
  largest_leaf: int | None = None
  note: str = ''
  times: list[float] = dataclasses.field(default_factory=list)

  @property
  def seconds(self) -> float | None:
    return statistics.median(self.times) if self.times else None


def jax_case(library: str, algorithm: str, variant: str, make_tx: Callable[[], Any],
             params, grads, apply_updates, **fields) -> Case:
  """Builds and compiles a jitted, donated step; the case's ``run`` does one step."""
  start = time.perf_counter()
  tx = make_tx()
  state = tx.init(params)

  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state

  jitted = jax.jit(step, donate_argnums=(0, 2), keep_unused=True)
  compile_start = time.perf_counter()
  compiled = jitted.lower(params, grads, state).compile()
  compile_seconds = time.perf_counter() - compile_start
  memory = _memory_analysis(compiled)
  before = _rss_bytes()
  run = jax_runner(compiled, params, grads, state)  # runs a first step
  if memory is None:  # Fall back to the process's peak RSS around that first step.
    memory = Memory('RSS (getrusage peak growth)', rss_growth=max(0, _rss_bytes() - before))
  release_memory()  # The executable stays with `compiled`; the caches' copies go.
  _log(f'  {library} {algorithm} {variant}: compiled in {compile_seconds:.2f} s '
       f'(built in {time.perf_counter() - start:.2f} s)')
  return Case(library, algorithm, variant, run, compile_seconds=compile_seconds,
              memory=memory, **fields)


def torch_case(algorithm: str, algo: Algorithm, variant: str, flags: dict, host_params,
               host_grads, device: str) -> Case:
  """A torch optimizer over copies of the params with ``.grad`` set once."""
  tensors = [torch.from_numpy(p).to(device, copy=True).requires_grad_() for p in host_params]
  for t, g in zip(tensors, host_grads):
    t.grad = torch.from_numpy(g).to(device, copy=True)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  try:
    opt = algo.torch(tensors, **flags)
    opt.step()  # Raises here where an implementation does not exist on the device.
    sync()
  except (RuntimeError, ValueError, TypeError) as e:
    _log(f'  torch {algorithm} {variant}: unavailable ({e})')
    return Case('torch', algorithm, variant, None, note=f'unavailable: {e}')

  def run():
    opt.step()
    sync()

  return Case('torch', algorithm, variant, run)


def time_case(case: Case, repeats: int, warmup: int) -> Case:
  """Times ``repeats`` steps after ``warmup``, back to back, then frees the case's buffers."""
  if case.run is not None:
    for _ in range(warmup):
      case.run()
    for _ in range(repeats):
      start = time.perf_counter()
      case.run()
      case.times.append(time.perf_counter() - start)
    _log(f'  {case.library} {case.algorithm} {case.variant}: {case.seconds * 1e3:.3f} ms')
  case.run = None  # The buffers and the executable go with it.
  release_memory()
  return case


def measure_triad(n: int, repeats: int, warmup: int, gpu: bool, torch_device: str | None
                  ) -> dict[str, float]:
  """GB/s of an in-place ``a += s * b`` over ``n`` float32 (12 B an element) three ways."""
  s = 0.5
  results = {}
  a, b = jnp.ones([n], jnp.float32), jnp.full([n], 1e-6, jnp.float32)
  triad = jax.jit(lambda a, b: a + s * b, donate_argnums=0)
  holder = [a]

  def run_jax():
    holder[0] = triad(holder[0], b)
    holder[0].block_until_ready()

  results['jax jit, donated'] = 12 * n / _median_seconds(run_jax, repeats, warmup) / 1e9
  del a, b
  holder.clear()
  if not gpu:
    a, b = np.ones(n, np.float32), np.full(n, 1e-6, np.float32)
    results['numpy np.add(a, s*b, out=a)'] = 12 * n / _median_seconds(
        lambda: np.add(a, s * b, out=a), repeats, warmup) / 1e9
    del a, b
  if torch_device is not None:
    a = torch.ones(n, dtype=torch.float32, device=torch_device)
    b = torch.full((n,), 1e-6, dtype=torch.float32, device=torch_device)
    sync = torch.cuda.synchronize if torch_device == 'cuda' else (lambda: None)

    def run_torch():
      a.add_(b, alpha=s)
      sync()

    results['torch a.add_(b, alpha=s)'] = 12 * n / _median_seconds(
        run_torch, repeats, warmup) / 1e9
    del a, b
  jax.clear_caches()
  return results


# One layout ---------------------------------------------------------------------------

def _ours_variants(implementations: list[str], packed: bool, gpu: bool,
                   block_rows: list[int]) -> list[tuple[str, int | None]]:
  """(implementation, block_rows) pairs: the block sweep for fused on a GPU."""
  if packed:  # Every implementation is a few big kernels on packed params.
    chosen = [i for i in implementations if gpu or i != 'fused'] or implementations[:1]
  else:
    chosen = implementations
  out = []
  for implementation in chosen:
    if implementation == 'fused' and gpu:
      out += [('fused', b) for b in block_rows]
    else:
      out.append((implementation, None))
  return out


def _variant_name(implementation: str, packed: bool, block: int | None, gpu: bool) -> str:
  name = f'{"packed" if packed else "tree"} {implementation}'
  if block is not None:
    name += f' br={block}'
  elif implementation == 'fused' and not gpu:
    name += '*'
  return name


def measure_layout(layout: Layout, algorithms: list[str], implementations: list[str],
                   repeats: int, warmup: int, gpu: bool, torch_device: str | None,
                   block_rows: list[int]) -> list[Case]:
  rng = np.random.default_rng(1)
  host_params = [rng.standard_normal(s, dtype=np.float32) for s in layout.shapes]
  host_grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2)
                for s in layout.shapes]
  keys = [f'leaf{i:05d}' for i in range(len(layout.shapes))]

  def tree_of(host):
    return {k: jnp.array(x) for k, x in zip(keys, host)}  # Copies: params are donated.

  tree_grads = tree_of(host_grads)
  packed_grads = fo.kernels.pack(tree_grads)
  # Packed once here (eager packing of 2000 leaves takes a while); each case copies.
  packed_host_params = jax.device_get(fo.kernels.pack(tree_of(host_params)))

  def packed_params():
    return fo.kernels.Packed([jnp.array(b) for b in packed_host_params.buffers],
                             packed_host_params.spec)

  release_memory()
  largest_tree_leaf = max(math.prod(s) for s in layout.shapes) * 4
  largest_buffer = max(b.size * b.dtype.itemsize for b in packed_grads.buffers)
  cases = []
  for name in algorithms:
    algo = ALGORITHMS[name]
    _log(f'{layout.label}: {name}')
    for packed in (False, True):
      grads = packed_grads if packed else tree_grads
      for implementation, block in _ours_variants(implementations, packed, gpu, block_rows):
        params = packed_params() if packed else tree_of(host_params)
        fields = dict(implementation=implementation, packed=packed, block_rows=block,
                      largest_leaf=largest_buffer if packed else largest_tree_leaf)
        make = lambda implementation=implementation: algo.ours(implementation=implementation)
        variant = _variant_name(implementation, packed, block, gpu)
        if block is None:
          case = jax_case('functional_optim', name, variant, make, params, grads,
                          fo.apply_updates, **fields)
        else:
          with fo.kernels.pallas_options(block_rows=block):  # Read when the step is traced.
            case = jax_case('functional_optim', name, variant, make, params, grads,
                            fo.apply_updates, **fields)
        del params
        cases.append(time_case(case, repeats, warmup))
    if algo.optax is not None:
      case = jax_case('optax', name, 'tree', algo.optax, tree_of(host_params), tree_grads,
                      optax.apply_updates)
      cases.append(time_case(case, repeats, warmup))
    if torch_device is not None:
      torch_variants = [('for-loop', {'foreach': False}), ('foreach', {'foreach': True})]
      if algo.torch_fused:
        torch_variants.append(('fused', {'fused': True}))
      for variant, flags in torch_variants:
        case = torch_case(name, algo, variant, flags, host_params, host_grads, torch_device)
        cases.append(time_case(case, repeats, warmup))
        if torch_device == 'cuda':
          torch.cuda.empty_cache()
  return cases


# Output -------------------------------------------------------------------------------

def _find(cases: list[Case], library: str, algorithm: str, variant: str) -> Case | None:
  for case in cases:
    if (case.library, case.algorithm, case.variant) == (library, algorithm, variant) \
        and case.seconds is not None:
      return case
  return None


def torch_reference(cases: list[Case], algorithm: str) -> tuple[Case | None, str]:
  fused = _find(cases, 'torch', algorithm, 'fused')
  if fused is not None:
    return fused, 'fused'
  return _find(cases, 'torch', algorithm, 'foreach'), 'foreach'


def _ratio(reference: Case | None, case: Case) -> str:
  if reference is None or case.seconds is None:
    return '-'
  return f'{reference.seconds / case.seconds:.2f}'


def print_layout_table(layout: Layout, cases: list[Case], triad: float, gpu: bool) -> None:
  leaves = len(layout.shapes)
  print(f'### {layout.label}: {leaves} ' + ('leaf' if leaves == 1 else 'leaves')
        + f', {layout.elements:,} float32 params\n')
  print('| library | algorithm | variant | median ms | torch fused ÷ this | optax ÷ this '
        '| GB/s | % triad | compile s | temp MB |')
  print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|')
  for case in cases:
    algo = ALGORITHMS[case.algorithm]
    if case.seconds is None:
      print(f'| {case.library} | {case.algorithm} | {case.variant} | {case.note or "-"} '
            '| | | | | | |')
      continue
    ref, kind = torch_reference(cases, case.algorithm)
    vs_torch = _ratio(ref, case) + ('' if kind == 'fused' or ref is None else ' (vs foreach)')
    vs_optax = _ratio(_find(cases, 'optax', case.algorithm, 'tree'), case)
    gbps = algo.bytes_per_element * layout.elements / case.seconds / 1e9
    compile_s = '-' if case.compile_seconds is None else f'{case.compile_seconds:.2f}'
    temp = '-' if case.memory is None or case.memory.temp is None \
        else f'{case.memory.temp / MB:.1f}'
    print(f'| {case.library} | {case.algorithm} | {case.variant} | {case.seconds * 1e3:.3f} '
          f'| {vs_torch} | {vs_optax} | {gbps:.1f} | {100 * gbps / triad:.0f}% '
          f'| {compile_s} | {temp} |')
  print()
  if not gpu:
    print("\\* On CPU, 'fused' runs the foreach XLA path: the Pallas kernel only "
          'interprets there.\n')


def print_memory_table(results: list[tuple[Layout, list[Case]]], default: str) -> None:
  print(f"### Memory of our default implementation ('{default}'), per compiled step\n")
  print('extra = temp + outputs − aliased: what a step holds beyond its arguments '
        '(params + grads + state). Target: extra ≤ one leaf (the largest; for packed '
        f'params, the largest buffer), plus {SCALAR_SLACK // 1024} KiB for 0-d outputs.\n')
  print('| layout | algorithm | variant | source | arguments MB | outputs MB | aliased MB '
        '| temp MB | extra MB | one leaf MB | extra ≤ one leaf |')
  print('|---|---|---|---|---:|---:|---:|---:|---:|---:|---|')
  for layout, cases in results:
    for case in cases:
      if case.library != 'functional_optim' or case.implementation != default \
          or case.memory is None:
        continue
      m = case.memory
      cells = [f'{v / MB:.1f}' if v is not None else '-'
               for v in (m.arguments, m.outputs, m.aliased, m.temp)]
      ok = 'yes' if m.extra <= case.largest_leaf + SCALAR_SLACK else 'no'
      print(f'| {layout.label} | {case.algorithm} | {case.variant} | {m.source} | '
            f'{" | ".join(cells)} | {m.extra / MB:.2f} | {case.largest_leaf / MB:.2f} | {ok} |')
  print()


def _ours_default(cases: list[Case], algorithm: str, packed: bool, default: str,
                  default_block: int | None) -> Case | None:
  """Our default implementation's case (for 'fused' on a GPU: at the default block)."""
  for case in cases:
    if (case.library == 'functional_optim' and case.algorithm == algorithm
        and case.packed == packed and case.implementation == default
        and case.block_rows in (None, default_block) and case.seconds is not None):
      return case
  return None


def print_summary(results: list[tuple[Layout, list[Case]]], algorithms: list[str],
                  default: str, gpu: bool, default_block: int | None) -> None:
  print('## Summary\n')
  print(f"Our default implementation on {jax.default_backend()}: '{default}'.\n")
  for name in [a for a in ('adam', 'adamw', 'sgd') if a in algorithms]:
    for kind, packed in (('a tree', False), ('packed params', True)):
      parts, every = [], True
      for layout, cases in results:
        ref, _ = torch_reference(cases, name)
        ours = _ours_default(cases, name, packed, default, default_block)
        if ref is None or ours is None:
          parts.append(f'{layout.label} n/a')
          every = False
          continue
        ratio = ref.seconds / ours.seconds
        every &= ratio >= 1.0
        parts.append(f'{layout.label} {ratio:.2f}')
      print(f'- {name}, default on {kind}: at least as fast as torch fused on every layout: '
            f'**{"yes" if every else "no"}** (torch fused ÷ ours: {", ".join(parts)})')
  print()
  print('Fastest of our implementations per layout (median ms; the tree implementations '
        'choose the default):\n')
  print('| layout | algorithm | tree: loop | tree: foreach | tree: fused | fastest on a tree '
        '| fastest of ours (incl. packed) |')
  print('|---|---|---:|---:|---:|---|---|')
  for layout, cases in results:
    for name in algorithms:
      ours = [c for c in cases if c.library == 'functional_optim' and c.algorithm == name
              and c.seconds is not None]
      if not ours:
        continue
      cells = []
      for implementation in IMPLEMENTATIONS:
        times = [c.seconds for c in ours if not c.packed and c.implementation == implementation]
        cells.append(f'{min(times) * 1e3:.3f}' if times else '-')
      tree = [c for c in ours if not c.packed]
      best_tree = min(tree, key=lambda c: c.seconds) if tree else None
      best = min(ours, key=lambda c: c.seconds)
      tree_cell = '-' if best_tree is None else best_tree.variant
      print(f'| {layout.label} | {name} | {" | ".join(cells)} | {tree_cell} | {best.variant} |')
  print()
  many = max(results, key=lambda r: len(r[0].shapes))
  layout, cases = many
  leaves = len(layout.shapes)
  print(f'Compile time on {layout.label} ({leaves} ' + ('leaf' if leaves == 1 else 'leaves')
        + '; goal: < 5 s for the 2000-leaf step):\n')
  print('| algorithm | library | variant | compile s | < 5 s |')
  print('|---|---|---|---:|---|')
  for case in cases:
    if case.compile_seconds is not None:
      print(f'| {case.algorithm} | {case.library} | {case.variant} | '
            f'{case.compile_seconds:.2f} | {"yes" if case.compile_seconds < 5 else "no"} |')
  print()
  if gpu:
    print('Pallas block size (fused): fastest `block_rows` per layout and algorithm:\n')
    print('| layout | algorithm | params | best block_rows | ms | all (block_rows: ms) |')
    print('|---|---|---|---:|---:|---|')
    for layout, cases in results:
      for name in algorithms:
        for packed in (False, True):
          sweep = [c for c in cases if c.library == 'functional_optim' and c.algorithm == name
                   and c.packed == packed and c.block_rows is not None
                   and c.seconds is not None]
          if not sweep:
            continue
          best = min(sweep, key=lambda c: c.seconds)
          every = ', '.join(f'{c.block_rows}: {c.seconds * 1e3:.3f}' for c in sweep)
          print(f'| {layout.label} | {name} | {"packed" if packed else "tree"} | '
                f'{best.block_rows} | {best.seconds * 1e3:.3f} | {every} |')
    print()


# Main ---------------------------------------------------------------------------------

def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help=f'leaf sizes / {QUICK_SCALE} and 3 repeats: a smoke run')
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed steps per case (default 20, --quick 3)')
  parser.add_argument('--algorithms', default=','.join(DEFAULT_ALGORITHMS),
                      help=f'comma-separated, from {", ".join(ALGORITHMS)}')
  parser.add_argument('--layouts', default=None,
                      help=f'comma-separated, from {", ".join(CPU_LAYOUTS + GPU_LAYOUTS)} '
                           '(the last two need a GPU)')
  parser.add_argument('--implementations', default=','.join(IMPLEMENTATIONS),
                      help='ours, comma-separated')
  parser.add_argument('--torch-threads', type=int, default=0,
                      help="torch.set_num_threads; 0 (default) keeps torch's default")
  parser.add_argument('--gpu-sizes', action='store_true',
                      help=f'GPU only: add the layouts {", ".join(GPU_LAYOUTS)}')
  parser.add_argument('--block-rows', default=','.join(map(str, DEFAULT_BLOCK_ROWS)),
                      help='GPU only: the Pallas block sizes swept for fused')
  args = parser.parse_args(argv)

  gpu = jax.default_backend() in ('gpu', 'cuda', 'rocm')
  algorithms = _list(args.algorithms, ALGORITHMS, 'algorithm')
  implementations = _list(args.implementations, IMPLEMENTATIONS, 'implementation')
  layout_names = _list(args.layouts, CPU_LAYOUTS + GPU_LAYOUTS, 'layout') if args.layouts \
      else list(CPU_LAYOUTS) + (list(GPU_LAYOUTS) if args.gpu_sizes else [])
  if not gpu and (args.gpu_sizes or any(n in GPU_LAYOUTS for n in layout_names)):
    raise SystemExit(f'--gpu-sizes and the layouts {", ".join(GPU_LAYOUTS)} need a GPU '
                     f'(jax backend here: {jax.default_backend()})')
  block_rows, default_block = [], None
  if gpu:  # The default block is always swept: the summary compares the default.
    default_block = fo.kernels.pallas.DEFAULT_BLOCK_ROWS
    block_rows = sorted({int(b) for b in args.block_rows.split(',')} | {default_block})
  scale = QUICK_SCALE if args.quick else 1
  repeats = args.repeats or (3 if args.quick else 20)
  warmup = 1 if args.quick else 3
  torch_device = ('cuda' if torch.cuda.is_available() else None) if gpu else 'cpu'
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  default = dispatch.default_implementation()
  layouts = [make_layout(n, scale) for n in layout_names]

  begin = time.perf_counter()
  device = jax.devices()[0]
  print('# bench_step: optimizer step time\n')
  print(f'- device: jax backend `{jax.default_backend()}`, device_kind '
        f'`{device.device_kind}`, {jax.device_count()} device(s); {os.cpu_count()} CPUs; '
        f'torch on `{torch_device}` with {torch.get_num_threads()} threads'
        + (f' ({torch.cuda.get_device_name()})' if torch_device == 'cuda' else ''))
  print(f'- versions: jax {jax.__version__}, torch {torch.__version__}, '
        f'optax {optax.__version__}, python {sys.version.split()[0]}')
  print(f'- sizes: {"quick (leaf sizes / %d)" % scale if args.quick else "full"}; '
        f'median of {repeats} steps after {warmup} warmup, each case on its own')
  print(f'- our default implementation here: `{default}`; load average at start: '
        + ', '.join(f'{x:.2f}' for x in os.getloadavg()))
  print('- bytes per element: ' + '; '.join(
      f'{n} {ALGORITHMS[n].bytes_per_element} B ({ALGORITHMS[n].traffic})'
      for n in algorithms))

  triad_n = max([TRIAD_ELEMENTS] + [l.elements for l in layouts]) if gpu else TRIAD_ELEMENTS
  _log(f'triad over {triad_n:,} float32')
  triads = measure_triad(triad_n, max(repeats, 10), warmup, gpu, torch_device)
  triad = max(triads.values())
  print(f'- triad `a += s * b` over {triad_n:,} float32 (12 B/element): '
        + ', '.join(f'{k} {v:.1f} GB/s' for k, v in triads.items())
        + f'; the floor used for % triad: {triad:.1f} GB/s\n')
  sys.stdout.flush()

  results = []
  for layout in layouts:
    _log(f'layout {layout.label}: {len(layout.shapes)} leaves, {layout.elements:,} params')
    cases = measure_layout(layout, algorithms, implementations, repeats, warmup, gpu,
                           torch_device, block_rows)
    print_layout_table(layout, cases, triad, gpu)
    sys.stdout.flush()
    results.append((layout, cases))
  print_memory_table(results, default)
  print_summary(results, algorithms, default, gpu, default_block)
  print(f'Total run time: {time.perf_counter() - begin:.0f} s; load average at the end: '
        + ', '.join(f'{x:.2f}' for x in os.getloadavg()) + '.')


if __name__ == '__main__':
  main()
