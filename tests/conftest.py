import jax
import pytest
import torch


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


@pytest.fixture(scope='module')
def one_torch_thread():
  """torch on one thread for a module: on tiny matrices, torch's bfloat16 matmuls
  spend 25x longer handing work between two threads than computing."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
