"""The rater page: one static HTML document (``rater_page.html``) with inline CSS and vanilla JS.

Why static: the page carries nothing about the session; everything comes from the rater's
own state endpoint, and audio is fetched by opaque id with the token in a header and played
from a ``blob:`` URL, so neither the DOM nor any URL names a condition or a file. No CDN, no
external fetch: the page works on an air-gapped lab network.
"""

from pathlib import Path

RATER_PAGE = (Path(__file__).with_name("rater_page.html")).read_text(encoding="utf-8")
