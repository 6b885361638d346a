"""``chefer`` through token-pruning stacks (DynamicViT, EViT, ToMe; ``explain_lrp_prune``):
scores over the full patch grid, a batch equal to its samples, a stage that keeps every token
equal to no stage, each stage's weights reproducing its output and keeping each sample's total
relevance, a dropped patch's relevance coming only from the blocks below its drop.

Batches are compared in float64: the CPU's matrix products round a batch of B differently
from one sample (1e-7 in float32 after a stage shortens the sequence), and the LRP's divisions
amplify that to ~1e-4 of the scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.compiler.model import CompiledModel
from archlab.runners import explain_lrp_prune
from archlab.runners.explain import ExplainError
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]
KINDS = ["dynamicvit-tiny-digits", "evit-deit-s", "evit-unfused", "evit-post", "tome"]


def _doc(kind: str) -> dict[str, Any]:
    if kind == "tome":
        doc = small_version(json.loads((ROOT / "specs/deit-small-16.json").read_text()))
        doc["nodes"]["encoder"]["prune"] = {"method": "merge", "at": [0, 1], "r": 2}
        return doc
    name = "evit-deit-s" if kind.startswith("evit") else kind
    doc = small_version(json.loads((ROOT / f"specs/{name}.json").read_text()))
    if kind == "evit-unfused":
        doc["nodes"]["encoder"]["prune"]["fuse"] = False
    if kind == "evit-post":  # post-norm blocks: their input and output taped another way
        doc["nodes"]["encoder"]["block"]["norm"]["placement"] = "post"
    return doc


def _compiled(doc: dict[str, Any], double: bool = True) -> CompiledModel:
    torch.manual_seed(0)
    model = archlab.compile_spec(doc).eval()
    return model.double() if double else model


@pytest.mark.parametrize("kind", KINDS)
def test_chefer_explains_pruned_stacks_over_the_full_grid_batched(kind: str) -> None:
    model = _compiled(_doc(kind))
    inputs = model.example_inputs(batch=4)
    batch = archlab.explain(model, method="chefer", **inputs)
    assert batch.scores.shape == (4, 16) and batch.grid == (4, 4)
    assert torch.isfinite(batch.scores).all() and (batch.scores != 0).any(dim=1).all()
    for i in range(4):
        alone = archlab.explain(model, method="chefer", **{k: v[i : i + 1] for k, v in inputs.items()})  # fmt: skip
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["dynamic", "attention_topk", "attention_topk-post", "merge"])
def test_a_stage_that_keeps_every_token_explains_as_no_stage(method: str) -> None:
    kinds = {"dynamic": "dynamicvit-tiny-digits", "merge": "tome", "attention_topk": "evit-deit-s"}
    doc = _doc(kinds.get(method, "evit-post"))
    if method != "merge":  # keep 1.0: every patch stays (DynamicViT's in its score order)
        doc["nodes"]["encoder"]["prune"]["keep"] = 1.0
    pruned = _compiled(doc)
    if method == "merge":  # the spec asks r >= 1; the stage itself passes its input at r = 0
        for stage in pruned.encoder.prune.values():
            stage.r = 0
    dense_doc = json.loads(json.dumps(doc))
    del dense_doc["nodes"]["encoder"]["prune"]
    dense = _compiled(dense_doc)
    unexpected = dense.load_state_dict(pruned.state_dict(), strict=False).unexpected_keys
    assert all(".prune." in key for key in unexpected)
    inputs = pruned.example_inputs(batch=3)
    ours = archlab.explain(pruned, method="chefer", **inputs)
    expected = archlab.explain(dense, method="chefer", **inputs)
    torch.testing.assert_close(ours.scores, expected.scores, rtol=1e-6, atol=1e-12)
    if method == "dynamic":  # the order did change: the stage is not a no-op on the rows
        _, trace = pruned.trace_tokens(**inputs)
        assert not torch.equal(trace.stages[0].index, torch.arange(17).expand(3, 17))


@pytest.mark.parametrize("kind", KINDS)
def test_each_stage_passes_its_tokens_relevance_by_its_own_weights(kind: str, monkeypatch) -> None:
    """Spy on every stage the chefer pass goes through: its weights rebuild its output tokens
    from its input (EViT's fused token up to its total attention), kept rows pass relevance on
    exactly, dropped tokens get none, and each sample's total is kept."""
    model = _compiled(_doc(kind))
    outputs: list[torch.Tensor] = []
    for stage in model.encoder.prune.values():
        stage.register_forward_hook(lambda _m, _a, out: outputs.append(out[0].detach()))
    seen: list[tuple[torch.Tensor, ...]] = []
    rule = explain_lrp_prune.stage_relevance

    def spy(x: torch.Tensor, weights: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        out = rule(x, weights, R)
        seen.append((x, weights, R, out))
        return out

    monkeypatch.setattr(explain_lrp_prune, "stage_relevance", spy)
    archlab.explain(model, method="chefer", **model.example_inputs(batch=3))
    assert len(seen) == len(outputs) > 0
    for (x, weights, R, back), produced in zip(reversed(seen), outputs, strict=True):
        torch.testing.assert_close(back.sum((1, 2)), R.sum((1, 2)), rtol=1e-9, atol=1e-12)
        rebuilt = weights @ x  # (B, T', D)
        single = (weights > 0).sum(-1) == 1  # (B, T')
        fused = kind.startswith("evit") and not single[:, -1].all()
        rows = slice(None, -1) if fused else slice(None)
        torch.testing.assert_close(rebuilt[:, rows], produced[:, rows], rtol=1e-9, atol=1e-12)
        if fused:  # the attention-weighted sum, divided by its total attention (the stage
            # takes its CLS attention in float32, the recorded one is the model's float64)
            fused_out, mean = produced[:, -1], rebuilt[:, -1]  # (B, D)
            total = (fused_out * mean).sum(-1, keepdim=True) / (mean * mean).sum(-1, keepdim=True)
            scale = fused_out.abs().amax(-1, keepdim=True)
            torch.testing.assert_close(fused_out / scale, total * mean / scale, rtol=0, atol=1e-6)
            assert ((total > 0) & (total < 1)).all()
        sources = weights.transpose(1, 2) > 0  # (B, T, T')
        dropped = ~sources.any(-1)
        assert torch.all(back[dropped] == 0)
        kept = sources & single[:, None, :]
        b, i, j = kept.nonzero(as_tuple=True)
        assert torch.equal(back[b, i], R[b, j])
        assert kind != "tome" or (~single).any()  # ToMe did merge
        assert kind == "tome" or (dropped.any() or fused)  # the others dropped or fused


@pytest.mark.parametrize("kind", ["dynamicvit-tiny-digits", "evit-unfused"])
def test_a_dropped_patch_gets_relevance_only_from_the_blocks_below_its_drop(kind: str) -> None:
    """With ``start_layer`` past the first stage, the patches it dropped get exactly 0 (no block
    that counts saw them); from layer 0 the blocks below the stage give them some."""
    model = _compiled(_doc(kind))
    inputs = model.example_inputs(batch=4)
    _, trace = model.trace_tokens(**inputs)
    first = trace.stages[0]
    layer = int(first.name.rsplit(".", 1)[1])
    after = kind.startswith("evit")  # EViT drops after its layer's attention, DynamicViT before
    start = layer + 1 if after else layer
    if start == 0:  # DynamicViT at layer 0: use its second stage
        first, start = trace.stages[1], int(trace.stages[1].name.rsplit(".", 1)[1])
    gone = ~trace.kept(first)  # (B, 16)
    assert gone.any()
    later = archlab.explain(model, method="chefer", start_layer=start, **inputs).scores
    assert torch.all(later[gone] == 0) and (later[~gone] != 0).any()
    full = archlab.explain(model, method="chefer", **inputs).scores
    assert (full[gone] != 0).any()


def test_evit_fuses_by_the_attention_the_stage_ranked_by() -> None:
    """The fused row of EViT's weights is the layer's CLS attention over the tokens it fused,
    normalised; the other methods' moves take a size-weighted mean there."""
    model = _compiled(_doc("evit-deit-s"), double=False)
    weights: list[Any] = []
    rule = explain_lrp_prune.stage_weights

    def spy(moves: Any, stack: Any, probabilities: list[torch.Tensor]) -> Any:
        out = rule(moves, stack, probabilities)
        weights.append((moves, out, probabilities))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(explain_lrp_prune, "stage_weights", spy)
        archlab.explain(model, method="chefer", **model.example_inputs(batch=2))
    (moves, out, probabilities) = weights[0]
    for index, ((_, counted), (_, fused)) in enumerate(zip(moves, out, strict=True)):
        if counted is None:
            continue
        torch.testing.assert_close(fused[:, :-1], counted[:, :-1])
        members = counted[:, -1] > 0  # (B, T)
        cls = probabilities[index][:, :, 0].mean(1) * members
        torch.testing.assert_close(fused[:, -1], cls / cls.sum(-1, keepdim=True))
        assert not torch.allclose(fused[:, -1], counted[:, -1])


@pytest.mark.parametrize("method", ["attention", "rollout", "generic", "chefer"])
def test_a_token_prune_node_outside_the_stack_is_refused(method: str) -> None:
    """Its kept tokens have no places in the grid the stack's trace knows: refused, not scored
    over the kept tokens alone."""
    doc = _doc("dynamicvit-tiny-digits")
    del doc["nodes"]["encoder"]["prune"]
    doc["nodes"]["drop"] = {"op": "token_prune", "input": "pos", "method": "dynamic", "keep": 0.5}
    doc["nodes"]["encoder"]["input"] = "drop"
    model = _compiled(doc)
    with pytest.raises(ExplainError, match="the token_prune node `drop` prunes outside the explained stack"):  # fmt: skip
        archlab.explain(model, method=method, **model.example_inputs(batch=2))
