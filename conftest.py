"""Rules for both test paths: ``tests`` and the package's doctests."""

import importlib.util

import pytest

from tests.common import TORCH_REASON, imports_torch


def pytest_collection_modifyitems(config, items):
  """Without torch, the doctests whose examples import it are skipped."""
  if importlib.util.find_spec('torch') is not None:
    return
  skip = pytest.mark.skip(reason=TORCH_REASON)
  for item in items:
    test = getattr(item, 'dtest', None)  # a doctest item's DocTest
    if test is not None and any(imports_torch(example.source) for example in test.examples):
      item.add_marker(skip)
