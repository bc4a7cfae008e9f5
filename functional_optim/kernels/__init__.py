"""How the optimizers' per-element math is run over a params tree."""

from functional_optim.kernels.elementwise import elementwise_transformation, run_math

__all__ = ['elementwise_transformation', 'run_math']
