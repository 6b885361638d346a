"""Token pruning stages: DynamicViT's learned keep predictor, EViT's CLS-attention top-k, ToMe.

A pruning stage takes a sequence whose first `n_cls` tokens are CLS-like (never dropped or merged)
and returns a shorter one, except DynamicViT in training, which keeps every token and records a
hard keep decision (the *policy*) that later attentions apply. What a stage changes travels with
the sequence in a `TokenState`:
- `policy` `(B, T)`: DynamicViT's running keep decision in training (1 kept, 0 dropped; it carries
  the straight-through gradient to the predictors); None outside training.
- `size` `(B, T)`: how many original tokens each token stands for (ToMe); None while all are 1.
- `index` `(B, T)`: the original position of each token (-1 for EViT's fused token);
  `source` `(B, N0)`: the current position of each original token (-1 once dropped). Both are
  carried only when a trace is asked for (`CompiledModel.trace_tokens`), for visualisation.
- `virtual`: the patch count an inference pass would have here (DynamicViT in training keeps the
  full length, yet its keep counts follow the inference schedule).
- `stages`: a `StageRecord` per stage run so far.

Keep counts are static (k = ceil(keep * patches present), at least 1), so batches stay rectangular
and no stage synchronises with the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def _remap(source: Tensor, slot_of: Tensor) -> Tensor:
    """Follow each original token to its new position. Shape: `(B, N0)`, `(B, T)` -> `(B, N0)`."""
    moved = slot_of.gather(1, source.clamp(min=0))
    return torch.where(source >= 0, moved, torch.full_like(moved, -1))


def _keep_rows(
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
        source = _remap(source, slot_of)
        if extra is not None:
            index = torch.cat([index, index.new_full((B, 1), -1)], dim=1)
    state = state._replace(size=size, index=index, source=source)
    return out, new_mask, state


def _refuse_policy(state: TokenState | None, name: str) -> None:
    if state is not None and state.policy is not None:
        raise ValueError(
            f"{name}: attention_topk and merge stages cannot follow a dynamic stage in training "
            "(its dropped tokens are still present, only masked); the compiler refuses such specs"
        )


def _record(state: TokenState, name: str, method: str, n_cls: int, target: float) -> TokenState:
    rec = StageRecord(
        name, method, n_cls, target, state.policy, state.index, state.source, state.size
    )
    return state._replace(stages=(*state.stages, rec))


class TokenTrace:
    """What the pruning stages of one forward pass did (`CompiledModel.trace_tokens`).

    `states` maps each pruned stack and `token_prune` node to its `TokenState` after it;
    `features` to its output sequence `(B, T', D)`. `stages` lists every stage's `StageRecord` in
    the order they ran.
    """

    def __init__(self, states: dict[str, TokenState | None], features: dict[str, Tensor]) -> None:
        # a stack traced only because a later node reads its attention has no state
        self.states = {k: v for k, v in states.items() if v is not None}
        self.features = {k: v for k, v in features.items() if k in self.states}

    @property
    def stages(self) -> list[StageRecord]:
        seen: dict[str, StageRecord] = {}
        for state in self.states.values():
            for record in state.stages:
                seen.setdefault(record.name, record)
        return list(seen.values())

    def kept(self, stage: StageRecord | str) -> Tensor:
        """Which original patch tokens are still present (not dropped) after `stage`.

        `stage` is a `StageRecord` of `stages` or its name: `STACK.prune.LAYER` for a stage a
        stack's `prune` places at layer LAYER (`encoder.prune.3` for `"at": [3]` in node
        `encoder`), or the node id of a `token_prune` node. `[r.name for r in trace.stages]`
        lists them in the order they ran; an unknown name raises a `KeyError` naming them.

        Needs a trace (`source`). Shape: -> bool `(B, N0 - n_cls)`, in the original patch order.
        """
        record = self._record(stage)
        if record.source is None:
            raise ValueError("this trace carries no source map; run CompiledModel.trace_tokens")
        present = record.source[:, record.n_cls :] >= 0
        if record.policy is not None:  # training: every token stays, the policy says which count
            keep = record.policy.gather(1, record.source.clamp(min=0)) > 0
            present = present & keep[:, record.n_cls :]
        return present

    def _record(self, stage: StageRecord | str) -> StageRecord:
        if isinstance(stage, StageRecord):
            return stage
        for record in self.stages:
            if record.name == stage:
                return record
        names = ", ".join(r.name for r in self.stages) or "none"
        raise KeyError(f"no pruning stage {stage!r} in this trace (stages: {names})")


# ----------------------------------------------------------------------------------- DynamicViT


class KeepPredictor(nn.Module):
    """DynamicViT's prediction module: log-probabilities (keep, drop) for each patch token.

    LayerNorm -> Linear(D, D) -> GELU; the first D/2 channels are the token's local feature, the
    other D/2 are averaged over the tokens still kept (weighted by the policy) into a global
    feature; [local, global] -> Linear(D, D/2) -> GELU -> Linear(D/2, D/4) -> GELU -> Linear(D/4,
    2) -> log-softmax. Parameters: `input` (0: LayerNorm, 1: Linear) and `output` (0, 2, 4: the
    Linears), so state-dict keys read `encoder.prune.3.predictor.input.1.weight`.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if dim < 4:
            raise ValueError(f"a keep predictor needs a width of at least 4, not {dim}")
        self.input = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim), nn.GELU())
        half = dim // 2
        self.split = half
        self.output = nn.Sequential(
            nn.Linear(dim, half),
            nn.GELU(),
            nn.Linear(half, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 2),
        )

    def forward(self, x: Tensor, policy: Tensor) -> Tensor:
        """Shape: x `(B, N, D)` patch tokens, policy `(B, N)` (1 kept) -> `(B, N, 2)` log-probs."""
        h = self.input(x)  # (B, N, D)
        local, glob = h[..., : self.split], h[..., self.split :]
        w = policy.unsqueeze(-1).to(h.dtype)  # (B, N, 1)
        glob = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-6)
        h = torch.cat([local, glob.expand(-1, x.shape[1], -1)], dim=-1)  # (B, N, D)
        return F.log_softmax(self.output(h), dim=-1)


class DynamicPrune(nn.Module):
    """A DynamicViT stage: `predictor` scores the patch tokens, then keep `keep` of them.

    Training: every token stays; a hard Gumbel-softmax sample (straight-through) multiplied by the
    previous policy becomes the new policy, which later attentions apply (`policy_attention`), so
    a dropped token stays dropped and gradients reach the predictor. Inference: the top-k patch
    tokens by keep score are gathered (in score order) behind the CLS tokens; padded tokens go
    first.
    """

    def __init__(self, dim: int, keep: float, n_cls: int, name: str, eps: float = 1e-6) -> None:
        super().__init__()
        self.predictor = KeepPredictor(dim, eps)
        self.keep, self.n_cls, self.name = keep, n_cls, name

    def forward(
        self, x: Tensor, mask: Tensor | None, state: TokenState | None, trace: bool = False
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, mask `(B, T)` -> `(B, T', D)`, `(B, T')`, state."""
        state = start_state(x, state, trace)
        n = self.n_cls
        B, T = x.shape[:2]
        patches = T - n
        virtual = patches if state.virtual is None else state.virtual
        k = kept_count(self.keep, virtual)
        if self.training:
            prev = state.policy
            if prev is None:
                prev = x.new_ones(B, T, dtype=torch.float32)
                if mask is not None:
                    prev = prev * mask.float()
            scores = self.predictor(x[:, n:], prev[:, n:])  # (B, N, 2)
            hard = F.gumbel_softmax(scores.float(), hard=True)[..., 0]  # (B, N): 1 keep
            policy = torch.cat([prev[:, :n], hard * prev[:, n:]], dim=1)  # (B, T)
            state = state._replace(policy=policy, virtual=k)
            return x, mask, _record(state, self.name, "dynamic", n, k / patches)
        live = x.new_ones(B, patches) if mask is None else mask[:, n:].to(x.dtype)
        scores = self.predictor(x[:, n:], live)[..., 0]  # (B, N): keep log-prob
        if mask is not None:
            scores = scores.masked_fill(~mask[:, n:], float("-inf"))
        keep = scores.topk(min(k, patches), dim=1).indices  # (B, k)
        x, mask, state = _keep_rows(x, mask, state, n, keep)
        state = state._replace(virtual=k)
        return x, mask, _record(state, self.name, "dynamic", n, k / patches)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, n_cls={self.n_cls}"


# ---------------------------------------------------------------------------------------- EViT


class AttentionTopK(nn.Module):
    """An EViT stage: keep the patch tokens the first CLS token attends to most.

    `cls_attention` `(B, T)` is that attention averaged over heads, from the layer's own attention.
    With `fuse`, the dropped tokens' attention-weighted sum (weights not renormalised, as EViT
    defines it) is appended as one more patch token. No parameters. `keep_now`, when set, replaces
    `keep` in training (the keep-rate warm-up schedule).
    """

    def __init__(self, keep: float, n_cls: int, fuse: bool, name: str) -> None:
        super().__init__()
        self.keep, self.n_cls, self.fuse, self.name = keep, n_cls, fuse, name
        self.keep_now: float | None = None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        cls_attention: Tensor,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, mask `(B, T)`, cls_attention `(B, T)` -> `(B, T', D)`, ..."""
        _refuse_policy(state, self.name)
        state = start_state(x, state, trace)
        n = self.n_cls
        patches = x.shape[1] - n
        keep = self.keep_now if (self.training and self.keep_now is not None) else self.keep
        k = kept_count(keep, patches)
        virtual = patches if state.virtual is None else state.virtual
        target = kept_count(keep, virtual) / max(virtual, 1)
        if k >= patches:
            state = state._replace(virtual=kept_count(keep, virtual))
            return x, mask, _record(state, self.name, "attention_topk", n, target)
        attn = cls_attention[:, n:]  # (B, N)
        order = attn.topk(patches, dim=1).indices if self.fuse else attn.topk(k, dim=1).indices
        keep_idx = order[:, :k]
        extra = None
        if self.fuse:
            drop_idx = order[:, k:]  # (B, N - k)
            w = gather_tokens(attn, drop_idx).unsqueeze(-1).to(x.dtype)  # (B, N - k, 1)
            extra = (gather_tokens(x[:, n:], drop_idx) * w).sum(1, keepdim=True)  # (B, 1, D)
        x, mask, state = _keep_rows(x, mask, state, n, keep_idx, extra)
        virtual_after = kept_count(keep, virtual) + (1 if self.fuse else 0)
        state = state._replace(virtual=virtual_after)
        return x, mask, _record(state, self.name, "attention_topk", n, target)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, n_cls={self.n_cls}, fuse={self.fuse}"


# ----------------------------------------------------------------------------------------- ToMe


class TokenMerge(nn.Module):
    """A ToMe stage: bipartite soft matching merges `r` pairs of patch tokens.

    The patch tokens alternate into sets A (even) and B (odd); each A token finds its most similar
    B token by the cosine of their attention keys (`keys` `(B, T, E)`, averaged over heads); the
    `r` best-matched A tokens merge into their B tokens as size-weighted means (at most half the
    patches merge). Sizes are carried in the state for proportional attention. The result is
    [CLS, unmerged A, B]. No parameters; with `r` = 0 it returns its input unchanged.
    """

    def __init__(self, r: int, n_cls: int, name: str) -> None:
        super().__init__()
        self.r, self.n_cls, self.name = r, n_cls, name

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        keys: Tensor,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, keys `(B, T, E)` -> `(B, T - r, D)`, ..."""
        if mask is not None:
            raise ValueError(
                f"{self.name}: token merging (ToMe) does not take padded sequences; "
                "drop the padding mask or use dynamic / attention_topk pruning"
            )
        _refuse_policy(state, self.name)
        state = start_state(x, state, trace)
        n = self.n_cls
        B, T, D = x.shape
        patches = T - n
        r = min(self.r, patches // 2)
        virtual = patches if state.virtual is None else state.virtual
        if r == 0:
            return x, mask, _record(state, self.name, "merge", n, 1.0)
        size = state.size if state.size is not None else x.new_ones(B, T, dtype=torch.float32)
        metric = F.normalize(keys[:, n:].float(), dim=-1)  # (B, N, E)
        a, b = metric[:, 0::2], metric[:, 1::2]  # (B, Na, E), (B, Nb, E)
        best, dst = (a @ b.transpose(1, 2)).max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True)  # (B, Na)
        src_pos, keep_pos = order[:, :r], order[:, r:]  # A positions merged / kept
        dst_pos = dst.gather(1, src_pos)  # (B, r) B positions receiving them
        Na, Nb = a.shape[1], b.shape[1]

        xp = x[:, n:] * size[:, n:, None].to(x.dtype)  # size-weighted sums, merged then divided
        sp = size[:, n:]
        xa, xb = xp[:, 0::2], xp[:, 1::2]
        sa, sb = sp[:, 0::2], sp[:, 1::2]
        xb = xb.scatter_add(1, dst_pos[..., None].expand(-1, -1, D), gather_tokens(xa, src_pos))
        sb = sb.scatter_add(1, dst_pos, gather_tokens(sa, src_pos))
        xa, sa = gather_tokens(xa, keep_pos), gather_tokens(sa, keep_pos)
        merged = torch.cat([xa, xb], dim=1) / torch.cat([sa, sb], dim=1)[..., None].to(x.dtype)
        out = torch.cat([x[:, :n], merged], dim=1)  # (B, n + Na - r + Nb, D)
        new_size = torch.cat([size[:, :n], sa, sb], dim=1)
        index, source = state.index, state.source
        if index is not None and source is not None:
            ia, ib = index[:, n:][:, 0::2], index[:, n:][:, 1::2]
            index = torch.cat([index[:, :n], gather_tokens(ia, keep_pos), ib], dim=1)
            # new position of each old position: CLS stay; kept A follow; B after them; merged A
            # go to their B token
            kept_a = Na - r
            slot_a = torch.empty(B, Na, dtype=torch.long, device=x.device)
            slot_a.scatter_(1, keep_pos, n + torch.arange(kept_a, device=x.device).expand(B, -1))
            slot_a.scatter_(1, src_pos, n + kept_a + dst_pos)
            slot_b = (n + kept_a + torch.arange(Nb, device=x.device)).expand(B, -1)
            slot_p = torch.empty(B, patches, dtype=torch.long, device=x.device)
            slot_p[:, 0::2], slot_p[:, 1::2] = slot_a, slot_b
            cls_slots = torch.arange(n, device=x.device).expand(B, -1)
            source = _remap(source, torch.cat([cls_slots, slot_p], dim=1))
        state = state._replace(size=new_size, index=index, source=source, virtual=virtual - r)
        return out, mask, _record(state, self.name, "merge", n, (virtual - r) / max(virtual, 1))

    def extra_repr(self) -> str:
        return f"r={self.r}, n_cls={self.n_cls}"


# --------------------------------------------------------------------- attention under a policy


def policy_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    policy: Tensor,
    *,
    scale: float,
    allowed: Tensor | None = None,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Softmax attention whose keys are weighted by DynamicViT's keep policy, in float32.

    A_ij = exp(s_ij - m_i) G_ij / sum_k exp(s_ik - m_i) G_ik with G_ij = policy_j for j != i and
    G_ii = 1 (a dropped token still attends to itself), m_i the row's largest score among the keys
    it keeps. A dropped key contributes exactly zero, yet the policy's straight-through gradient
    reaches the predictors through G. Equals softmax attention over the kept keys alone.

    Shape: q `(B, H, T, E)`, k and v `(B, H, T, E)`, policy `(B, T)`, allowed `(B|1, 1, T|1, T)`
    bool, bias `(H|B, ..., T, T)` additive -> `(B, H, T, E)`.
    """
    T = q.shape[2]
    dtype = q.dtype
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias.float()
    eye = torch.eye(T, device=q.device, dtype=torch.float32)
    gate = policy.float()[:, None, None, :] * (1 - eye) + eye  # (B, 1, T, T)
    kept = gate.detach() > 0
    if allowed is not None:
        kept = kept & allowed
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.masked_fill(~kept, float("-inf")).amax(dim=-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # a dropped key above the kept maximum would overflow exp; its weight is 0 either way
    weights = torch.exp((scores - top).clamp(max=30.0)) * gate  # (B, H, T, T)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    weights = F.dropout(weights, dropout, training)
    return (weights @ v.float()).to(dtype)


__all__ = [
    "AttentionTopK",
    "DynamicPrune",
    "KeepPredictor",
    "StageRecord",
    "TokenMerge",
    "TokenState",
    "TokenTrace",
    "gather_tokens",
    "kept_count",
    "policy_attention",
    "start_state",
]
