"""The documentation site (docs/): it builds without a warning, its API pages name
every public name, and its internal links resolve.

The site is built here with warnings as errors, or read from
``FUNCTIONAL_OPTIM_DOCS_HTML`` when a build is already there (``.ci/run docs``
builds it first). Needs the ``docs`` extra: ``pip install ".[docs]"``.
"""

from __future__ import annotations

import html.parser
import os
import pathlib
import subprocess
import sys
import urllib.parse

import pytest

pytest.importorskip('sphinx', reason='the documentation needs the docs extra: '
                    'pip install ".[docs]"')
pytest.importorskip('myst_nb', reason='the documentation needs the docs extra: '
                    'pip install ".[docs]"')

import functional_optim as fo  # noqa: E402
from functional_optim import averaging, distributed, kernels, optim, schedules  # noqa: E402
from functional_optim.interop import torch as interop_torch  # noqa: E402
from functional_optim.optim import lr_scheduler, swa_utils  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent

# Each namespace's public names, documented on its own page (a name re-exported
# from elsewhere is documented under this namespace too, as torch documents
# torch.optim.swa_utils.update_bn). Constants are described in a page's text.
NAMESPACES = {
    'functional_optim': fo, 'functional_optim.optim': optim,
    'functional_optim.optim.lr_scheduler': lr_scheduler,
    'functional_optim.optim.swa_utils': swa_utils, 'functional_optim.schedules': schedules,
    'functional_optim.averaging': averaging, 'functional_optim.distributed': distributed,
    'functional_optim.kernels': kernels, 'functional_optim.interop.torch': interop_torch,
}
SUBPACKAGES = {'averaging', 'distributed', 'kernels', 'schedules', 'lr_scheduler',
               'swa_utils', 'optimizer'}
CONSTANTS = {'EPOCH_DEPRECATION_WARNING', 'IMPLEMENTATIONS'}


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> pathlib.Path:
  built = os.environ.get('FUNCTIONAL_OPTIM_DOCS_HTML')
  if built:
    return pathlib.Path(built).resolve()
  out = tmp_path_factory.mktemp('docs') / 'html'
  result = subprocess.run(
      [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
       str(ROOT / 'docs'), str(out)], capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f'the docs build failed:\n{result.stdout}\n{result.stderr}'
  return out


class _Page(html.parser.HTMLParser):
  """The ids a page defines and the links and sources it uses."""

  def __init__(self):
    super().__init__()
    self.ids: set[str] = set()
    self.links: list[str] = []

  def handle_starttag(self, tag, attrs):
    for name, value in attrs:
      if name == 'id' and value:
        self.ids.add(value)
      elif name in ('href', 'src') and value:
        self.links.append(value)


def _pages(site: pathlib.Path) -> dict[pathlib.Path, _Page]:
  pages = {}
  for path in site.resolve().rglob('*.html'):
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    pages[path] = page
  return pages


@pytest.fixture(scope='module')
def pages(site):
  return _pages(site)


def test_every_public_name_has_its_api_entry(site, pages):
  documented = set().union(*(page.ids for page in pages.values()))
  text = ' '.join(p.read_text(encoding='utf-8') for p in (site / 'api').glob('*.html'))
  missing = []
  for prefix, module in NAMESPACES.items():
    for name in module.__all__:
      if name in SUBPACKAGES:
        continue
      if name in CONSTANTS:
        if name not in text:
          missing.append(f'{prefix}.{name} (mentioned on its page)')
      elif f'{prefix}.{name}' not in documented:
        missing.append(f'{prefix}.{name}')
  assert not missing, f'public names without an API entry (docs/api/*.rst): {missing}'


def test_internal_links_resolve(site, pages):
  broken = []
  for path, page in pages.items():
    for link in page.links:
      parsed = urllib.parse.urlsplit(link)
      if parsed.scheme or parsed.netloc or link.startswith(('mailto:', 'data:')):
        continue  # external (the footer's credits): not the site's own
      target = path if not parsed.path else (path.parent / urllib.parse.unquote(
          parsed.path)).resolve()
      if target.is_dir():
        target = target / 'index.html'
      if not target.exists():
        broken.append(f'{path.relative_to(site.resolve())}: {link}')
      elif parsed.fragment and target.suffix == '.html':
        ids = pages[target].ids if target in pages else set()
        if parsed.fragment not in ids:
          broken.append(f'{path.relative_to(site.resolve())}: {link} (no such anchor)')
  assert not broken, f'{len(broken)} broken internal links, e.g. {broken[:10]}'


def test_pages_need_no_network(pages):
  # Scripts, styles and images come from the site (MathJax included), so the pages
  # render on a machine without internet.
  remote = sorted({link for page in pages.values() for link in page.links
                   if link.startswith(('http://', 'https://', '//'))
                   and link.endswith(('.js', '.css', '.png', '.svg', '.woff2'))})
  assert not remote, remote


def test_math_is_rendered_by_the_bundled_mathjax(site):
  page = (site / 'api' / 'generated' / 'functional_optim.adam.html').read_text(
      encoding='utf-8')
  assert '_static/mathjax/tex-chtml.js' in page
  assert (site / '_static' / 'mathjax' / 'tex-chtml.js').exists()
  assert r'\operatorname{lerp}' in page  # Adam's math, for MathJax to typeset
