"""How the optimizers' per-element math runs: per leaf, packed, or as a Pallas kernel.

* :mod:`~functional_optim.kernels.elementwise`: the two pure functions an
  elementwise optimizer is made of, and the per-leaf loop;
* :mod:`~functional_optim.kernels.evaluation`: :func:`run_math`, the math on one
  array (complex pairs, 16-bit in float32), what every implementation calls;
* :mod:`~functional_optim.kernels.packing`: flat per-dtype buffers
  (:func:`pack`, :class:`Packed`) and the packed state layout;
* :class:`SharedPerLeaf` (:mod:`~functional_optim.core.shared_scalars`): the
  per-leaf layout's per-param ``step``, kept once per group of params;
* :mod:`~functional_optim.kernels.foreach`: the math over packed buffers;
* :mod:`~functional_optim.kernels.pallas`: the same as one fused Pallas kernel;
* :mod:`~functional_optim.kernels.dispatch`: ``implementation=`` and its default.
"""

from functional_optim.core.shared_scalars import SharedPerLeaf
from functional_optim.kernels.dispatch import (
    IMPLEMENTATIONS, choose_implementation, default_implementation)
from functional_optim.kernels.elementwise import elementwise_transformation
from functional_optim.kernels.evaluation import run_math
from functional_optim.kernels.packing import (
    Packed, PackSpec, PerLeaf, edit_per_leaf, pack, pack_state, unpack_state)
from functional_optim.kernels.pallas import pallas_options

__all__ = [
    'IMPLEMENTATIONS', 'PackSpec', 'Packed', 'PerLeaf', 'SharedPerLeaf', 'choose_implementation',
    'default_implementation', 'edit_per_leaf', 'elementwise_transformation', 'pack',
    'pack_state',
    'pallas_options', 'run_math', 'unpack_state',
]

