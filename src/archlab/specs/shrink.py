"""A small version of a spec with the same structure, for tests and quick device checks.

``small_version(doc)`` works on the spec's JSON document (a dict, as ``json.load`` gives it) and
returns a new one that ``archlab.load_spec`` accepts. Pure dict manipulation: no torch, no
validation of its own (an invalid input yields an invalid output; load it to find out).

What it keeps: every node and input with its op, kind and id; the graph's edges; masks (kinds and
causality), in-attention positions (rotary fraction and base, ALiBi, relative-bias buckets),
cross-attention, tied embeddings and heads, grouped-query attention (``kv_heads`` stays below
``heads``, and above 1 unless it was 1), ``qk_norm``, ``head_dim`` when given, MLP activations and
ratios, norms and their placement and eps, dropouts, drop-path and layer-scale settings, padding
ids, CLS-token counts, position encodings, pooling, pruning methods and keep fractions, and which
layers the overrides and pruning stages touch (see *depth*).

What it shrinks:
- *widths* (``dim`` of ``embed`` / ``patch_embed`` / ``features``): those above 64 are scaled
  so the widest becomes 64, each rounded to a multiple of 16 (at least 16); narrower stay.
- *heads*: at most 4, dividing the stack's new width (with an even head_dim for rotary);
  ``kv_heads`` keeps its relation to ``heads`` (equal, 1, or a proper divisor > 1);
  an explicit ``head_dim`` is capped at 16.
- *depth*: a stack keeps one layer for each distinct kind of layer it has (the set of overrides
  covering it, whether a pruning stage acts there) plus its first layer, at least 2 layers when it
  had 2 or more; overrides and ``prune.at`` are renumbered onto the kept layers, so a stack of 12
  with DynamicViT at [3, 6, 9] becomes 4 layers with stages at [1, 2, 3] and one whose layers
  2 and 5 of 6 are global becomes [local, global].
- *lengths*: token and feature ``max_len`` at most 32; images larger than 32 pixels a side become
  32, their patches at most a quarter of the new side (dividing it), so a 224 / 16 ViT becomes a
  32 / 8 one with 4 x 4 patches; an explicit position ``max_len`` is capped by the longest
  sequence the small spec can carry; window, block and prefix sizes are capped at a quarter of
  the new length (at least 2), so the masks still cut sequences into several parts.
- *vocabularies* (``vocab_size`` of inputs and ``lm_head``) at most 100 (``pad_id`` kept, moved
  inside the vocabulary if needed); ``classes`` at most 10; MLP ``hidden`` at most 128; ToMe's
  ``r`` at most 4.

The name stays; the description says it is a small version.
"""

from __future__ import annotations

import copy
from typing import Any

#: The small spec's limits (see the module docstring).
WIDTH = 64
HEADS = 4
HEAD_DIM = 16
LENGTH = 32
IMAGE_SIDE = 32
VOCAB = 100
CLASSES = 10
HIDDEN = 128
MERGE_R = 4

_STACKS = ("encoder", "decoder")


def small_version(doc: dict[str, Any]) -> dict[str, Any]:
    """A small spec document with the structure of `doc` (see the module docstring)."""
    small = copy.deepcopy(doc)
    inputs: dict[str, Any] = small.get("inputs", {})
    nodes: dict[str, Any] = small.get("nodes", {})

    width_of = _width_map(doc)
    for spec_input in inputs.values():
        _shrink_input(spec_input, width_of)
    for node in nodes.values():
        if node.get("op") == "patch_embed":
            node["patch_size"] = _small_patch(node["patch_size"], doc, small, node["input"])
    images = {name: _side_pair(i["size"]) for name, i in inputs.items() if i.get("kind") == "image"}
    longest = _longest_sequence(small, images)

    new_widths = _new_widths(doc, width_of)
    for node_id, node in nodes.items():
        op = node.get("op")
        if op in ("embed", "patch_embed") and node.get("dim") is not None:
            node["dim"] = width_of(node["dim"])
        if op == "position" and node.get("max_len") is not None:
            node["max_len"] = min(node["max_len"], longest)
        elif op == "classify":
            node["classes"] = min(node["classes"], CLASSES)
        elif op == "lm_head" and node.get("vocab_size") is not None:
            node["vocab_size"] = min(node["vocab_size"], VOCAB)
        elif op == "token_prune" and node.get("r") is not None:
            node["r"] = min(node["r"], MERGE_R)
        elif op in _STACKS:
            _shrink_stack(node, new_widths.get(node_id))
    name = small.get("name") or "spec"
    small["description"] = (
        f"small_version of {name} (archlab.specs.shrink): the same structure with fewer layers, "
        "narrower widths and shorter sequences, for tests and quick device checks."
    )
    return small


# ------------------------------------------------------------------------------------- inputs


def _shrink_input(spec_input: dict[str, Any], width_of: Any) -> None:
    kind = spec_input.get("kind")
    if kind == "tokens":
        vocab = min(spec_input["vocab_size"], VOCAB)
        spec_input["vocab_size"] = vocab
        spec_input["max_len"] = min(spec_input["max_len"], LENGTH)
        pad = spec_input.get("pad_id")
        if pad is not None and pad >= vocab:
            spec_input["pad_id"] = vocab - 1
    elif kind == "features":
        spec_input["dim"] = width_of(spec_input["dim"])
        spec_input["max_len"] = min(spec_input["max_len"], LENGTH)
    elif kind == "image":
        h, w = _side_pair(spec_input["size"])
        small = [min(h, IMAGE_SIDE), min(w, IMAGE_SIDE)]
        spec_input["size"] = small[0] if small[0] == small[1] else small


def _side_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _small_patch(patch: Any, doc: dict[str, Any], small: dict[str, Any], image: str) -> Any:
    """The patch size on the small image: unchanged where the image kept its side."""
    before = _side_pair(doc["inputs"][image]["size"])
    after = _side_pair(small["inputs"][image]["size"])
    p = _side_pair(patch)
    sides = []
    for old_side, side, old_p in zip(before, after, p, strict=True):
        if side == old_side:
            sides.append(old_p)
            continue
        cap = max(1, min(old_p, side // 4))
        sides.append(max(d for d in range(1, cap + 1) if side % d == 0))
    return sides[0] if sides[0] == sides[1] else sides


def _longest_sequence(small: dict[str, Any], images: dict[str, tuple[int, int]]) -> int:
    """An upper bound on any sequence length in the small spec (for position ``max_len``)."""
    total = 0
    for spec_input in small.get("inputs", {}).values():
        if spec_input.get("kind") in ("tokens", "features"):
            total += spec_input["max_len"]
    for node in small.get("nodes", {}).values():
        if node.get("op") == "patch_embed":
            h, w = images.get(node["input"], (1, 1))
            ph, pw = _side_pair(node["patch_size"])
            total += (h // ph) * (w // pw)
        elif node.get("op") == "cls_token":
            total += node.get("count", 1)
    return max(total, 1)


# ------------------------------------------------------------------------------------- widths


def _width_map(doc: dict[str, Any]) -> Any:
    """The function old width -> new width: scale the widest source to WIDTH, multiples of 16."""
    widths = [i["dim"] for i in doc.get("inputs", {}).values() if i.get("kind") == "features"]
    widths += [
        n["dim"]
        for n in doc.get("nodes", {}).values()
        if n.get("op") in ("embed", "patch_embed") and n.get("dim") is not None
    ]
    widest = max(widths, default=WIDTH)

    def width_of(w: int) -> int:
        if w <= WIDTH:
            return w
        return max(16, 16 * round(w * WIDTH / widest / 16))

    return width_of


def _new_widths(doc: dict[str, Any], width_of: Any) -> dict[str, int]:
    """Each node's feature width in the small spec, traced along the edges of the dict."""
    inputs = doc.get("inputs", {})
    nodes = doc.get("nodes", {})
    known: dict[str, int] = {}

    def width(ref: str, seen: frozenset[str] = frozenset()) -> int | None:
        if ref in known:
            return known[ref]
        if ref in inputs:
            spec_input = inputs[ref]
            return width_of(spec_input["dim"]) if spec_input.get("kind") == "features" else None
        node = nodes.get(ref)
        if node is None or ref in seen:
            return None
        seen = seen | {ref}
        op = node.get("op")
        result: int | None
        if op in ("embed", "patch_embed"):
            if node.get("dim") is not None:
                result = width_of(node["dim"])
            elif node.get("tie") is not None:
                result = width(node["tie"], seen)
            else:
                result = None
        elif op == "concat" and node.get("axis") == "feature":
            parts = [width(r, seen) for r in node.get("inputs", [])]
            result = None if any(p is None for p in parts) else sum(p for p in parts if p)
        elif op in ("classify", "lm_head"):
            result = None
        elif "inputs" in node:
            result = width(node["inputs"][0], seen) if node["inputs"] else None
        else:
            result = width(node.get("input", ""), seen)
        if result is not None:
            known[ref] = result
        return result

    return {node_id: w for node_id in nodes if (w := width(node_id)) is not None}


# ------------------------------------------------------------------------------------- stacks


def _shrink_stack(node: dict[str, Any], dim: int | None) -> None:
    depth: int = node["depth"]
    overrides: list[dict[str, Any]] = node.get("overrides", []) or []
    prune = node.get("prune")
    layer_sets = [set(_layer_list(o.get("layers"), depth)) for o in overrides]
    at: list[int] = list(prune.get("at", [])) if prune else []
    keep = _kept_layers(depth, layer_sets, at)
    renumber = {old: new for new, old in enumerate(keep)}
    node["depth"] = len(keep)
    if prune:
        prune["at"] = [renumber[i] for i in at]
        if prune.get("r") is not None:
            prune["r"] = min(prune["r"], MERGE_R)
    kept_overrides = []
    for override, layers in zip(overrides, layer_sets, strict=True):
        new_layers = sorted(renumber[i] for i in layers if i in renumber)
        if new_layers:
            override = {**override, "layers": new_layers}
            _shrink_block(override, dim)
            kept_overrides.append(override)
    if "overrides" in node:
        node["overrides"] = kept_overrides
    _shrink_block(node["block"], dim)


def _layer_list(value: Any, depth: int) -> list[int]:
    """An override's ``layers`` as a list (the spec's shorthands: int, "a-b", "a")."""
    if isinstance(value, int) and not isinstance(value, bool):
        found = [value]
    elif isinstance(value, str):
        text = value.strip()
        if "-" in text:
            lo, hi = (int(part) for part in text.split("-", 1))
            found = list(range(lo, hi + 1))
        else:
            found = [int(text)]
    else:
        found = [int(i) for i in value or []]
    return [i for i in found if 0 <= i < depth]


def _kept_layers(depth: int, layer_sets: list[set[int]], at: list[int]) -> list[int]:
    """Original indices of the layers the small stack keeps: one per kind of layer, and stages."""
    kinds: dict[tuple[Any, ...], int] = {}
    for i in range(depth):
        kind = (tuple(k for k, s in enumerate(layer_sets) if i in s), i in at)
        kinds.setdefault(kind, i)
    keep = {0, *kinds.values(), *at}
    if len(keep) < 2 and depth >= 2:
        keep.add(depth - 1)
    return sorted(keep)


def _shrink_block(block: dict[str, Any], dim: int | None) -> None:
    for key in ("attention", "cross_attention"):
        attention = block.get(key)
        if isinstance(attention, dict):
            _shrink_attention(attention, dim)
    mlp = block.get("mlp")
    if isinstance(mlp, dict) and mlp.get("hidden") is not None:
        mlp["hidden"] = min(mlp["hidden"], HIDDEN)


def _shrink_attention(attention: dict[str, Any], dim: int | None) -> None:
    mask = attention.get("mask")
    if isinstance(mask, dict):
        cap = max(2, LENGTH // 4)
        for field in ("window", "block", "prefix_len"):
            if mask.get(field) is not None:
                mask[field] = min(mask[field], cap)
    heads = attention.get("heads")
    if heads is None:
        return
    head_dim = attention.get("head_dim")
    if head_dim is not None:
        head_dim = max(2, min(head_dim, HEAD_DIM) // 2 * 2)
        attention["head_dim"] = head_dim
    position = attention.get("position")
    rotary = position == "rotary" or (
        isinstance(position, dict) and position.get("kind") == "rotary"
    )
    fraction = position.get("fraction", 1.0) if isinstance(position, dict) else 1.0
    new_heads = _small_heads(heads, dim, head_dim, rotary, fraction)
    attention["heads"] = new_heads
    kv = attention.get("kv_heads")
    if kv is not None:
        attention["kv_heads"] = _small_kv_heads(kv, heads, new_heads)


def _small_heads(
    heads: int, dim: int | None, head_dim: int | None, rotary: bool, fraction: float
) -> int:
    """The largest head count <= min(heads, HEADS) that divides `dim` (rotary: even rotation)."""
    limit = min(heads, HEADS)
    if head_dim is not None or dim is None:
        return limit
    for h in range(limit, 0, -1):
        if dim % h:
            continue
        rotated = round(dim // h * fraction)
        if rotary and (rotated % 2 or rotated == 0):
            continue
        return h
    return 1


def _small_kv_heads(kv: int, heads: int, new_heads: int) -> int:
    """kv_heads for `new_heads` query heads, keeping MHA, MQA or proper GQA as it was."""
    if kv >= heads:
        return new_heads
    if kv == 1:
        return 1
    divisors = [d for d in range(2, new_heads) if new_heads % d == 0]
    if not divisors:
        return 1 if new_heads > 1 else new_heads
    ratio = max(1, heads // kv)
    # the divisor closest to the original grouping, preferring more kv heads
    return min(divisors, key=lambda d: (abs(new_heads // d - ratio), -d))


__all__ = ["small_version"]
