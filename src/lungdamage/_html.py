"""The one HTML page helper of the scan report, the batch index and the study report.

Page shell, shared CSS, escaping, image embedding and writing.  Every page is
self-contained: CSS inline, images as ``data:`` URIs, no external assets.
Every table sits in a box of its own that scrolls sideways if it must, so the
page itself never does.

Examples
--------
>>> print(escape("<b> & 'x'"))
&lt;b&gt; &amp; &#x27;x&#x27;
>>> text = page("t", "<table><tr><td>1</td></tr></table>")
>>> '<div class="tw"><table>' in text and text.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["BASE_CSS", "escape", "png_data_uri", "img_tag", "page", "write_page"]

#: Rules every page shares; each page adds its own (layout, alignment, colours of its classes).
BASE_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1b1b1b}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #d0d0d0;padding:3px 8px;vertical-align:top}
th{background:#eee}
.tw{max-width:100%;overflow-x:auto}
img{max-width:100%;height:auto}
code{font-size:.9em}
"""


def escape(value: Any, *, max_chars: int | None = None) -> str:
    """``value`` as HTML text; cut to ``max_chars`` characters first (``data:image/`` URIs are never cut)."""
    text = "" if value is None else str(value)
    if max_chars is not None and not text.startswith("data:image/"):
        from .io._dicom_headers import shorten

        text = shorten(text, max_chars)
    return html.escape(text)


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def img_tag(png: str | Path, alt: str, *, css_class: str = "") -> str:
    """An ``<img>`` embedding the PNG file ``png``."""
    cls = f' class="{escape(css_class)}"' if css_class else ""
    return f'<img{cls} alt="{escape(alt)}" src="{png_data_uri(png)}">'


def page(title: str, body: str, *, css: str = "", script: str = "") -> str:
    """The whole page: ``body`` (HTML) in the shell with :data:`BASE_CSS` then ``css``;
    ``script`` (a ``<script>`` element, if any) goes last in the body."""
    body = body.replace("<table", '<div class="tw"><table').replace("</table>", "</table></div>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{BASE_CSS}{css}</style></head>\n<body>\n{body}\n{script}</body></html>\n"
    )


def write_page(path: str | Path, text: str) -> Path:
    """Write ``text`` to a new temporary file beside ``path`` and rename it onto ``path``
    (a symbolic link planted at ``path`` is replaced, never followed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
