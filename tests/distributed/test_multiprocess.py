"""Many processes: JAX's own runtime (``jax.distributed``, gloo collectives on 127.0.0.1).

Two processes of four fake CPU devices train with ZeRO-1 optimizer state and
save it with orbax from both; the checkpoint is then restored by one process
and by four, and training resumes. Everything is compared with one process on
one device running the same steps. Each group of processes must finish within
``TIMEOUT`` seconds: a hang (a collective waiting for a peer that died) kills
them all and fails the test with their output.

Tolerances. The one-device reference is another XLA program than the sharded
ones (other loop bounds, other vectorization), so their float32 results may
differ by an ulp in a step, which later steps carry on; ``rtol=2e-6`` is some 16
float32 ulps (observed after 8 Adam steps: 4 ulps in one param, 0 elsewhere). A checkpoint round trip copies bits:
restored state equals the saved state exactly.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('orbax.checkpoint', reason='checkpoints need orbax-checkpoint')

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name('multiprocess_worker.py')
TIMEOUT = 240


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(role: str, directory: pathlib.Path, processes: int, devices: int) -> None:
  """Runs ``processes`` workers of ``devices`` fake devices each; all must succeed in time."""
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'PYTHONPATH': str(ROOT)}
  port = _free_port()
  logs = [directory / f'{role}_{processes}_{i}.log' for i in range(processes)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, 'w') as out:
      procs.append(subprocess.Popen(
          [sys.executable, str(WORKER), role, str(directory), str(i), str(processes), str(port)],
          cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
  deadline = time.monotonic() + TIMEOUT
  try:
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline or any(p.returncode not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:  # a dead peer leaves the others waiting in a collective
      if p.poll() is None:
        p.kill()
        p.wait()
  failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
  if failed:
    output = '\n'.join(f'--- process {i} (exit {code}):\n{logs[i].read_text()[-3000:]}'
                       for i, code in failed)
    timed_out = time.monotonic() > deadline
    pytest.fail(f'{role} on {processes} processes {"timed out" if timed_out else "failed"}:\n'
                f'{output}')


def _leaves(path: pathlib.Path) -> list[np.ndarray]:
  with np.load(path) as data:
    return [data[f'arr_{i}'] for i in range(len(data.files))]


def _covered_once(shape, shards) -> bool:
  count = np.zeros(shape, np.int32)
  for index in shards:
    count[tuple(slice(a, b) for a, b in index)] += 1
  return bool(np.all(count == 1))


def test_two_processes_train_zero1_and_restore_on_one_and_four(tmp_path):
  run_processes('reference', tmp_path, 1, 1)
  run_processes('train', tmp_path, 2, 4)

  # Each process holds only its own shards of each ZeRO-1 buffer: together they
  # cover every element once, and neither holds all of a buffer.
  reports = [json.loads((tmp_path / f'shards_2_{i}.json').read_text()) for i in range(2)]
  sharded = 0
  for path, first in reports[0].items():
    shards = [index for report in reports for index in report[path]['shards']]
    assert _covered_once(first['shape'], shards), path
    if not first['replicated']:
      sharded += 1
      for report in reports:
        held = sum(np.prod([b - a for a, b in index]) for index in report[path]['shards'])
        assert held * 2 == np.prod(first['shape']), (path, held)
  assert sharded >= 3  # exp_avg, exp_avg_sq, max_exp_avg_sq of the (16, 8) weight at least

  half = _leaves(tmp_path / 'reference_half.npz')
  for got, want in zip(_leaves(tmp_path / 'saved.npz'), half):
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)

  reference = _leaves(tmp_path / 'reference.npz')
  for processes, devices in ((1, 4), (4, 2)):
    run_processes('restore', tmp_path, processes, devices)
    for got, want in zip(_leaves(tmp_path / f'restored_{processes}.npz'),
                         _leaves(tmp_path / 'saved.npz')):
      np.testing.assert_array_equal(got, want)  # a checkpoint copies bits
    for got, want in zip(_leaves(tmp_path / f'resumed_{processes}.npz'), reference):
      np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
