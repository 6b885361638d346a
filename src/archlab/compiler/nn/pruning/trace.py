"""The record of one traced forward pass: every pruning stage's state and output."""

from __future__ import annotations

from torch import Tensor

from archlab.compiler.nn.pruning.state import StageRecord, TokenState


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
