"""Imports every family module so that each registers itself in ``FAMILIES``."""

from __future__ import annotations

from archlab.interop.families import FAMILIES, gpt2

__all__ = ["FAMILIES", "gpt2"]
