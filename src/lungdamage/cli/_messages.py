"""One line per message on the command line.

The DICOM reader logs each of its warnings, emits it as a Python warning (for
library users) and keeps it with the result, which ``score`` lists under its
table: three copies of one message.  The CLI shows each message once:

- a logging filter drops a message already shown;
- Python warnings (the reader's and third-party ones, e.g. pydicom's) are
  routed to the same logger as one line, without the source line;
- :func:`without_shown` drops from the result summary the ``warning:`` lines
  already shown while the scan was read.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["install", "without_shown"]

#: Messages shown on stderr by this process (whitespace-normalised).
_SHOWN: set[str] = set()


def _norm(text: str) -> str:
    return " ".join(str(text).split())


class _OncePerMessage(logging.Filter):
    """Drop a message already shown; name CLI flags instead of Python arguments (see :mod:`._flags`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ._flags import to_cli

        msg = _norm(record.getMessage())
        if msg in _SHOWN:
            return False
        _SHOWN.add(msg)
        record.msg, record.args = to_cli(msg), None
        return True


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("lungdamage").warning("%s", _norm(str(message)))


def install(handler: logging.Handler) -> None:
    """Deduplicate ``handler``'s messages and show Python warnings through it, one line each."""
    _SHOWN.clear()
    handler.addFilter(_OncePerMessage())
    warnings.showwarning = _showwarning


def without_shown(summary: str) -> str:
    """``summary`` without its ``warning: ...`` lines whose message was already shown on stderr."""
    keep = [
        line for line in summary.splitlines()
        if not (line.startswith("warning: ") and _norm(line[len("warning: "):]) in _SHOWN)
    ]
    return "\n".join(keep)
