"""``functional_optim.optim.lr_scheduler``: ``torch.optim.lr_scheduler`` over the facade
optimizers.

The same classes, arguments, attributes, warnings and errors as torch's; every
lr is the same Python float torch computes (same formulas, same order of
operations). A scheduler edits ``optimizer.param_groups``, which the facade's
compiled step reads as data, so scheduling never recompiles. ``state_dict()`` has
torch's keys: a torch scheduler's state loads into ours and ours into torch's.

    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.ones(2)}, lr=0.1, momentum=0.9)
    >>> sched = optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    >>> for epoch in range(20):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.025]
"""

from functional_optim.optim.lr_scheduler._base import EPOCH_DEPRECATION_WARNING, LRScheduler
from functional_optim.optim.lr_scheduler._compose import ChainedScheduler, SequentialLR
from functional_optim.optim.lr_scheduler._cosine import (
    CosineAnnealingLR, CosineAnnealingWarmRestarts)
from functional_optim.optim.lr_scheduler._cyclic import CyclicLR, OneCycleLR
from functional_optim.optim.lr_scheduler._decay import (
    ConstantLR, ExponentialLR, LinearLR, MultiStepLR, PolynomialLR, StepLR)
from functional_optim.optim.lr_scheduler._lambdas import LambdaLR, MultiplicativeLR
from functional_optim.optim.lr_scheduler._plateau import ReduceLROnPlateau

__all__ = ['ChainedScheduler', 'ConstantLR', 'CosineAnnealingLR',
           'CosineAnnealingWarmRestarts', 'CyclicLR', 'EPOCH_DEPRECATION_WARNING',
           'ExponentialLR', 'LRScheduler', 'LambdaLR', 'LinearLR', 'MultiStepLR',
           'MultiplicativeLR', 'OneCycleLR', 'PolynomialLR', 'ReduceLROnPlateau',
           'SequentialLR', 'StepLR']
