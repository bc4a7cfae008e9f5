"""The algorithms: each builder (``adam``) and its state (``AdamState``).

One private module per algorithm (``_adam.py``, named after its torch.optim
class), so ``functional_optim.optimizers.adam`` is the builder and never a module
(optax's ``_src`` does the same for its aliases).
"""

from functional_optim.optimizers._adadelta import AdadeltaState, adadelta
from functional_optim.optimizers._adafactor import AdafactorState, adafactor
from functional_optim.optimizers._adagrad import AdagradState, adagrad
from functional_optim.optimizers._adam import AdamState, adam
from functional_optim.optimizers._adamax import AdamaxState, adamax
from functional_optim.optimizers._adamw import adamw
from functional_optim.optimizers._asgd import ASGDState, asgd
from functional_optim.optimizers._lbfgs import LBFGSState, lbfgs
from functional_optim.optimizers._muon import MuonState, muon
from functional_optim.optimizers._nadam import NAdamState, nadam
from functional_optim.optimizers._radam import RAdamState, radam
from functional_optim.optimizers._rmsprop import RMSpropState, rmsprop
from functional_optim.optimizers._rprop import RpropState, rprop
from functional_optim.optimizers._sgd import SGDState, sgd
from functional_optim.optimizers._sparse_adam import SparseAdamState, sparse_adam

__all__ = [
    'ASGDState', 'AdadeltaState', 'AdafactorState', 'AdagradState', 'AdamState',
    'AdamaxState', 'LBFGSState', 'MuonState', 'NAdamState', 'RAdamState',
    'RMSpropState', 'RpropState', 'SGDState', 'SparseAdamState', 'adadelta',
    'adafactor', 'adagrad', 'adam', 'adamax', 'adamw', 'asgd', 'lbfgs', 'muon',
    'nadam', 'radam', 'rmsprop', 'rprop', 'sgd', 'sparse_adam',
]
