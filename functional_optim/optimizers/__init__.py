"""One module per algorithm, each named after its torch.optim class."""

from functional_optim.optimizers.adadelta import AdadeltaState, adadelta
from functional_optim.optimizers.adafactor import AdafactorState, adafactor
from functional_optim.optimizers.adagrad import AdagradState, adagrad
from functional_optim.optimizers.adam import AdamState, adam
from functional_optim.optimizers.adamax import AdamaxState, adamax
from functional_optim.optimizers.adamw import adamw
from functional_optim.optimizers.asgd import ASGDState, asgd
from functional_optim.optimizers.lbfgs import LBFGSState, lbfgs
from functional_optim.optimizers.muon import MuonState, muon
from functional_optim.optimizers.nadam import NAdamState, nadam
from functional_optim.optimizers.radam import RAdamState, radam
from functional_optim.optimizers.rmsprop import RMSpropState, rmsprop
from functional_optim.optimizers.rprop import RpropState, rprop
from functional_optim.optimizers.sgd import SGDState, sgd
from functional_optim.optimizers.sparse_adam import SparseAdamState, sparse_adam

__all__ = [
    'ASGDState', 'AdadeltaState', 'AdafactorState', 'AdagradState', 'AdamState',
    'AdamaxState', 'LBFGSState', 'MuonState', 'NAdamState', 'RAdamState',
    'RMSpropState', 'RpropState', 'SGDState', 'SparseAdamState', 'adadelta',
    'adafactor', 'adagrad', 'adam', 'adamax', 'adamw', 'asgd', 'lbfgs', 'muon',
    'nadam', 'radam', 'rmsprop', 'rprop', 'sgd', 'sparse_adam',
]
