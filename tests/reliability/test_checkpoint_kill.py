"""Replacing a checkpoint is atomic: a saving process killed (SIGKILL) at any
moment of ``save_state``/``save_optimizer(force=True)`` leaves a checkpoint that
restores whole, the old one until the new one is complete, and the next save
works. The worker (``checkpoint_kill_worker.py``) kills itself at each step of
the replacement, or is killed by this test at timed moments of it.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('orbax.checkpoint', reason='checkpoints need orbax-checkpoint')

from functional_optim import distributed  # noqa: E402
from tests.reliability import checkpoint_kill_worker as worker  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 120

# moment: the version a restore must give after the kill (None: either).
MOMENTS = {
    'finalizing': 0,    # the new one is not complete: the old one
    'swap_start': 0,
    'swap_middle': 0,   # the old one, moved aside: restoring finds it there
    'cleanup': 1,       # the new one is in place
    'mid_cleanup': 1,
}
# (kind, moment, delay of a timed kill in seconds: a save takes some 40 ms here).
CASES = ([('state', m, None) for m in MOMENTS] + [('optimizer', 'swap_middle', None)]
         + [('state', 'timed', 0.01), ('state', 'timed', 0.025), ('optimizer', 'timed', 0.02)])


def run_worker(directory: pathlib.Path, kind: str, moment: str, delay: float) -> str:
  process = subprocess.Popen(
      [sys.executable, str(pathlib.Path(worker.__file__)), str(directory), kind, moment],
      cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)},
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    output = []
    for line in process.stdout:  # until 'saving': the replacing save starts
      output.append(line)
      if line.strip() == 'saving':
        break
    if moment == 'timed':
      time.sleep(delay)
      process.send_signal(signal.SIGKILL)
    output.append(process.communicate(timeout=TIMEOUT)[0])
  finally:
    process.kill()
  assert process.returncode == -signal.SIGKILL or (moment == 'timed' and process.returncode == 0), (
      f'the worker ended with {process.returncode}:\n' + ''.join(output))
  return ''.join(output)


def restored_version(directory: pathlib.Path, kind: str) -> int:
  """Restores the checkpoint and says which version it holds (all its values agree)."""
  opt = worker.optimizer(7)
  if kind == 'state':
    state = distributed.restore_state(directory, opt.opt_state)
    exp_avg = state.exp_avg
  else:
    distributed.restore_optimizer(directory, opt)
    exp_avg = opt.opt_state.exp_avg
  values = np.concatenate([np.ravel(exp_avg['w']), np.ravel(exp_avg['b'])])
  version = float(values[0]) / 0.1
  np.testing.assert_array_equal(values, values[0])  # whole: no mix of versions
  assert round(version) in (0, 1), version
  return round(version)


@pytest.mark.parametrize('kind,moment,delay', CASES,
                         ids=[f'{k}-{m}' + (f'-{d * 1e3:.0f}ms' if d else '') for k, m, d in CASES])
def test_a_killed_replacing_save_leaves_a_restorable_checkpoint(kind, moment, delay, tmp_path):
  directory = tmp_path / 'ckpt'
  output = run_worker(directory, kind, moment, delay)
  version = restored_version(directory, kind)
  if MOMENTS.get(moment) is not None:
    assert version == MOMENTS[moment], output
  # The next save replaces whatever the kill left, and leaves nothing beside it.
  worker.save(directory, kind, worker.optimizer(1), force=True)
  assert restored_version(directory, kind) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt']
