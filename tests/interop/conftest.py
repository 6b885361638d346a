"""Tiny GPT-2 checkpoints written locally with transformers (no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

#: Odd sizes: 3 heads of 12, an MLP of 50, a vocabulary of 61, 24 positions.
TINY = {
    "vocab_size": 61,
    "n_positions": 24,
    "n_embd": 36,
    "n_layer": 2,
    "n_head": 3,
    "n_inner": 50,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def gpt2(architecture: str = "GPT2LMHeadModel", seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised transformers GPT-2 model of ``TINY`` (plus ``overrides``), in eval."""
    config = transformers.GPT2Config(**{**TINY, **overrides})
    torch.manual_seed(seed)
    return getattr(transformers, architecture)(config).eval()


@pytest.fixture
def save_gpt2(tmp_path: Path) -> Callable[..., tuple[Any, Path]]:
    """Save a tiny GPT-2 as ``save_pretrained`` does (``how``: safetensors, sharded or a
    ``pytorch_model.bin``) and return the source model and its folder."""

    def save(
        architecture: str = "GPT2LMHeadModel", how: str = "safetensors", **overrides: Any
    ) -> tuple[Any, Path]:
        model = gpt2(architecture, **overrides)
        folder = tmp_path / f"{architecture}-{how}"
        if how == "safetensors":
            model.save_pretrained(folder)
        elif how == "sharded":
            model.save_pretrained(folder, max_shard_size="20KB")
            assert (folder / "model.safetensors.index.json").is_file()
        else:
            assert how == "bin"
            model.config.save_pretrained(folder)
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        return model, folder

    return save
