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
    GradientTransformation, Schedule, ScalarOrSchedule, apply_updates, chain,
    get_hyperparams, set_hyperparams)
from functional_optim.optimizers import AdamState, SGDState, adam, adamw, sgd

__version__ = '0.1.0'

__all__ = [
    'AdamState', 'GradientTransformation', 'SGDState', 'Schedule',
    'ScalarOrSchedule', 'adam', 'adamw', 'apply_updates', 'chain',
    'get_hyperparams', 'set_hyperparams', 'sgd',
]
