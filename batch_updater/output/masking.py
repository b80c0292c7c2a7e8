"""Masking of customer identifiers for logs (and, on request, reports).

mobile 919800000042 → 9198****0042 · email asha@example.com → a***@example.com ·
anything else keeps its first and last two characters.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"([\w.%+-])[\w.%+-]*(@[\w-]+(?:\.[\w-]+)+)")
_DIGITS = re.compile(r"(?<![\w-])\d{8,15}(?![\w-])")  # a number on its own, not part of an id or date


def mask_identifier(value: str) -> str:
    value = value.strip()
    if not value:
        return value
    if "@" in value:
        return _EMAIL.sub(r"\1***\2", value)
    if value.isdigit() and len(value) > 8:
        return value[:4] + "*" * (len(value) - 8) + value[-4:]
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def mask_text(text: str) -> str:
    """Mask every email address and long digit run inside free text (log messages)."""
    text = _EMAIL.sub(r"\1***\2", text)
    return _DIGITS.sub(lambda m: mask_identifier(m.group(0)), text)
