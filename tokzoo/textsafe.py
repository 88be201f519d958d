"""One escaping rule per output format, for text a user controls: tokenizer
names and paths, sweep aliases and values, attribute names, reasons that quote
them, anything read from a results.json made elsewhere. Each writer applies
its format's rule where it writes (a leaf: imports nothing of tokzoo).

Every rule first makes the text visible (:func:`visible`): a control character
(ESC, which starts a terminal's CSI / OSC sequences, C1, DEL, ...) is shown as
``\\xNN``, and a byte of a file name that is not UTF-8 (Python's surrogate
escape) as ``\\xNN`` too, so no output carries a control sequence and every
writer can encode the text.

- :func:`md`: Markdown table cells and lines (``|``, HTML, newlines, and the
  ``[ ]`` of links and images);
- :func:`csv_cell`: a CSV cell that a spreadsheet would run as a formula
  (``= + - @``, tab, CR first) is quoted as text (OWASP's rule);
- :func:`console`: rich markup (``[...]``) printed as the text it is, in a
  terminal that runs no sequence from it;
- :func:`plot`: matplotlib draws user text as text, never as math (``$...$``);
- :func:`html`: every character HTML gives meaning to, quotes included.
"""
from __future__ import annotations

import html as _html
import math
import re
from typing import Any

__all__ = ["visible", "md", "csv_cell", "console", "plot", "html"]

#: C0 controls, DEL, C1 controls (0x9b alone is a CSI); lone surrogates: the undecodable bytes of a file name
_HIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _shown(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogate escape of one byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: Any, keep: str = "") -> str:
    """``text`` with every control character and undecodable file-name byte
    shown as an escape (``\\x1b``), except the characters in ``keep`` (a
    multi-line message keeps ``"\\n"``)."""
    return _HIDDEN.sub(lambda m: m.group(0) if m.group(0) in keep else _shown(m.group(0)), str(text))

#: what Markdown reads as markup inside a table cell or list line: a backslash, ``|``, a backtick,
#: ``<`` that opens a tag or comment (``<b``, ``</``, ``<!``, ``<?``), ``&`` that opens an entity, line ends,
#: and the brackets without which no link or image is made (``[t](url)``, ``![t](url)``, ``[t][ref]``)
_MD_RE = re.compile(r"[\\|`\r\n\[\]]|<(?=[A-Za-z/!?])|&(?=#|[A-Za-z0-9]+;)")
_MD = {"\\": "\\\\", "|": "\\|", "`": "\\`", "\r": " ", "\n": " ", "<": "&lt;", "&": "&amp;",
       "[": "\\[", "]": "\\]"}


def md(text: Any) -> str:
    """``text`` safe in a Markdown table cell or list line: ``|`` cannot end a
    cell, HTML is shown as text, a newline cannot start a new row, no link or
    image is made; a ``<`` or ``&`` that opens nothing (``N = 16 < 2048``)
    stays as it reads."""
    return _MD_RE.sub(lambda m: _MD[m.group(0)], visible(text, keep="\r\n"))


#: a decimal number as text (``-0.5``, ``5e-4``): the one pattern, also the sweep's for its values
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV writer: numbers as they are; text that a spreadsheet
    would run as a formula (first character ``= + - @``, tab or CR) gets a
    leading ``'`` so it stays text."""
    if isinstance(value, str):
        if value[:1] in ("=", "+", "-", "@", "\t", "\r") and not NUMBER.fullmatch(value):
            value = "'" + value  # "-0.5" read back from a file is a number, not a formula
        return visible(value)
    return value


def console(text: Any, keep: str = "") -> str:
    """``text`` printed by rich as itself (``[bold]``, ``[/]`` not read as
    markup, ``\\x1b[2J`` shown, not run); ``keep="\\n"`` for a message of
    several lines."""
    from rich.markup import escape

    return escape(visible(text, keep))


def plot(text: Any) -> str:
    """``text`` for any matplotlib text (labels, legends, titles): ``$`` escaped,
    so no pair of them starts math text."""
    return visible(text, keep="\n").replace("$", r"\$")


def html(text: Any) -> str:
    """``text`` as HTML text or an attribute value."""
    if isinstance(text, float) and not math.isfinite(text):
        return str(text)
    return _html.escape(visible(text, keep="\n"), quote=True)
