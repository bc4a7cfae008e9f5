"""The examples, in-process: the digits example trains to > 95% test accuracy with
Adam; the schedule gallery (which needs torch) draws every scheduler."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'examples'))

import train_digits  # noqa: E402


def test_train_digits_reaches_95_percent(tmp_path):
  out = tmp_path / 'loss.png'
  result = train_digits.main(['--optimizer', 'adam', '--epochs', '15', '--out', str(out)])
  assert result['test_accuracy'] > 0.95
  assert len(result['losses']) == 15
  assert result['losses'][-1] < result['losses'][0]
  assert out.exists() and out.stat().st_size > 0


def test_plot_schedules_draws_every_scheduler_matching_torch(tmp_path, torch):
  import plot_schedules  # here: it imports torch
  out = tmp_path / 'schedules.png'
  differences = plot_schedules.main(['--steps', '120', '--out', str(out)])
  assert len(differences) == 15  # 14 schedules + ReduceLROnPlateau
  assert max(differences.values()) < 1e-12
  assert out.exists() and out.stat().st_size > 10_000
