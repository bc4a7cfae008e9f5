"""torch's learning-rate schedulers as pure functions of the step count.

Each builder takes the lr torch's scheduler would find in the optimizer and
torch's arguments, and returns a :class:`TorchSchedule`: ``count -> lr``, the lr
after ``count`` calls of torch's ``scheduler.step()`` (count 0: the value at
construction). They evaluate under ``jax.jit`` with a traced count, and any
optimizer hyperparameter accepts them::

    >>> import functional_optim as fo
    >>> schedule = fo.schedules.cosine_annealing_lr(0.1, T_max=100)
    >>> tx = fo.sgd(lr=schedule, momentum=0.9)

A schedule driven once per epoch rather than per step:
``lambda count: schedule(count // steps_per_epoch)``. ReduceLROnPlateau, which
depends on the loss, is a transformation around the optimizer:
:func:`reduce_lr_on_plateau`.
"""

from functional_optim.schedules.base import TorchSchedule
from functional_optim.schedules.compose import chained, sequential_lr
from functional_optim.schedules.cosine import (
    cosine_annealing_lr, cosine_annealing_warm_restarts)
from functional_optim.schedules.cyclic import cyclic_lr, one_cycle_lr
from functional_optim.schedules.decay import (
    constant_lr, exponential_lr, linear_lr, multi_step_lr, polynomial_lr, step_lr)
from functional_optim.schedules.lambdas import lambda_lr, multiplicative_lr
from functional_optim.schedules.plateau import ReduceLROnPlateauState, reduce_lr_on_plateau

__all__ = [
    'ReduceLROnPlateauState', 'TorchSchedule', 'chained', 'constant_lr',
    'cosine_annealing_lr', 'cosine_annealing_warm_restarts', 'cyclic_lr',
    'exponential_lr', 'lambda_lr', 'linear_lr', 'multi_step_lr',
    'multiplicative_lr', 'one_cycle_lr', 'polynomial_lr', 'reduce_lr_on_plateau',
    'sequential_lr', 'step_lr',
]
