"""Sphinx configuration of the documentation site: ``make docs`` builds it into docs/_build/html.

The pages are the Markdown files of this folder (read by MyST, used as they are)
plus api.rst, generated from the docstrings by autodoc.  The build runs with
``-W --keep-going -n``: every warning, and every cross-reference that does not
resolve, fails it.  tests/test_docs.py reads this file (without Sphinx) for
``exclude_patterns``: keep it importable without Sphinx.
"""

from __future__ import annotations

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # autodoc imports the package from this tree

import tarantool_pool  # noqa: E402

project = "tarantool_pool"
author = "the tarantool_pool authors"
copyright = "the tarantool_pool authors"  # noqa: A001 - Sphinx's name for it
release = version = tarantool_pool.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Pages that are not part of the site.  tests/test_docs.py requires every other
# docs/*.md to be in a toctree.
exclude_patterns = ["_build", ".venv", "Thumbs.db", ".DS_Store"]

# -- MyST: the Markdown pages --------------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on GitHub

# -- autodoc: the API reference --------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True  # show `mode=Mode.ANY`, not the enum's repr

# -n: every Python cross-reference must resolve.  Type hints name library types
# that are not part of this site (typing, the standard library) or internal
# helpers of the package that the reference does not document; they are listed
# here, one by one, so that a new unresolved name still fails the build.
nitpicky = True
nitpick_ignore = [
    # Internal types in signatures: the codec's values (Connection.greeting,
    # Response's constructor) and the TypeVar of the with_pool decorator.
    ("py:class", "tarantool_pool.protocol.Greeting"),
    ("py:class", "tarantool_pool.protocol.Frame"),
    ("py:class", "tarantool_pool.helpers.F"),
    # prometheus_client's own types in the exporter's signatures (not part of this site).
    ("py:class", "prometheus_client.metrics_core.Metric"),
    ("py:class", "prometheus_client.registry.CollectorRegistry"),
]

# -- HTML ------------------------------------------------------------------------
html_theme = "alabaster"  # built into Sphinx: no theme dependency
html_title = "tarantool_pool"
html_theme_options = {
    "description": "A Tarantool replica set as one database, from Python",
    "fixed_sidebar": True,
    "page_width": "1180px",  # code samples run to 110 characters
    "sidebar_width": "240px",
}
html_static_path: list[str] = []

