"""One escaping rule per output format, for text a user controls: tokenizer
names and paths, sweep aliases and values, attribute names, reasons that quote
them, anything read from a results.json made elsewhere. Each writer applies
its format's rule where it writes (a leaf: imports nothing of tokzoo).

- :func:`md`: Markdown table cells and lines (``|``, HTML, newlines);
- :func:`csv_cell`: a CSV cell that a spreadsheet would run as a formula
  (``= + - @``, tab, CR first) is quoted as text (OWASP's rule);
- :func:`console`: rich markup (``[...]``) printed as the text it is;
- :func:`plot`: matplotlib draws user text as text, never as math (``$...$``);
- :func:`html`: every character HTML gives meaning to, quotes included.
"""
from __future__ import annotations

import html as _html
import math
import re
from typing import Any

__all__ = ["md", "csv_cell", "console", "plot", "html"]

#: what Markdown reads as markup inside a table cell or list line: a backslash, ``|``, a backtick,
#: ``<`` that opens a tag or comment (``<b``, ``</``, ``<!``, ``<?``), ``&`` that opens an entity, line ends
_MD_RE = re.compile(r"[\\|`\r\n]|<(?=[A-Za-z/!?])|&(?=#|[A-Za-z0-9]+;)")
_MD = {"\\": "\\\\", "|": "\\|", "`": "\\`", "\r": " ", "\n": " ", "<": "&lt;", "&": "&amp;"}


def md(text: Any) -> str:
    """``text`` safe in a Markdown table cell or list line: ``|`` cannot end a
    cell, HTML is shown as text, a newline cannot start a new row; a ``<`` or
    ``&`` that opens nothing (``N = 16 < 2048``) stays as it reads."""
    return _MD_RE.sub(lambda m: _MD[m.group(0)], str(text))


#: a decimal number as text (``-0.5``, ``5e-4``): the one pattern, also the sweep's for its values
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV writer: numbers as they are; text that a spreadsheet
    would run as a formula (first character ``= + - @``, tab or CR) gets a
    leading ``'`` so it stays text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        if NUMBER.fullmatch(value):  # "-0.5" read back from a file: a number, not a formula
            return value
        return "'" + value
    return value


def console(text: Any) -> str:
    """``text`` printed by rich as itself (``[bold]``, ``[/]`` not read as markup)."""
    from rich.markup import escape

    return escape(str(text))


def plot(text: Any) -> str:
    """``text`` for any matplotlib text (labels, legends, titles): ``$`` escaped,
    so no pair of them starts math text."""
    return str(text).replace("$", r"\$")


def html(text: Any) -> str:
    """``text`` as HTML text or an attribute value."""
    if isinstance(text, float) and not math.isfinite(text):
        return str(text)
    return _html.escape(str(text), quote=True)
