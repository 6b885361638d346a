"""The canonical form of a spec and its hash, the architecture's identity in the registry.

Canonical form: every default filled (including those inferred from the graph: widths of tied
embeddings, ``position.max_len``, pooling modes, per-layer attention settings, masks), every
shorthand expanded, the stack's ``block`` chosen as the block most of its layers have and overrides
rewritten as the exact per-layer differences from it (grouped, sorted by layer), keys sorted. Two files that differ only in layout, key order, names,
descriptions or explicitly written defaults have the same canonical form and hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from archlab.specs.analysis import (
    AttentionPlan,
    ClassifyPlan,
    EmbedPlan,
    LayerPlan,
    LMHeadPlan,
    NodePlan,
    PoolPlan,
    PositionPlan,
    PruneStage,
    StackPlan,
    analyze,
)
from archlab.specs.load import SpecSource, load_spec
from archlab.specs.models import Spec

#: Top-level keys that describe a spec without being part of the architecture.
UNHASHED = ("$schema", "name", "description")

#: Node fields added to version 1 after specs were hashed, by op, whose null means the behaviour
#: from before: written only when set, so that every older spec keeps its form and hash (an
#: attention's ``scale`` is handled the same way in ``_attention_doc``).
LATER_FIELDS: dict[str, tuple[str, ...]] = {"classify": ("pre_logits",), "lm_head": ("scale",)}


def canonical_form(spec: SpecSource) -> dict[str, Any]:
    """The canonical JSON document of a spec (``$schema`` dropped; name/description kept)."""
    spec = load_spec(spec)
    graph = analyze(spec)
    doc = spec.model_dump(mode="json", by_alias=True, exclude={"schema_"})
    for key in ("name", "description"):
        if doc.get(key) is None:
            doc.pop(key, None)
    for node_id, info in graph.nodes.items():
        if info.plan is not None:
            doc["nodes"][node_id].update(_RESOLVED[type(info.plan)](info.plan))
        for key in LATER_FIELDS.get(info.op, ()):
            if doc["nodes"][node_id].get(key) is None:
                doc["nodes"][node_id].pop(key, None)
    return doc


def canonical_json(doc: Any) -> str:
    """Compact JSON with sorted keys: one text per document."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: SpecSource) -> str:
    """SHA-256 (hex) of the canonical form without ``$schema``, ``name`` and ``description``."""
    doc = {k: v for k, v in canonical_form(spec).items() if k not in UNHASHED}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def _pre_logits_doc(plan: ClassifyPlan) -> dict[str, Any]:
    """A classifier's pre-logits layer with its width filled in (nothing when it has none)."""
    if plan.pre_logits is None:
        return {}
    return {"pre_logits": plan.pre_logits.model_dump(mode="json")}


def _attention_doc(plan: AttentionPlan) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": plan.kind,
        "heads": plan.heads,
        "kv_heads": plan.kv_heads,
        "head_dim": plan.head_dim,
        "mask": plan.mask.model_dump(mode="json"),
        "position": plan.position.model_dump(mode="json") if plan.position is not None else None,
        "dropout": plan.dropout,
        "bias": plan.bias,
        "qk_norm": plan.qk_norm,
        "feature_map": plan.feature_map,
    }
    if plan.scale is not None:  # written only when set: specs without it keep their hash
        doc["scale"] = plan.scale
    return doc


def _block_doc(layer: LayerPlan) -> dict[str, Any]:
    doc = layer.block.model_dump(mode="json")
    doc["attention"] = _attention_doc(layer.attention)
    doc["cross_attention"] = (
        _attention_doc(layer.cross_attention) if layer.cross_attention is not None else None
    )
    doc["mlp"]["hidden"] = layer.hidden
    doc["mlp"]["ratio"] = layer.hidden / layer.attention.dim
    return doc


def _most_common(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The block most layers have (the earliest on a tie): the canonical stack ``block``.

    Choosing it from the resolved layers, not from what was written, makes a setting of every
    layer the same document whether it was written in ``block`` or in an all-layer override.
    """
    counts: dict[str, int] = {}
    for doc in docs:
        key = canonical_json(doc)
        counts[key] = counts.get(key, 0) + 1
    best = max(counts.values())
    return next(doc for doc in docs if counts[canonical_json(doc)] == best)


def _diff(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What ``other`` changes relative to ``base``, in the shape an override merges."""
    out: dict[str, Any] = {}
    for key, value in other.items():
        old = base.get(key)
        if value == old:
            continue
        if (
            isinstance(value, dict)
            and isinstance(old, dict)
            and value.get("kind") == old.get("kind")
        ):
            out[key] = _diff(old, value)
        else:
            out[key] = value
    return out


def _stack_doc(plan: StackPlan) -> dict[str, Any]:
    """A stack's ``block`` and ``overrides``, rewritten from its resolved layers."""
    docs = [_block_doc(layer) for layer in plan.layers]
    base = _most_common(docs)
    groups: dict[str, list[int]] = {}
    for layer, layer_doc in zip(plan.layers, docs, strict=True):
        diff = _diff(base, layer_doc)
        if diff:
            groups.setdefault(canonical_json(diff), []).append(layer.index)
    overrides = [
        {"layers": layers, **json.loads(diff)}
        for diff, layers in sorted(groups.items(), key=lambda item: item[1])
    ]
    return {"block": base, "overrides": overrides}


#: The fields of a node's canonical document that its plan fills in, by the plan's type (the
#: ones the graph resolves: an embedding's width, a table's length, a pooling mode, ...).
_RESOLVED: dict[type[NodePlan], Callable[[Any], dict[str, Any]]] = {
    EmbedPlan: lambda plan: {"dim": plan.dim},
    PositionPlan: lambda plan: {"max_len": plan.max_len},
    PoolPlan: lambda plan: {"mode": plan.mode},
    ClassifyPlan: lambda plan: {"pool": plan.mode} | _pre_logits_doc(plan),
    LMHeadPlan: lambda plan: {"vocab_size": plan.vocab},
    StackPlan: _stack_doc,
    PruneStage: lambda plan: {},  # a token_prune node resolves nothing it writes
}


__all__ = ["UNHASHED", "Spec", "canonical_form", "canonical_json", "spec_hash"]
