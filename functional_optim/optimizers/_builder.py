"""What every optimizer builder does besides its math: naming the torch class it mirrors.

:func:`mirrors` wraps a builder so the transformation it returns is a
:class:`~functional_optim.core.transform.TorchOptimizer`: it knows its torch class
and the arguments it was built with (torch's param-group keys), which the facade
and ``interop.torch`` read.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, TypeVar

from functional_optim.core.transform import TorchOptimizer

F = TypeVar('F', bound=Callable)


def mirrors(torch_name: str) -> Callable[[F], F]:
  """Marks a builder as ``torch.optim.<torch_name>``'s: its result carries the name
  and its bound arguments.

  Example:
    >>> import optax
    >>> from functional_optim.optimizers._builder import mirrors
    >>> @mirrors('SGD')
    ... def plain_sgd(lr=0.1):
    ...   return optax.sgd(lr)
    >>> tx = plain_sgd(lr=0.5)
    >>> tx.torch_name, tx.options
    ('SGD', {'lr': 0.5})
  """
  def wrap(builder: F) -> F:
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      tx = builder(*args, **kwargs)
      built = TorchOptimizer(tx.init, tx.update)
      built.torch_name = torch_name
      built.options = dict(bound.arguments)
      return built
    return build  # type: ignore[return-value]
  return wrap
