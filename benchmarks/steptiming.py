"""Timing helpers shared by the step benchmarks (``bench_step.py``, ``model_shapes.py``,
``profile_step.py``): compiling a jitted step in phases, its memory and HLO, freeing
what a case held, and timing several implementations in interleaved rounds.

Nothing here is a benchmark by itself; the scripts print the tables.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import re
import resource
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax

MB = 1e6


def log(message: str) -> None:
  """Progress on stderr (the tables go to stdout)."""
  print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


# Memory -------------------------------------------------------------------------------

@dataclasses.dataclass
class Memory:
  """A compiled step's memory, from ``memory_analysis()`` or, failing that, RSS."""
  source: str
  arguments: int | None = None
  outputs: int | None = None
  aliased: int | None = None
  temp: int | None = None
  rss_growth: int | None = None

  @property
  def extra(self) -> int:
    """Bytes beyond the arguments (params + grads + state) that a step holds at its peak."""
    if self.temp is None:
      return self.rss_growth
    return self.temp + self.outputs - self.aliased


def memory_analysis(compiled) -> Memory | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - unimplemented on some backends and versions
    return None
  if stats is None or getattr(stats, 'temp_size_in_bytes', None) is None:
    return None
  return Memory('memory_analysis', stats.argument_size_in_bytes, stats.output_size_in_bytes,
                stats.alias_size_in_bytes, stats.temp_size_in_bytes)


def rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def release_memory() -> None:
  """Frees what the last case held, and gives the freed heap back to the system.

  Compiling a 2000-leaf step takes ~10 GB of heap here; glibc keeps it after the
  compiler frees it, and the next compile would add as much again without
  ``malloc_trim``.
  """
  gc.collect()
  jax.clear_caches()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):  # Not glibc.
    pass


def some_leaf(tree) -> jax.Array:
  """One leaf of ``tree``, found without flattening all of it (thousands of leaves)."""
  while not isinstance(tree, jax.Array):
    if isinstance(tree, dict) and tree:
      tree = next(iter(tree.values()))
    elif isinstance(tree, (list, tuple)) and tree:
      tree = tree[0]
    else:
      return jax.tree.leaves(tree)[0]
  return tree


# Compiling in phases -------------------------------------------------------------------

#: Instructions of an optimized HLO entry computation that run no code of their own.
_NOT_KERNELS = frozenset({'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast'})
_OPCODE = re.compile(r'^\s*(?:ROOT\s+)?%\S+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(')


def entry_kernels(hlo_text: str) -> collections.Counter:
  """The instructions of the optimized module's entry computation that run code, by
  opcode: on XLA:CPU each one is a kernel (a thunk) of its own (``fusion``, ``copy``,
  ``concatenate``, ...); parameters, constants, tuples and bitcasts are not counted."""
  start = hlo_text.index('\nENTRY')
  end = hlo_text.find('\n}', start)
  counts = collections.Counter()
  for line in hlo_text[start:end].splitlines()[1:]:
    match = _OPCODE.match(line)
    if match and match.group(1) not in _NOT_KERNELS:
      counts[match.group(1)] += 1
  return counts


@dataclasses.dataclass
class Compiled:
  """A step compiled in three timed phases, with what its program looks like."""
  compiled: Any
  trace_seconds: float
  lower_seconds: float
  compile_seconds: float
  jaxpr_equations: int
  stablehlo_lines: int
  kernels: collections.Counter
  memory: Memory | None

  @property
  def total_seconds(self) -> float:
    return self.trace_seconds + self.lower_seconds + self.compile_seconds

  @property
  def kernel_count(self) -> int:
    return sum(self.kernels.values())


def compile_in_phases(step: Callable, args: Sequence[Any], donate_argnums=(),
                      cold: bool = True) -> Compiled:
  """``jax.jit(step).trace(*args)``, ``.lower()``, ``.compile()``, each timed.

  With ``cold`` (the default), jax's caches are cleared first, so the trace does
  not reuse the jaxprs of jitted helpers (``jnp.where``, ...) that an earlier trace
  made: every measured step pays what a fresh process pays the first time.
  """
  if cold:
    jax.clear_caches()
  jitted = jax.jit(step, donate_argnums=donate_argnums, keep_unused=True)
  start = time.perf_counter()
  traced = jitted.trace(*args)
  traced_at = time.perf_counter()
  lowered = traced.lower()
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  return Compiled(
      compiled=compiled, trace_seconds=traced_at - start,
      lower_seconds=lowered_at - traced_at, compile_seconds=compiled_at - lowered_at,
      jaxpr_equations=len(traced.jaxpr.eqns),
      stablehlo_lines=lowered.as_text().count('\n'),
      kernels=entry_kernels(compiled.as_text()), memory=memory_analysis(compiled))


# Running steps ------------------------------------------------------------------------

def jax_runner(compiled, params, grads, state) -> Callable[[], None]:
  """One donated step ``params, state = compiled(params, grads, state)`` per call.

  It blocks on one output leaf: all the outputs of one execution become ready
  together (checked after the first step, which falls back to blocking on every
  leaf where they do not), while blocking on each of a 2000-leaf step's ~8000
  outputs costs tens of ms by itself.
  """
  holder = [params, state]
  block_all = [False]

  def run():
    holder[0], holder[1] = compiled(holder[0], grads, holder[1])
    if block_all[0]:
      jax.block_until_ready(holder)
    else:
      some_leaf(holder[0]).block_until_ready()

  run()
  if not all(leaf.is_ready() for leaf in jax.tree.leaves(holder)):
    block_all[0] = True
    log('  outputs not ready together; blocking on each')
  return run


@dataclasses.dataclass
class Timed:
  """One implementation's timed steps, by round."""
  name: str
  run: Callable[[], None] | None
  rounds: list[list[float]] = dataclasses.field(default_factory=list)

  @property
  def times(self) -> list[float]:
    return [t for r in self.rounds for t in r]

  @property
  def seconds(self) -> float | None:
    return statistics.median(self.times) if self.times else None

  def round_medians(self) -> list[float]:
    return [statistics.median(r) for r in self.rounds]


def interleave(cases: Sequence[Timed], rounds: int, block: int, warmup: int = 1,
               gap: float = 0.05) -> None:
  """Times ``cases`` in ``rounds``: each round runs every case once, in an order that
  rotates from round to round, as ``warmup`` untimed steps and then ``block`` timed
  ones.

  Why this shape: on a shared machine the load changes within seconds, so a case
  timed all at once and another timed a minute later are not comparable, while
  rounds spread each case over the whole run and pair it with the others (a
  ratio per round, then the median of those). One step at a time is too fine:
  torch's OpenMP threads and XLA's thread pool spin for a while after their
  work, and a step that begins while the other pool spins runs at a fraction of
  its speed on 2 cores. So each turn starts after ``gap`` seconds of sleep and an
  untimed step, and times a block of steps.
  """
  live = [c for c in cases if c.run is not None]
  for r in range(rounds):
    shift = r % len(live) if live else 0
    for case in live[shift:] + live[:shift]:
      time.sleep(gap)
      for _ in range(warmup):
        case.run()
      times = []
      for _ in range(block):
        start = time.perf_counter()
        case.run()
        times.append(time.perf_counter() - start)
      case.rounds.append(times)


def paired_ratio(case: Timed, reference: Timed) -> float | None:
  """The median over rounds of ``case``'s round median over ``reference``'s."""
  pairs = list(zip(case.round_medians(), reference.round_medians(), strict=True))
  if not pairs:
    return None
  return statistics.median(a / b for a, b in pairs)


def choices(text: str, allowed, what: str) -> list[str]:
  """A comma-separated command-line value as a list, each item one of ``allowed``."""
  items = [t.strip() for t in text.split(',') if t.strip()]
  for item in items:
    if item not in allowed:
      raise SystemExit(f'unknown {what} {item!r}; choose from {", ".join(allowed)}')
  return items
