"""Bad hyperparameters raise what torch raises, with torch's message."""

import jax.numpy as jnp
import pytest

import functional_optim as fo
from tests.common import assert_same_error_as_torch

BAD = [
    ('SGD', dict(lr=-0.1)),
    ('SGD', dict(momentum=-0.5)),
    ('SGD', dict(weight_decay=-1e-4)),
    ('SGD', dict(nesterov=True)),
    ('SGD', dict(momentum=0.9, dampening=0.1, nesterov=True)),
    ('SGD', dict(fused=True, foreach=True)),
    ('SGD', dict(fused=True, differentiable=True)),
    ('Adam', dict(lr=-1e-3)),
    ('Adam', dict(eps=-1e-8)),
    ('Adam', dict(betas=(1.0, 0.999))),
    ('Adam', dict(betas=(-0.1, 0.999))),
    ('Adam', dict(betas=(0.9, 1.0))),
    ('Adam', dict(weight_decay=-0.1)),
    ('Adam', dict(fused=True, foreach=True)),
    ('Adam', dict(fused=True, differentiable=True)),
    ('AdamW', dict(lr=-1.0)),
    ('AdamW', dict(betas=(0.9, 1.5))),
    ('AdamW', dict(eps=-1.0)),
    ('AdamW', dict(weight_decay=-1e-2)),
    ('AdamW', dict(fused=True, foreach=True)),
]
OURS = {'SGD': fo.sgd, 'Adam': fo.adam, 'AdamW': fo.adamw}


@pytest.mark.parametrize('name,kwargs', BAD, ids=[f'{n}-{k}' for n, k in BAD])
def test_same_error_as_torch(name, kwargs, torch):
  assert_same_error_as_torch(getattr(torch.optim, name), OURS[name], kwargs)


@pytest.mark.parametrize('builder', OURS.values())
def test_array_hyperparameter_must_hold_one_element(builder):
  with pytest.raises(ValueError, match=r'lr as an array must be 1-element, got shape \(3,\)'):
    builder(lr=jnp.ones(3))


@pytest.mark.parametrize('builder', OURS.values())
def test_array_hyperparameters_are_checked_like_numbers(builder):
  with pytest.raises(ValueError, match='Invalid learning rate: -0.5'):
    builder(lr=jnp.asarray(-0.5))


def test_non_numeric_hyperparameter():
  with pytest.raises(TypeError, match='lr must be a number, an array or a schedule'):
    fo.adam(lr='0.1')
  with pytest.raises(TypeError, match='betas must be a pair'):
    fo.adam(betas=0.9)
  with pytest.raises(ValueError, match='betas must be a pair'):
    fo.adam(betas=(0.9, 0.99, 0.5))


def test_schedules_and_integer_betas_are_accepted():
  # Schedules cannot be checked before they run; torch's "betas must be either
  # both floats or both Tensors" is not copied: (0, 0.99) is a valid pair.
  fo.adam(lr=lambda count: -1.0)
  fo.adam(betas=(0, 0.99))
  fo.sgd(lr=0.1, momentum=lambda count: 0.9, nesterov=True)
