"""Sphinx configuration of the course book: `make book` (docs/BOOK.md says why Sphinx + myst-nb).

The source folder is the repository itself (`sphinx-build -c book . build/book`), so every notebook runs where a
learner runs it: in notebooks/, with the library installed in the venv. Only the pages of the book are read
(`include_patterns`): the course notebooks, the exercise statements (never solutions/), README and docs/.

Notebooks are executed by myst-nb through jupyter-cache: a rebuild re-runs only the notebooks whose code changed.
The cache keys on the notebook's code, not on the library nor on SDEDU_QUICK, so quick- and full-mode outputs
live in separate caches; after a library change `make book-clean` forces every notebook to run again.
"""

import os
import pathlib

from sdedu.config import quick_mode

# The kernels that execute the notebooks inherit this: sdedu.widgets.widgets_available() is then False and each
# notebook draws its static figures instead of sliders, which a static page could not move anyway; it also keeps
# nbclient away from widget comms, on which it can hang for good (jupyter/nbclient issue #312).
os.environ["SDEDU_WIDGETS"] = "0"

ROOT = pathlib.Path(__file__).resolve().parents[1]

project = "sdedu"
author = "the sdedu authors"
copyright = "the sdedu authors, MIT licence"
html_title = "sdedu: learn Stable Diffusion by building a tiny one"

# The front page is book/index.md; the site's index.html sends the browser there (templates/redirect.html).
root_doc = "book/index"
include_patterns = [
    "book/index.md",
    "README.md",
    "docs/*.md",
    "notebooks/*.ipynb",
    "exercises/*.ipynb",
]
# Folders Sphinx need not even walk (the venv alone holds tens of thousands of files).
exclude_patterns = [".venv", ".git", "build", "workspace", "runs", "out", "solutions", "**/.ipynb_checkpoints"]

# sphinx-mathjax-offline copies MathJax 3 into _static/ and points mathjax_path at it: no CDN, the site
# renders equations offline and from file://.
extensions = ["myst_nb", "sphinx-mathjax-offline"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # README's [..](#where-your-work-is) links to a heading

# Execution: every course notebook runs (a cell error fails the build); exercise statements are shown as the
# learner gets them, unexecuted (their checks fail until the learner answers).
nb_execution_mode = "cache"
nb_execution_cache_path = str(ROOT / "build" / "book-cache" / ("quick" if quick_mode() else "full"))
nb_execution_excludepatterns = ["exercises/*"]
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 3600  # seconds per cell: full-mode training cells run for minutes on a 2-core CPU
nb_merge_streams = True
# myst-nb would load require.js and the widget manager from a CDN for the saved widget state; the book is
# offline, so sliders are left to the running notebook (their static state is not drawn).
nb_ipywidgets_js = {}

html_theme = "sphinx_book_theme"
html_theme_options = {
    "use_download_button": True,  # each page links to its source: the .ipynb of a notebook
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
# Search results without page summaries: a summary is fetched from the result's page, which a browser refuses
# for a site opened from file://; titles alone work everywhere.
html_show_search_summary = False
html_sourcelink_suffix = ""  # _sources/notebooks/NN.ipynb, not NN.ipynb.txt: the download is a notebook
templates_path = ["_templates"]
html_additional_pages = {"index": "redirect.html"}
html_last_updated_fmt = None
