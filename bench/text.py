"""Text for people: plurals and docstrings without markup."""

from __future__ import annotations

import re


def plural(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


_ROLE = re.compile(r":[a-z]+:`~?([^`]*)`")
_LITERAL = re.compile(r"``([^`]*)``")


def plain(text: str) -> str:
    """Docstring text without reStructuredText markup: ``x`` → x, :class:`~a.B` → B."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1), text)
    return _LITERAL.sub(r"\1", text).replace("`", "")
