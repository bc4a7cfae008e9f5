"""One module per algorithm, each named after its torch.optim class."""

from functional_optim.optimizers.adam import AdamState, adam
from functional_optim.optimizers.adamw import adamw
from functional_optim.optimizers.sgd import SGDState, sgd

__all__ = ['AdamState', 'SGDState', 'adam', 'adamw', 'sgd']
