"""Imports every family module so that each registers itself in ``FAMILIES``.

timm checkpoints carry no ``model_type``: ``families.timm_vit`` is reached by model name, not
through ``FAMILIES``.
"""

from __future__ import annotations

from archlab.interop.families import FAMILIES, bert, deit, gpt2, llama, t5, vit

__all__ = ["FAMILIES", "bert", "deit", "gpt2", "llama", "t5", "vit"]
