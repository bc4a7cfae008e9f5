"""What every optimizer builder does besides its math: naming the torch class it mirrors.

:func:`mirrors` wraps a builder so the transformation it returns is a
:class:`~functional_optim.core.transform.TorchOptimizer`: it knows its torch class
and the arguments it was built with (torch's param-group keys), which the facade
and ``interop.torch`` read. It also fills the builder's docstring's shared
paragraphs (:data:`ARGUMENT_DOCS`), as torch fills its optimizers' from
``torch/optim/optimizer.py``'s ``_foreach_doc``, ``_maximize_doc``...
"""

from __future__ import annotations

import functools
import inspect
import textwrap
from typing import Callable, TypeVar

from functional_optim.core.transform import TorchOptimizer

F = TypeVar('F', bound=Callable)

#: The argument descriptions several builders share, written once. A builder's
#: docstring says ``maximize: {maximize}`` and :func:`mirrors` puts the text in.
ARGUMENT_DOCS = {
    'maximize': 'maximize the objective instead of minimizing it.',
    'weight_decay': r'L2 penalty :math:`\lambda` (the Python number 0 compiles it out).',
    'torch_switches': (
        "torch's implementation switches, accepted and checked as torch accepts and "
        'checks them; they choose ``implementation`` as in torch. Every implementation '
        'computes the same update, and every update is differentiable with '
        '``jax.grad``.'),
    'implementation': (
        "how the per-element math runs: ``'loop'``, once per leaf, with state that "
        "mirrors the params; ``'foreach'``, once per dtype over packed buffers, with "
        "packed state; ``'fused'``, one Pallas kernel per dtype on GPU (the packed XLA "
        "run where none compiles). None: torch's ``foreach``/``fused`` decide, else the "
        "backend's default (``fo.kernels.default_implementation()``). All three give "
        'the same numbers.'),
}


def _with_argument_docs(doc: str | None) -> str | None:
  """``doc`` with each ``{name}`` of :data:`ARGUMENT_DOCS` replaced by its text,
  wrapped at the argument's continuation indent (LaTeX braces are left alone)."""
  if doc is None:
    return None
  for name, text in ARGUMENT_DOCS.items():
    token = '{' + name + '}'
    while token in doc:
      at = doc.index(token)
      line_start = doc.rfind('\n', 0, at) + 1
      prefix = doc[line_start:at]
      indent = ' ' * (len(prefix) - len(prefix.lstrip()) + 2)
      wrapped = textwrap.fill(prefix + text, width=88, subsequent_indent=indent)
      doc = doc[:line_start] + wrapped + doc[at + len(token):]
  return doc


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
    build.__doc__ = _with_argument_docs(builder.__doc__)
    return build  # type: ignore[return-value]
  return wrap
