"""Sphinx configuration of the book's website (built by tools/build_site.py, `make site`).

The chapters are the committed, executed notebooks, rendered by MyST-NB without running them again.
tools/build_site.py stages them with a generated landing page under build/site/_src and builds into
build/site/html; nothing outside build/site/ is written.
"""
import os

project = "Is this a cat or a dog? A hands-on book on CNNs"
author = "The cnn-book authors"
copyright = "the cnn-book authors, MIT licence"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Never execute: the committed notebooks carry the outputs of the recorded full runs.
nb_execution_mode = "off"
nb_output_stderr = "remove"          # TensorFlow's start-up chatter is not part of the book
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

# MathJax 3 from the pinned django-static-mathjax wheel, copied into _static by tools/build_site.py:
# the site loads nothing from the internet.
mathjax_path = "mathjax/tex-svg.js"

html_theme = "sphinx_book_theme"
html_title = "Is this a cat or a dog?"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_favicon = "_static/favicon.svg"    # (without one, Chromium asks for /favicon.ico and logs a 404)
html_last_updated_fmt = None
html_copy_source = False             # the notebooks are linked from GitHub; no 5 MB copies in _sources
html_show_sourcelink = False
html_theme_options = {
    "repository_url": os.environ.get("BOOK_REPOSITORY", ""),
    "use_repository_button": bool(os.environ.get("BOOK_REPOSITORY")),
    "use_download_button": False,
    "show_toc_level": 2,
    "show_navbar_depth": 2,
    "navigation_with_keys": False,
}
# Light pages (the figures are drawn on white). Left empty, the theme logs a console error on every page.
html_context = {"default_mode": "light"}
