"""Sphinx configuration of the documentation site.

Build it with ``pip install ".[docs]"`` and
``python -m sphinx -W -b html docs docs/_build/html`` (README, "Documentation").

Sphinx reads the docstrings as they are written (Google style, ``:math:``,
doctested examples) through autodoc and napoleon; myst-nb renders the Markdown
guides and the notebooks with their stored outputs (never re-executed here).
MathJax is served from the site itself (the copy the sphinx-mathjax-offline
package ships, see ``setup`` below): the pages need no network.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil

import functional_optim

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent

project = 'functional_optim'
author = 'the functional_optim developers'
copyright = '2026, the functional_optim developers'
release = getattr(functional_optim, '__version__', '')

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'myst_nb',
]

# Docstrings: Google style, the signature's annotations in the description.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autosummary_generate = True
autodoc_typehints = 'description'
# Types beside the parameters a docstring describes (no list of bare types).
autodoc_typehints_description_target = 'documented'
# A class page lists its methods, inherited ones too (the facade classes' step,
# state_dict, ... are Optimizer's), as torch's pages do: docs/_templates.
autosummary_ignore_module_all = False
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': False}

# Markdown and notebooks.
myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3
nb_execution_mode = 'off'  # the notebooks' stored outputs, as tests/test_notebooks.py made them
source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb', '.ipynb': 'myst-nb'}

html_theme = 'furo'
html_title = 'functional_optim'
exclude_patterns = ['_build']
templates_path = ['_templates']


# --------------------------------------------------------------------------
# Generated inputs: the notebooks (copied, outputs kept) and the gallery's
# images (taken from the notebooks' stored outputs). Both are gitignored.

NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))


def _copy_notebooks() -> None:
  target = HERE / 'notebooks'
  target.mkdir(exist_ok=True)
  for notebook in NOTEBOOKS:
    shutil.copyfile(notebook, target / notebook.name)


def _gallery_images() -> None:
  """Each PNG a notebook stored, as ``_generated/<notebook>-<n>.png``."""
  target = HERE / '_generated'
  target.mkdir(exist_ok=True)
  for notebook in NOTEBOOKS:
    cells = json.loads(notebook.read_text())['cells']
    images = [output['data']['image/png'] for cell in cells
              for output in cell.get('outputs', []) if 'image/png' in output.get('data', {})]
    for n, image in enumerate(images):
      data = ''.join(image) if isinstance(image, list) else image
      (target / f'{notebook.stem}-{n}.png').write_bytes(base64.b64decode(data))


_copy_notebooks()
_gallery_images()
# autosummary writes a page per name listed in docs/api/*.rst and never deletes
# one: start empty, so a name taken off a list is off the site.
shutil.rmtree(HERE / 'api' / 'generated', ignore_errors=True)


# --------------------------------------------------------------------------
# MathJax from the site, not a CDN. The sphinx-mathjax-offline distribution ships
# MathJax 3 in a directory whose name is not importable ('sphinx-mathjax-offline'),
# so it cannot be listed in ``extensions``; this does what its setup() does.

def _mathjax_directory() -> pathlib.Path:
  from importlib import metadata
  files = metadata.files('sphinx-mathjax-offline') or []
  script = next(f for f in files if str(f).endswith('static/mathjax/tex-chtml.js'))
  return pathlib.Path(script.locate()).parent


mathjax_path = 'mathjax/tex-chtml.js'


def _copy_mathjax(app, exception) -> None:
  if exception is None:
    from sphinx.util.fileutil import copy_asset
    copy_asset(str(_mathjax_directory()), str(pathlib.Path(app.outdir) / '_static' / 'mathjax'))


def setup(app):
  app.connect('build-finished', _copy_mathjax)
