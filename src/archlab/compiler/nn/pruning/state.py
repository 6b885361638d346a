"""What pruning stages have done to a sequence: the `TokenState` that travels with it, the
`StageRecord` each stage leaves, and the row bookkeeping the stages share (keep rows, follow the
original tokens).

Keep counts are static (k = ceil(keep * patches present), at least 1), so batches stay rectangular
and no stage synchronises with the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from archlab.specs.analysis import kept_tokens


def kept_count(keep: float, patches: int) -> int:
    """Patch tokens a `keep` fraction leaves of `patches` (the compiler's `kept_tokens`, capped)."""
    return min(patches, kept_tokens(keep, patches)) if patches > 0 else 0


class StageRecord(NamedTuple):
    """What one pruning stage did, for losses and pictures.

    `policy` `(B, T)`: DynamicViT's keep decision after the stage (training only); `target`: the
    fraction of the patch tokens physically present that inference would keep there: of the
    original patches in training (DynamicViT keeps them all; its ratio-loss target), of those
    left by earlier stages in inference;
    `index` `(B, T')` / `source` `(B, N0)` / `size` `(B, T')`: the trace after the stage.
    """

    name: str
    method: str
    n_cls: int
    target: float
    policy: Tensor | None
    index: Tensor | None  # type: ignore[assignment]  # (shadows tuple.index, on purpose)
    source: Tensor | None
    size: Tensor | None


class TokenState(NamedTuple):
    """What pruning stages have done to a sequence so far (see the module docstring)."""

    policy: Tensor | None = None
    size: Tensor | None = None
    index: Tensor | None = None  # type: ignore[assignment]  # (shadows tuple.index, on purpose)
    source: Tensor | None = None
    virtual: int | None = None
    stages: tuple[StageRecord, ...] = ()


def start_state(x: Tensor, state: TokenState | None, trace: bool) -> TokenState:
    """The state entering a stage: `state`, or a fresh one (with the identity trace if asked)."""
    if state is None:
        state = TokenState()
    if trace and state.index is None:
        B, T = x.shape[:2]
        ids = torch.arange(T, device=x.device).expand(B, T)
        state = state._replace(index=ids, source=ids)
    return state


def gather_tokens(t: Tensor, idx: Tensor) -> Tensor:
    """Rows `idx` of each sample. Shape: t `(B, T, ...)`, idx `(B, k)` -> `(B, k, ...)`."""
    if t.dim() == 2:
        return t.gather(1, idx)
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))


def remap(source: Tensor, slot_of: Tensor) -> Tensor:
    """Follow each original token to its new position. Shape: `(B, N0)`, `(B, T)` -> `(B, N0)`."""
    moved = slot_of.gather(1, source.clamp(min=0))
    return torch.where(source >= 0, moved, torch.full_like(moved, -1))


def keep_rows(
    x: Tensor,
    mask: Tensor | None,
    state: TokenState,
    n_cls: int,
    keep: Tensor,
    extra: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, TokenState]:
    """Keep the CLS tokens and patch tokens `keep` (positions among the patches), then `extra`.

    `extra` `(B, 1, D)` is appended as a patch token (EViT's fused token); the dropped tokens'
    `source` then points to it. Rows are really removed only where no training policy exists
    (DynamicViT in inference; EViT refuses a policy), so the state's policy is not gathered.
    Shape: x `(B, T, D)`, keep `(B, k)` -> `(B, n_cls + k [+1], D)`.
    """
    B, T = x.shape[:2]
    k = keep.shape[1]
    rows = torch.cat([torch.arange(n_cls, device=x.device).expand(B, n_cls), keep + n_cls], dim=1)
    out = gather_tokens(x, rows)
    if extra is not None:
        out = torch.cat([out, extra], dim=1)
    new_mask = None if mask is None else gather_tokens(mask, rows)
    if new_mask is not None and extra is not None:
        new_mask = torch.cat([new_mask, new_mask.new_ones(B, 1)], dim=1)
    size = None if state.size is None else gather_tokens(state.size, rows)
    if state.size is not None and size is not None and extra is not None:
        dropped = state.size.sum(1, keepdim=True) - size.sum(1, keepdim=True)
        size = torch.cat([size, dropped], dim=1)
    index, source = state.index, state.source
    if index is not None and source is not None:
        index = gather_tokens(index, rows)
        gone = -1 if extra is None else n_cls + k
        slot_of = torch.full((B, T), gone, dtype=torch.long, device=x.device)
        slot_of.scatter_(1, rows, torch.arange(n_cls + k, device=x.device).expand(B, -1))
        source = remap(source, slot_of)
        if extra is not None:
            index = torch.cat([index, index.new_full((B, 1), -1)], dim=1)
    state = state._replace(size=size, index=index, source=source)
    return out, new_mask, state


def refuse_policy(state: TokenState | None, name: str) -> None:
    if state is not None and state.policy is not None:
        raise ValueError(
            f"{name}: attention_topk and merge stages cannot follow a dynamic stage in training "
            "(its dropped tokens are still present, only masked); the compiler refuses such specs"
        )


def record_stage(
    state: TokenState, name: str, method: str, n_cls: int, target: float
) -> TokenState:
    rec = StageRecord(
        name, method, n_cls, target, state.policy, state.index, state.source, state.size
    )
    return state._replace(stages=(*state.stages, rec))
