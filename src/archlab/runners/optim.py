"""The optimiser and learning-rate schedule of ``arch train``.

AdamW with decoupled weight decay on the matrices that carry the model's capacity only: biases,
norm gains, learned position tables, CLS tokens and relative-position bias tables are left
undecayed (decaying them pulls positions and scales towards zero for no regularising benefit,
which is why ViT, DeiT and GPT-2 training recipes exclude them). The schedule warms up linearly
then follows a cosine down to ``min_lr``, stepped once per optimiser step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from archlab.compiler.nn.bias import RelativePositionBias
from archlab.compiler.nn.embeddings import ClsToken
from archlab.compiler.nn.positions import LearnedPosition

# Modules whose parameters are positions or tokens, never decayed whatever their shape.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (LearnedPosition, ClsToken, RelativePositionBias)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed matrices, and the rest (weight decay 0).

    A parameter is decayed when it has two or more dimensions and does not belong to a
    position / token module (token embedding tables are matrices and are decayed, as in GPT-2).
    """
    undecayed_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, NO_DECAY_MODULES):
            undecayed_ids.update(id(p) for p in module.parameters(recurse=False))
    decay: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    seen: set[int] = set()
    for param in model.parameters():  # shared (tied) parameters appear once
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (rest if param.ndim < 2 or id(param) in undecayed_ids else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # fused kernels where the parameters live on CUDA; the default (foreach) elsewhere
    fused = all(p.is_cuda for p in model.parameters()) and torch.cuda.is_available()
    return torch.optim.AdamW(
        parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), fused=fused or None
    )


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    lr: float,
    min_lr: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr``, then a cosine to ``min_lr`` at
    ``total_steps``. Scales every group's initial learning rate by the same factor."""
    floor = min(min_lr / lr, 1.0) if lr > 0 else 0.0
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
