"""Sphinx configuration for the masakarimonitors_iim documentation.

Built with ``make docs`` (or ``tox -e docs``) as
``sphinx-build -W -b html doc/source doc/build/html``: any warning fails
the build, so a page that names an option that does not exist (through
the ``:oslo.config:option:`` role) fails too.
"""
from __future__ import annotations

project = "masakarimonitors_iim"
copyright = "masakarimonitors_iim developers"
author = "masakarimonitors_iim developers"

extensions = [
    # .. show-options:: renders the options from the same entry point
    # oslo-config-generator reads, so the reference cannot drift.
    "oslo_config.sphinxext",
]

# Only what is written by hand here; the generated reference is in
# configuration.rst.
exclude_patterns: list[str] = []
master_doc = "index"
language = "en"

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = "masakarimonitors_iim"
html_show_sourcelink = False
