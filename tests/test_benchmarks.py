"""The benchmarks' model trees are the models they name (the counts in their docs).

The timings themselves are not tested (the machine is shared and noisy); what is
checked is that ``model_shapes.py`` builds every tree with the leaf and param
counts of the published architectures, which it verifies itself.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_model_shapes_builds_the_published_trees():
  pytest.importorskip('torch', reason='model_shapes.py times torch too')
  result = subprocess.run([sys.executable, 'benchmarks/model_shapes.py', '--list'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  for row in ('| GPT-2 small (`gpt2`) | 148 | 124,439,808 |',
              '| ResNet-50 (`resnet50`) | 161 | 25,557,032 |',
              '| ViT-B/16 (`vit_b16`) | 152 | 86,567,656 |',
              '| 48-layer transformer, d=256, unscanned (`transformer48`) | 768 | 37,908,480 |'):
    assert row in result.stdout
