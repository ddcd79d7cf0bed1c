"""A tiny syntax highlighter for the Review step: wraps tokens in <span class> and escapes
everything else, so the text content of the result is exactly the input, byte for byte."""

from __future__ import annotations

import keyword
import re
from html import escape

from markupsafe import Markup

_PY = re.compile(
    r"(?P<com>#[^\n]*)"
    r"|(?P<str>(?:[rRbBuUfF]{0,2})(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'))"
    r"|(?P<kw>\b(?:" + "|".join(keyword.kwlist) + r")\b)"
    r"|(?P<num>\b\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?\b)"
    r"|(?P<dec>^[ \t]*@[\w.]+)",
    re.MULTILINE,
)
_JSON = re.compile(
    r"(?P<key>\"(?:\\.|[^\"\\])*\")(?=\s*:)"
    r"|(?P<str>\"(?:\\.|[^\"\\])*\")"
    r"|(?P<num>-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)"
    r"|(?P<kw>\b(?:true|false|null)\b)"
)


def highlight(text: str, filename: str) -> Markup:
    pattern = _JSON if filename.endswith(".json") else _PY if filename.endswith(".py") else None
    if pattern is None:
        return Markup(escape(text, quote=False))
    out: list[str] = []
    pos = 0
    for match in pattern.finditer(text):
        out.append(escape(text[pos : match.start()], quote=False))
        kind = match.lastgroup or ""
        out.append(f'<span class="tok-{kind}">{escape(match.group(), quote=False)}</span>')
        pos = match.end()
    out.append(escape(text[pos:], quote=False))
    return Markup("".join(out))
