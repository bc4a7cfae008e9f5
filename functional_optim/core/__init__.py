"""The protocol every transformation speaks (optax's), and what they share.

``core`` imports nothing else from the package.
"""

from optax import MaskedNode

from functional_optim.core.clipping import (
    clip_grad_norm, clip_grad_value, clipped_by_norm, clipped_by_value, total_norm)
from functional_optim.core.hyperparams import Hyperparams, Schedule, ScalarOrSchedule
from functional_optim.core.hyperparams_access import get_hyperparams, set_hyperparams
from functional_optim.core.mixed_precision import MixedPrecisionState, mixed_precision
from functional_optim.core.nonfinite import ApplyIfFiniteState, apply_if_finite
from functional_optim.core.partition import PartitionState, partition
from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, apply_updates, chain,
    with_extra_args_support)

__all__ = [
    'ApplyIfFiniteState', 'GradientTransformation', 'GradientTransformationExtraArgs',
    'Hyperparams', 'MaskedNode', 'MixedPrecisionState', 'PartitionState', 'Schedule',
    'ScalarOrSchedule', 'apply_if_finite', 'apply_updates', 'chain', 'clip_grad_norm',
    'clip_grad_value', 'clipped_by_norm', 'clipped_by_value', 'get_hyperparams',
    'mixed_precision', 'partition', 'set_hyperparams', 'total_norm', 'with_extra_args_support',
]
