import importlib.util

import jax
import pytest

from tests.common import TORCH_REASON


@pytest.fixture
def x64():
  """Runs a test with 64-bit JAX types (float64 params, float64 hyperparameters)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(autouse=True, scope='module')
def _clear_jax_caches():
  # Every distinct compiled kernel holds memory maps until the caches are cleared.
  yield
  jax.clear_caches()


@pytest.fixture(scope='session')
def torch():
  """torch, for a test that compares against it; without torch the test is skipped.

  Modules whose every test needs torch skip as a whole instead, with
  ``torch = pytest.importorskip('torch', reason=TORCH_REASON)``.
  """
  return pytest.importorskip('torch', reason=TORCH_REASON)


@pytest.fixture(scope='module')
def one_torch_thread():
  """torch on one thread for a module: on tiny matrices, torch's bfloat16 matmuls
  spend 25x longer handing work between two threads than computing. Without torch
  there is nothing to set (its tests skip on their own), and the others run."""
  if importlib.util.find_spec('torch') is None:
    yield
    return
  import torch  # here: only where it is installed
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
