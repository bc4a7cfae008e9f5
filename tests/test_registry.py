"""The registry (``tests/algorithms.py``) holds every algorithm the package has.

Every cross-algorithm test takes its algorithms from the registry, so an
algorithm missing there is missing from all of them at once, silently: these
fail instead, for a builder of ``functional_optim.optimizers`` and for a facade
class of ``functional_optim.optim`` that has no entry.
"""

from __future__ import annotations

import inspect

import pytest

from functional_optim import optim, optimizers
from tests.algorithms import ALGORITHMS, ELEMENTWISE, NotHere, PerAlgorithm


def _builders() -> set[str]:
  """The names in ``optimizers.__all__`` that build a transformation: its functions
  (the rest are the state classes)."""
  return {name for name in optimizers.__all__ if inspect.isfunction(getattr(optimizers, name))}


def _facade_classes() -> set[str]:
  """torch.optim's optimizer classes as ``functional_optim.optim`` exports them
  (``Optimizer`` is their base, not an algorithm)."""
  return {name for name in optim.__all__
          if inspect.isclass(cls := getattr(optim, name))
          and issubclass(cls, optim.Optimizer) and cls is not optim.Optimizer}


def test_every_builder_has_an_entry():
  missing = sorted(_builders() - set(ALGORITHMS))
  assert not missing, f'add {missing} to tests/algorithms.py'
  not_builders = sorted(set(ALGORITHMS) - _builders())
  assert not not_builders, f'{not_builders}: in the registry, not in optimizers.__all__'


def test_every_facade_class_has_an_entry():
  torch_names = {a.torch_name for a in ALGORITHMS.values()}
  missing = sorted(_facade_classes() - torch_names)
  assert not missing, f'no entry of tests/algorithms.py has these torch_names: {missing}'
  not_classes = sorted(torch_names - _facade_classes())
  assert not not_classes, f'{not_classes}: torch_names with no class in functional_optim.optim'
  assert len(torch_names) == len(ALGORITHMS), 'two entries share a torch_name'


@pytest.mark.parametrize('name', ALGORITHMS)
def test_an_entry_names_its_builder_and_its_class(name):
  algorithm = ALGORITHMS[name]
  assert algorithm.builder is getattr(optimizers, name)
  assert algorithm.facade is getattr(optim, algorithm.torch_name)
  # The builder says which torch class it mirrors (optimizers._builder.mirrors).
  assert algorithm.build().torch_name == algorithm.torch_name
  # The per-element math runs three ways exactly where the builder takes the choice.
  takes_implementation = 'implementation' in inspect.signature(algorithm.builder).parameters
  assert takes_implementation == algorithm.elementwise
  assert (name in ELEMENTWISE) == algorithm.elementwise


def test_the_registry_names_torchs_classes(torch):
  for algorithm in ALGORITHMS.values():
    assert inspect.isclass(getattr(torch.optim, algorithm.torch_name, None)), algorithm.name


def test_a_table_without_an_algorithm_fails_the_test_that_needs_it():
  table = PerAlgorithm('this test', {'sgd': 1, 'lbfgs': NotHere('for the example')})
  assert table['sgd'] == 1
  # Every name but the NotHere one is run, those without an entry included...
  assert table.names() == [name for name in ALGORITHMS if name != 'lbfgs']
  assert table.names(['lbfgs', 'adam', 'sgd']) == ['adam', 'sgd']
  # ...and fails there, rather than skipping.
  with pytest.raises(pytest.fail.Exception, match="'adam' is in the registry .* not in this test"):
    table['adam']
  with pytest.raises(KeyError, match='not in the registry'):
    PerAlgorithm('this test', {'adamm': 1})
