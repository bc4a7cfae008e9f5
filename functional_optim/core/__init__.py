"""The protocol every transformation speaks, and what they share.

``core`` imports nothing else from the package.
"""

from functional_optim.core.hyperparams import (
    Schedule, ScalarOrSchedule, get_hyperparams, set_hyperparams)
from functional_optim.core.mixed_precision import MixedPrecisionState, mixed_precision
from functional_optim.core.nonfinite import ApplyIfFiniteState, apply_if_finite
from functional_optim.core.partition import MaskedNode, PartitionState, partition
from functional_optim.core.transform import (
    GradientTransformation, apply_updates, chain)

__all__ = [
    'ApplyIfFiniteState', 'GradientTransformation', 'MaskedNode', 'MixedPrecisionState',
    'PartitionState', 'Schedule', 'ScalarOrSchedule', 'apply_if_finite', 'apply_updates',
    'chain', 'get_hyperparams', 'mixed_precision', 'partition', 'set_hyperparams',
]
