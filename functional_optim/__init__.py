"""functional_optim: torch.optim's algorithms as pure JAX gradient transformations.

    >>> import jax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.adamw(lr=1e-3)
    >>> params = {'w': jnp.ones(3)}
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum(p['w'] ** 2))(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = fo.apply_updates(params, updates)
"""

from functional_optim.core import (
    ApplyIfFiniteState, GradientTransformation, GradientTransformationExtraArgs,
    Hyperparams, MaskedNode, MixedPrecisionState, PartitionState, Schedule,
    ScalarOrSchedule, apply_if_finite, apply_updates, chain, clip_grad_norm, clip_grad_value,
    clipped_by_norm, clipped_by_value, get_hyperparams, mixed_precision, partition,
    set_hyperparams, total_norm, with_extra_args_support)
from functional_optim import averaging, distributed, kernels, schedules
from functional_optim.optimizers import *  # noqa: F403  (the algorithms and their states)
from functional_optim.optimizers import __all__ as _optimizers

__version__ = '0.1.0'

__all__ = [
    'ApplyIfFiniteState', 'GradientTransformation', 'GradientTransformationExtraArgs',
    'Hyperparams', 'MaskedNode', 'MixedPrecisionState', 'PartitionState', 'Schedule',
    'ScalarOrSchedule', 'apply_if_finite', 'apply_updates', 'averaging', 'chain',
    'clip_grad_norm', 'clip_grad_value', 'clipped_by_norm', 'clipped_by_value',
    'distributed', 'get_hyperparams', 'kernels', 'mixed_precision', 'partition',
    'schedules', 'set_hyperparams', 'total_norm', 'with_extra_args_support', *_optimizers,
]
