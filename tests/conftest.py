import jax
import pytest


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
