"""Every notebook runs top to bottom in a fresh kernel, as a new user would run it."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tests.common import imports_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))


def needs_torch(notebook) -> bool:
  """Whether a code cell imports torch, or an example module that does (the
  notebooks put examples/ on their path)."""
  return any(imports_torch(cell.source, (ROOT / 'examples',))
             for cell in notebook.cells if cell.cell_type == 'code')


def test_the_notebooks_are_there():
  names = [path.stem for path in NOTEBOOKS]
  assert names == ['01_quickstart', '02_porting_from_pytorch', '03_scheduler_gallery',
                   '04_swa_and_ema', '05_speed']


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path, request):
  notebook = nbformat.read(path, as_version=4)
  if needs_torch(notebook):
    request.getfixturevalue('torch')  # skips without torch
  # Run from the notebooks folder, as `jupyter` would; the repository is untouched.
  NotebookClient(notebook, timeout=120, kernel_name='python3',
                 resources={'metadata': {'path': str(path.parent)}}).execute()
  errors = [output for cell in notebook.cells for output in cell.get('outputs', [])
            if output.get('output_type') == 'error']
  assert not errors
