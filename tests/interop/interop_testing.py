"""Helpers the family tests share: tiny transformers vision models with random weights, and
their conversion through a family into an archlab model."""

from __future__ import annotations

from typing import Any

import torch

import archlab
from archlab.interop.families import Family


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random, not zero, biases and norms, so that a swapped tensor shows in the outputs."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_vision_model(
    transformers: Any, config_class: str, architecture: str, bare: str, **settings: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A seeded ``architecture`` of ``config_class(**settings)`` (``bare``: the class built without
    a pooler), with random weights, in eval mode, and its config as a dict."""
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**settings)
    config.architectures = [architecture]
    cls = getattr(transformers, architecture)
    model = cls(config, add_pooling_layer=False) if architecture == bare else cls(config)
    return randomize(model).eval(), config.to_dict()


def converted(
    family: Family, model: torch.nn.Module, config: dict[str, Any], state: Any = None
) -> Any:
    """``model`` converted by ``family``: the spec compiled, the weights loaded (strict)."""
    arch = config["architectures"][0]
    compiled = archlab.compile_spec(family.spec(config, arch))
    compiled.load_state_dict(family.weights(state or model.state_dict(), config, arch), strict=True)
    return compiled.eval()


def image_output(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """A transformers vision model's main output: logits, else the last hidden state."""
    out = model(pixel_values=image)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference relative to the output scale."""
    return float((ours - theirs).abs().max() / theirs.abs().max())
