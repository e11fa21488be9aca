"""Sphinx configuration of ivm's documentation (the guide, the API reference and the design
notes). Build it from outside the source tree, against the installed package, with warnings as
errors (as .ci/run does)::

    python3 -P -m sphinx -W --keep-going -b html docs /tmp/ivm-docs

(-P keeps the source tree's ivm/, which lacks the compiled parts, off sys.path, so autodoc
imports the installed ivm.)
"""

from __future__ import annotations

import os

# Context.eval_sync, Script.run_sync and Reference.apply_sync are C methods at run time
# (ivm/_call.py, c_method), which carry no annotations: the reference shows the Python
# methods they stand for, with their overloads.
os.environ["IVM_PY_C_METHODS"] = "0"

import ivm  # noqa: E402

project = "ivm"
author = "the ivm developers"
copyright = "2026, the ivm developers"  # noqa: A001 (Sphinx's name)
version = release = ivm.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples"]
root_doc = "index"

# The API reference: members in source order, signatures with their annotations as written
# (the package uses `from __future__ import annotations`).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

# Headings become link targets (`page.md#heading`), as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# No network at build time: intersphinx stays empty unless a local inventory is given.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "alabaster"
html_title = f"ivm {release}"
