"""Numbers as the CLI's tables and summaries print them."""

from __future__ import annotations


def si(n: float) -> str:
    """``n`` with an SI suffix and two decimals from a thousand up (``12.35M``), else to three
    significant digits: parameter counts, FLOPs and rates alike."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.3g}"
