"""The registry of algorithms that every cross-algorithm test runs over.

One entry per builder in ``functional_optim.optimizers``: a configuration that
turns on the algorithm's options (so a test over the registry exercises them),
the torch class it mirrors, the per-param state keys torch keeps for that
configuration, and what the algorithm needs that others do not (matrices only,
sparse gradients, an objective). ``tests/test_registry.py`` fails when a builder
or a facade class is missing here, as optax's alias tests fail for an alias
missing from theirs.

A test that needs data of its own per algorithm (torch's extra kwargs, a Pallas
case, a hypothesis strategy) keeps it beside itself in a :class:`PerAlgorithm`
table, keyed by registry name, and takes its parametrization from the registry
(``table.names()``): a new algorithm then reaches that test at once and fails
there, saying what to add, until the table has an entry for it.

torch-free: tests that compare against torch look the class up by
``torch_name`` themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import sparse

import functional_optim as fo
from functional_optim import optim


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One optimizer, as the cross-algorithm tests see it."""
  name: str
  torch_name: str
  kwargs: dict[str, Any]
  state_keys: tuple[str, ...]
  # Runs its per-element math three ways (implementation='loop'/'foreach'/'fused').
  elementwise: bool = True
  # Muon: 2-D params only.
  matrices_only: bool = False
  # SparseAdam: BCOO gradients only.
  sparse_gradients: bool = False
  # LBFGS: update needs the objective (value_fn) and takes no gradients.
  needs_objective: bool = False

  @property
  def builder(self) -> Callable[..., fo.GradientTransformationExtraArgs]:
    return getattr(fo, self.name)

  @property
  def facade(self) -> type[optim.Optimizer]:
    """Its class in ``functional_optim.optim``, named as torch's."""
    return getattr(optim, self.torch_name)

  def build(self, **overrides) -> fo.GradientTransformationExtraArgs:
    return self.builder(**{**self.kwargs, **overrides})

  def params(self, dtype=jnp.float32) -> dict[str, jax.Array]:
    """A small params tree it accepts, in ``dtype``: a matrix, a vector and a scalar
    (for Muon two matrices; for SparseAdam, whose gradients are sparse, no scalar)."""
    tree = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4),
            'b': jnp.linspace(0.5, -0.5, 4), 's': jnp.asarray(0.7)}
    if self.matrices_only:
      tree = {'w': tree['w'], 'v': jnp.linspace(1.0, -1.0, 6).reshape(2, 3)}
    if self.sparse_gradients:
      del tree['s']
    return jax.tree.map(lambda x: x.astype(dtype), tree)

  def grads(self, params, scale: float = 1.0):
    """Gradients of a smooth loss, in the form the algorithm takes."""
    grads = jax.tree.map(lambda p: scale * jnp.sin(3.0 * p + 0.1), params)
    if self.sparse_gradients:  # every entry stored: a static count, traceable
      grads = jax.tree.map(lambda g: sparse.BCOO.fromdense(g, nse=g.size), grads)
    return grads

  def update(self, tx, grads, state, params, **extra):
    """``tx.update`` as the algorithm is called (LBFGS with its objective)."""
    if self.needs_objective:
      extra.setdefault('value_fn', objective)
      grads = None
    return tx.update(grads, state, params, **extra)


def objective(params) -> jax.Array:
  """A smooth, non-quadratic loss of any params tree (LBFGS minimizes it)."""
  return sum(jnp.sum(jnp.log(jnp.cosh(p - 0.2)) + 0.05 * p ** 4)
             for p in jax.tree.leaves(params))


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in [
    Algorithm('sgd', 'SGD', dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
              ('momentum_buffer',)),
    Algorithm('adam', 'Adam', dict(lr=0.05, amsgrad=True, weight_decay=0.05, maximize=True),
              ('step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq')),
    Algorithm('adamw', 'AdamW', dict(lr=0.05, weight_decay=0.3),
              ('step', 'exp_avg', 'exp_avg_sq')),
    Algorithm('adadelta', 'Adadelta', dict(lr=0.5, weight_decay=0.05),
              ('step', 'square_avg', 'acc_delta')),
    Algorithm('adagrad', 'Adagrad',
              dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.2),
              ('step', 'sum')),
    Algorithm('adamax', 'Adamax', dict(lr=0.05, weight_decay=0.05),
              ('step', 'exp_avg', 'exp_inf')),
    Algorithm('asgd', 'ASGD', dict(lr=0.05, t0=5, weight_decay=0.05),
              ('step', 'eta', 'mu', 'ax')),
    Algorithm('nadam', 'NAdam', dict(lr=0.05, weight_decay=0.05, decoupled_weight_decay=True),
              ('step', 'exp_avg', 'exp_avg_sq', 'mu_product')),
    Algorithm('radam', 'RAdam', dict(lr=0.05, weight_decay=0.05),
              ('step', 'exp_avg', 'exp_avg_sq')),
    Algorithm('rmsprop', 'RMSprop', dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.05),
              ('step', 'square_avg', 'momentum_buffer', 'grad_avg')),
    Algorithm('rprop', 'Rprop', dict(lr=0.05), ('step', 'prev', 'step_size')),
    Algorithm('adafactor', 'Adafactor', dict(lr=0.02, weight_decay=0.01),
              ('step', 'row_var', 'col_var', 'variance'), elementwise=False),
    Algorithm('muon', 'Muon', dict(lr=0.02, weight_decay=0.05), ('momentum_buffer',),
              elementwise=False, matrices_only=True),
    Algorithm('sparse_adam', 'SparseAdam', dict(lr=0.05), ('step', 'exp_avg', 'exp_avg_sq'),
              elementwise=False, sparse_gradients=True),
    Algorithm('lbfgs', 'LBFGS', dict(lr=0.5, max_iter=4, line_search_fn='strong_wolfe'),
              ('func_evals', 'n_iter', 'd', 't', 'old_dirs', 'old_stps', 'ro', 'H_diag',
               'prev_flat_grad', 'prev_loss'), elementwise=False, needs_objective=True),
]}

#: The algorithms that run their math per leaf, packed or fused (implementation=).
ELEMENTWISE = {name: a for name, a in ALGORITHMS.items() if a.elementwise}


@dataclasses.dataclass(frozen=True)
class NotHere:
  """A :class:`PerAlgorithm` entry for an algorithm the test does not run: why, and
  which test covers what it would check, if one does (``names()`` leaves it out)."""
  why: str


class PerAlgorithm(dict):
  """Data one test keeps per algorithm, keyed by registry name.

  Looking up an algorithm of the registry the table lacks fails the test (a skip
  would hide the gap), naming the table to extend; a name the registry lacks (a
  typo, a removed algorithm) fails at import. An algorithm the test does not run
  still has an entry: :class:`NotHere`, with the reason.
  """

  def __init__(self, where: str, entries: dict[str, Any]):
    unknown = sorted(set(entries) - set(ALGORITHMS))
    if unknown:
      raise KeyError(f'{where}: {unknown} not in the registry (tests/algorithms.py)')
    super().__init__(entries)
    self.where = where

  def __missing__(self, name: str):
    if name not in ALGORITHMS:
      raise KeyError(name)
    pytest.fail(f'{name!r} is in the registry (tests/algorithms.py) but not in {self.where}: '
                'add an entry for it (NotHere(why) if this test does not run it)',
                pytrace=False)

  def names(self, among: Iterable[str] | None = None) -> list[str]:
    """The registry's names (or those of ``among``, registry order) the test runs: all
    but the NotHere ones; a name without an entry is among them, to fail."""
    among = ALGORITHMS if among is None else among
    return [name for name in among if not isinstance(self.get(name), NotHere)]
