"""The package's structure, checked: what CONTRIBUTING.md promises a newcomer.

* Layers import downwards only: no import cycle between the package's modules,
  lazy (function-level) imports included; only ``if TYPE_CHECKING:`` imports,
  which never run, are exempt.
* A private module (``_name``) is used only inside its own subpackage.
* No module of the package is over 600 lines.
* Every builder documents each of its arguments, and its shared paragraphs
  (``optimizers._builder.ARGUMENT_DOCS``) are filled in.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import re

import pytest

import functional_optim as fo
from functional_optim import optimizers
from tests.algorithms import ALGORITHMS

PACKAGE = pathlib.Path(fo.__file__).parent
MAX_LINES = 600


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
      isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _imports(path: pathlib.Path) -> list[str]:
  """The package modules ``path`` imports (``from a import b``: ``a.b`` when that is a
  module, else ``a``), wherever in the file, except under ``if TYPE_CHECKING:``."""
  found = []

  def visit(node):
    if isinstance(node, ast.If) and _is_type_checking(node):
      for child in node.orelse:
        visit(child)
      return
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        found.append(full if full in MODULES else node.module)
    elif isinstance(node, ast.Import):
      found.extend(alias.name for alias in node.names)
    for child in ast.iter_child_nodes(node):
      visit(child)

  visit(ast.parse(path.read_text()))
  return [name for name in found if name in MODULES]


def _subpackage(module: str) -> str:
  """The subpackage a module is in ('' for the files directly in functional_optim/)."""
  relative = MODULES[module].relative_to(PACKAGE).parts
  return relative[0] if len(relative) > 1 else ''


def test_no_import_cycle():
  graph = {name: set(_imports(path)) - {name} for name, path in MODULES.items()}
  # A package's __init__ re-exports its modules: importing a module runs its
  # package's __init__ first, so an edge to a package is an edge to its __init__,
  # and an edge from __init__ to its own modules is the re-export, not a cycle.
  cycles, done, on_path = [], set(), []

  def visit(module):
    if module in on_path:
      cycles.append(on_path[on_path.index(module):] + [module])
      return
    if module in done:
      return
    on_path.append(module)
    for target in sorted(graph[module]):
      is_reexport = MODULES[module].name == '__init__.py' and target.startswith(module + '.')
      if not is_reexport:
        visit(target)
    on_path.pop()
    done.add(module)

  for module in graph:
    visit(module)
  assert not cycles, f'import cycles: {cycles}'


def test_private_modules_stay_in_their_subpackage():
  leaks = []
  for name, path in MODULES.items():
    for target in _imports(path):
      private = [part for part in target.split('.')[1:] if part.startswith('_')
                 and not part.startswith('__')]
      if private and _subpackage(target) != _subpackage(name):
        leaks.append(f'{name} imports {target}')
  assert not leaks, leaks


def test_modules_are_at_most_600_lines():
  long = {name: n for name, path in MODULES.items()
          if (n := len(path.read_text().splitlines())) > MAX_LINES}
  assert not long, f'modules over {MAX_LINES} lines: {long}'


# The registry holds every builder (tests/test_registry.py checks it).
@pytest.mark.parametrize('name', sorted(ALGORITHMS))
def test_builder_documents_every_argument(name):
  builder = getattr(optimizers, name)
  doc = builder.__doc__ or ''
  delegate = re.search(r'The arguments are\s+:func:`(\w+)`', doc)
  if delegate:  # adamw: "The arguments are :func:`adam`'s"
    doc = getattr(optimizers, delegate.group(1)).__doc__
    assert set(inspect.signature(builder).parameters) <= set(
        inspect.signature(getattr(optimizers, delegate.group(1))).parameters)
  args = doc[doc.index('Args:'):]
  undocumented = [p for p in inspect.signature(builder).parameters
                  if not re.search(rf'^\s+([\w, ]*\b)?{p}\b[\w, ]*:', args, re.M)]
  assert not undocumented, f'{name} does not document {undocumented}'
  assert not re.search(r'\{(maximize|weight_decay|torch_switches|implementation)\}', doc)


def test_non_elementwise_math_refuses_packed_implementations():
  # Muon's math reads whole matrices: packing params together would mix them.
  with pytest.raises(ValueError, match='per-leaf loop'):
    fo.kernels.elementwise_transformation(
        name='whole_leaf', state_cls=fo.SGDState, hyperparams={'lr': 0.1}, buffers={},
        scalars=lambda step, hp: hp, math=lambda g, p, b, s: (g / g.sum(), b),
        needs_params=False, implementation='foreach', elementwise=False)
