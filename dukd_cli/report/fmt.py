"""Formatting a number or a text of the report JSON into HTML (escaped; the number tagged with its JSON path)."""

from __future__ import annotations

import html
from typing import Any


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(value: Any, digits: int, path: str, suffix: str = "") -> str:
    """A number of the report JSON (``path``), formatted with ``digits`` decimals (0: thousands separators)."""
    if value is None or not isinstance(value, (int, float)):
        return '<span class="na">-</span>'
    text = f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"
    return f'<span class="num" data-json="{esc(path)}" data-digits="{digits}">{text}</span>{esc(suffix)}'
