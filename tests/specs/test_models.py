"""Structure of a spec: strict keys with hints, discriminated kinds, required fields, ids,
shorthand expansion, and every problem reported at once."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from archlab import SpecError, load_spec
from archlab.specs.models import (
    Attention,
    Block,
    BlockLocalMask,
    CausalMask,
    ImageInput,
    NoMask,
    RelativeBias,
    Rotary,
    SlidingWindowMask,
)

Mutation = Callable[[dict[str, Any]], None]


def enc(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["nodes"]["enc"]


def attention(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["nodes"]["enc"]["block"]["attention"]


# ----------------------------------------------------------------------------------- unknown keys

UNKNOWN_KEYS: list[tuple[str, Mutation, str, str]] = [
    ("top level", lambda d: d.__setitem__("nmae", "x"), "nmae", "name"),
    ("input", lambda d: d["inputs"]["image"].__setitem__("chanels", 1), "inputs.image.chanels", "channels"),
    ("node", lambda d: enc(d).__setitem__("dpeth", 2), "nodes.enc.dpeth", "depth"),
    ("block", lambda d: enc(d)["block"].__setitem__("atention", {}), "nodes.enc.block.atention", "attention"),
    ("attention", lambda d: attention(d).__setitem__("hedas", 4), "nodes.enc.block.attention.hedas", "heads"),
    ("mlp", lambda d: enc(d)["block"].__setitem__("mlp", {"ration": 2.0}), "nodes.enc.block.mlp.ration", "ratio"),
    ("norm", lambda d: enc(d)["block"].__setitem__("norm", {"placment": "post"}), "nodes.enc.block.norm.placment", "placement"),
    (
        "mask object",
        lambda d: attention(d).__setitem__("mask", {"kind": "sliding_window", "window": 4, "casual": True}),
        "nodes.enc.block.attention.mask.casual",
        "causal",
    ),
    (
        "position object",
        lambda d: attention(d).__setitem__("position", {"kind": "rotary", "fracton": 0.5}),
        "nodes.enc.block.attention.position.fracton",
        "fraction",
    ),
    (
        "prune",
        lambda d: enc(d).__setitem__("prune", {"method": "dynamic", "at": [1], "keep": 0.5, "kep": 1}),
        "nodes.enc.prune.kep",
        "keep",
    ),
    (
        "override's nested object",
        lambda d: enc(d).__setitem__("overrides", [{"layers": [1], "attention": {"hedas": 2}}]),
        "nodes.enc.overrides.0.attention.hedas",
        "heads",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "path", "suggestion"),
    [case[1:] for case in UNKNOWN_KEYS],
    ids=[case[0] for case in UNKNOWN_KEYS],
)
def test_unknown_key_with_did_you_mean(
    spec_error, minimal_vit, mutate: Mutation, path: str, suggestion: str
) -> None:
    doc = minimal_vit()
    mutate(doc)
    key = path.rsplit(".", 1)[-1]
    spec_error(doc, path, rf"^unknown key '{key}'; did you mean '{suggestion}'\?")


@pytest.mark.parametrize(
    ("where", "key", "model"),
    [
        (("nodes", "enc", "block"), "heads", Block),
        (("nodes", "enc", "block", "attention"), "window", Attention),
        (("nodes", "enc", "block"), "kep", Block),
        (("inputs", "image"), "dim", ImageInput),
    ],
    ids=["heads-in-block", "window-in-attention", "kep-in-block", "dim-in-image"],
)
def test_did_you_mean_names_a_key_of_that_object(
    minimal_vit, where: tuple[str, ...], key: str, model: type
) -> None:
    doc = minimal_vit()
    target = doc
    for part in where:
        target = target[part]
    target[key] = 1
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    [message] = [m for p, m in exc.value.errors if p == ".".join((*where, key))]
    hint = re.search(r"did you mean '(\w+)'\?", message)
    assert hint is None or (hint.group(1) != key and hint.group(1) in model.model_fields), message


def test_unknown_key_without_a_close_match_has_no_hint(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["zzzzqqq"] = 1
    spec_error(doc, "nodes.enc.zzzzqqq", r"^unknown key 'zzzzqqq'$")


def test_unknown_key_in_a_decoder_cross_attention(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["block"]["cross_attention"] = {"hedas": 2}
    spec_error(doc, "nodes.dec.block.cross_attention.hedas", r"did you mean 'heads'\?")


def test_override_unknown_block_key_has_path_and_hint(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": [1], "mpl": {"ratio": 2}}]
    spec_error(doc, "nodes.enc.overrides.0.mpl", r"unknown key 'mpl'; did you mean 'mlp'\?")


# ---------------------------------------------------------------------------- unknown kinds


@pytest.mark.parametrize(
    ("mutate", "path", "pattern"),
    [
        (
            lambda d: enc(d).__setitem__("op", "encodr"),
            "nodes.enc",
            r"^unknown op 'encodr'; expected one of 'embed', 'patch_embed', .*'dropout'$",
        ),
        (
            lambda d: d["inputs"]["image"].__setitem__("kind", "img"),
            "inputs.image",
            r"^unknown kind 'img'; expected one of 'tokens', 'image', 'features'$",
        ),
        (
            lambda d: attention(d).__setitem__("mask", "casual"),
            "nodes.enc.block.attention.mask",
            r"^unknown kind 'casual'; expected one of 'none', 'causal', 'sliding_window', 'prefix', 'block_local'$",
        ),
        (
            lambda d: attention(d).__setitem__("mask", {"kind": "window", "window": 3}),
            "nodes.enc.block.attention.mask",
            r"^unknown kind 'window'; expected one of .*'sliding_window'",
        ),
        (
            lambda d: attention(d).__setitem__("position", "rope"),
            "nodes.enc.block.attention.position",
            r"^unknown kind 'rope'; expected one of 'rotary', 'alibi', 'relative_bias'$",
        ),
        (
            lambda d: attention(d).__setitem__("kind", "flash"),
            "nodes.enc.block.attention.kind",
            r"^\"flash\" is not one of 'softmax' or 'linear'$",
        ),
        (
            lambda d: enc(d)["block"].__setitem__("mlp", {"activation": "gleu"}),
            "nodes.enc.block.mlp.activation",
            r"^\"gleu\" is not one of 'gelu', 'gelu_tanh', 'relu', 'silu', 'swiglu', 'geglu' "
            r"or 'geglu_tanh'$",
        ),
        (
            lambda d: d["nodes"]["pos"].__setitem__("encoding", "rotary"),
            "nodes.pos.encoding",
            r"^\"rotary\" is not one of 'sinusoidal', 'learned' or 'sincos_2d'$",
        ),
        (
            lambda d: enc(d).__setitem__("prune", {"method": "topk", "at": [1], "keep": 0.5}),
            "nodes.enc.prune.method",
            r"^\"topk\" is not one of 'dynamic', 'attention_topk' or 'merge'$",
        ),
        (
            lambda d: d["nodes"]["head"].__setitem__("pool", "avg"),
            "nodes.head.pool",
            r"^\"avg\" is not one of 'cls', 'first', 'distill', 'mean', 'max' or 'last'$",
        ),
    ],
    ids=[
        "op",
        "input kind",
        "mask string",
        "mask object",
        "position kind",
        "attention kind",
        "activation",
        "encoding",
        "prune method",
        "pool mode",
    ],
)
def test_unknown_kind(spec_error, minimal_vit, mutate: Mutation, path: str, pattern: str) -> None:
    doc = minimal_vit()
    mutate(doc)
    error = spec_error(doc, path, pattern)
    assert len(error.errors) == 1, error.errors


# ----------------------------------------------------------------------------- missing fields


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("nodes.enc.block.attention.heads", r"^'heads' is required$"),
        ("nodes.enc.depth", r"^'depth' is required$"),
        ("nodes.enc.block", r"^'block' is required$"),
        ("nodes.enc.input", r"^'input' is required$"),
        ("nodes.patches.dim", r"^'dim' is required$"),
        ("nodes.head.classes", r"^'classes' is required$"),
        ("nodes.pos.encoding", r"^'encoding' is required$"),
        ("inputs.image.channels", r"^'channels' is required$"),
        ("outputs", r"^'outputs' is required$"),
        ("inputs", r"^'inputs' is required$"),
        ("nodes", r"^'nodes' is required$"),
        ("nodes.enc.op", r"^'op' is required here to say which kind of object this is$"),
        ("inputs.image.kind", r"^'kind' is required here to say which kind of object this is$"),
    ],
)
def test_missing_required_field(spec_error, minimal_vit, path: str, pattern: str) -> None:
    doc = minimal_vit()
    *parents, key = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[part]
    del target[key]
    # a missing discriminator is reported at the object it would have identified
    where = ".".join(parents) if key in ("op", "kind") else path
    spec_error(doc, where, pattern)


def test_missing_mask_field(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "sliding_window"}
    spec_error(doc, "nodes.enc.block.attention.mask.window", r"^'window' is required$")


@pytest.mark.parametrize(
    ("prune", "pattern"),
    [
        ({"method": "dynamic", "at": [1]}, r"method 'dynamic' needs 'keep'"),
        ({"method": "attention_topk", "at": [1]}, r"method 'attention_topk' needs 'keep'"),
        ({"method": "merge", "at": [1]}, r"method 'merge' needs 'r', the token pairs merged"),
        ({"method": "merge", "at": [1], "r": 2, "keep": 0.5}, r"method 'merge' takes 'r', not 'keep'"),
        ({"method": "dynamic", "at": [1], "keep": 0.5, "r": 2}, r"'r' belongs to method 'merge', not 'dynamic'"),
        ({"method": "dynamic", "at": [1], "keep": 0.5, "fuse": True}, r"'fuse' belongs to method 'attention_topk', not 'dynamic'"),
        ({"method": "merge", "at": [1], "r": 2, "fuse": True}, r"'fuse' belongs to method 'attention_topk', not 'merge'"),
    ],
    ids=["dynamic-keep", "topk-keep", "merge-r", "merge-keep", "r-dynamic", "fuse-dynamic", "fuse-merge"],
)  # fmt: skip
def test_prune_fields_for_method(spec_error, minimal_vit, prune: dict, pattern: str) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = prune
    spec_error(doc, "nodes.enc.prune", pattern)


@pytest.mark.parametrize(
    ("keep", "pattern"),
    [(0, r"greater than 0 \(got 0\)"), (-0.5, r"greater than 0"), (1.5, r"less than or equal to 1 \(got 1\.5\)")],
)  # fmt: skip
def test_prune_keep_outside_zero_one(spec_error, minimal_vit, keep: float, pattern: str) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1], "keep": keep}
    spec_error(doc, "nodes.enc.prune.keep", pattern)


def test_prune_keep_one_is_allowed(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1], "keep": 1.0}
    load_spec(doc)


@pytest.mark.parametrize(
    ("mutate", "path", "pattern"),
    [
        (lambda d: attention(d).__setitem__("heads", 0), "nodes.enc.block.attention.heads", r"greater than 0 \(got 0\)"),
        (lambda d: attention(d).__setitem__("dropout", 1.0), "nodes.enc.block.attention.dropout", r"less than 1 \(got 1\.0\)"),
        (lambda d: enc(d).__setitem__("depth", "deep"), "nodes.enc.depth", r'valid integer.*\(got "deep"\)'),
        (lambda d: d["inputs"]["image"].__setitem__("size", [8, 8, 8]), "inputs.image.size", r"at most 2 items"),
        (lambda d: d["inputs"]["image"].__setitem__("size", 0), "inputs.image.size", r"greater than 0 \(got 0\)"),
        (lambda d: d["nodes"]["cls"].__setitem__("count", 0), "nodes.cls.count", r"greater than 0"),
        (lambda d: d.__setitem__("inputs", {}), "inputs", r"at least 1 item"),
        (lambda d: d.__setitem__("outputs", []), "outputs", r"at least 1 item"),
        (lambda d: d.__setitem__("name", 3), "name", r"valid string \(got 3\)"),
    ],
    ids=["heads-0", "dropout-1", "depth-str", "size-3", "size-0", "count-0", "no-inputs", "no-outputs", "name-int"],
)  # fmt: skip
def test_field_values(spec_error, minimal_vit, mutate: Mutation, path: str, pattern: str) -> None:
    doc = minimal_vit()
    mutate(doc)
    spec_error(doc, path, pattern)


def test_pad_id_outside_the_vocabulary(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["ids"]["pad_id"] = 100
    spec_error(doc, "inputs.ids", r"pad_id 100 is outside the vocabulary \(vocab_size 100\)")


# ------------------------------------------------------------------------------------------ ids


def rename_node(doc: dict[str, Any], old: str, new: str) -> None:
    """Rename a node and every reference to it."""
    doc["nodes"] = {(new if k == old else k): v for k, v in doc["nodes"].items()}
    for node in doc["nodes"].values():
        for key in ("input", "memory", "tie"):
            if node.get(key) == old:
                node[key] = new
        if "inputs" in node:
            node["inputs"] = [new if r == old else r for r in node["inputs"]]
    outputs = doc["outputs"]
    if isinstance(outputs, str):
        doc["outputs"] = new if outputs == old else outputs
    else:
        doc["outputs"] = [new if o == old else o for o in outputs]


def rename_input(doc: dict[str, Any], old: str, new: str) -> None:
    doc["inputs"] = {(new if k == old else k): v for k, v in doc["inputs"].items()}
    for node in doc["nodes"].values():
        if node.get("input") == old:
            node["input"] = new


def test_rename_helpers_keep_the_spec_valid(minimal_vit) -> None:
    doc = minimal_vit()
    rename_node(doc, "enc", "encoder")
    rename_node(doc, "head", "classifier")
    rename_input(doc, "image", "pixels")
    spec = load_spec(doc)
    assert list(spec.nodes) == ["patches", "cls", "pos", "encoder", "classifier"]
    assert list(spec.inputs) == ["pixels"]


@pytest.mark.parametrize("bad", ["2bad", "has-dash", "has space", "dotted.id", "", "é"])
def test_invalid_node_id(spec_error, minimal_vit, bad: str) -> None:
    doc = minimal_vit()
    rename_node(doc, "head", bad)
    error = spec_error(
        doc,
        f"nodes.{bad}",
        r"is not a valid id: use letters, digits and '_', not starting with a digit$",
    )
    # the reference in outputs is an invalid id too, reported where it is written
    assert any(p == "outputs.0" or p == "outputs" for p, _ in error.errors), error.errors


def test_invalid_input_name(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    rename_input(doc, "image", "im-age")
    error = spec_error(doc, "inputs.im-age", r'^"im-age" is not a valid id')
    spec_error(doc, "nodes.patches.input", r'^"im-age" is not a valid id')
    assert len(error.errors) == 2


@pytest.mark.parametrize("word", ["class", "lambda", "None", "self"])
def test_node_id_python_keyword(spec_error, minimal_vit, word: str) -> None:
    doc = minimal_vit()
    rename_node(doc, "head", word)
    spec_error(doc, f"nodes.{word}", rf"^node id '{word}' is a Python keyword; rename it$")


def test_input_name_python_keyword(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    rename_input(doc, "image", "lambda")
    spec_error(doc, "inputs.lambda", r"^input name 'lambda' is a Python keyword; rename it$")


def test_node_id_equal_to_an_input_name(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    rename_node(doc, "head", "image")
    spec_error(
        doc, "nodes.image", r"^node id 'image' clashes with the input of that name; rename one$"
    )


@pytest.mark.parametrize(
    "name", ["forward", "training", "eval", "to", "state_dict", "parameters", "half", "type"]
)
def test_node_id_equal_to_a_module_attribute(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    rename_node(doc, "head", name)
    error = spec_error(
        doc,
        f"nodes.{name}",
        rf"^node id '{name}' clashes with an attribute of the compiled nn.Module; rename it$",
    )
    assert len(error.errors) == 1


@pytest.mark.parametrize("name", ["spec", "graph", "summary", "spec_hash", "inputs", "outputs"])
def test_node_id_equal_to_a_compiled_model_attribute(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    rename_node(doc, "enc", name)
    spec_error(doc, f"nodes.{name}", r"clashes with an attribute of the compiled nn.Module")


def test_input_named_like_another_inputs_mask(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["ids_mask"] = {"kind": "tokens", "vocab_size": 2, "max_len": 32}
    doc["nodes"]["mask_tok"] = {"op": "embed", "input": "ids_mask", "dim": 64}
    doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "mask_tok"]}
    doc["nodes"]["dec"]["input"] = "both"
    error = spec_error(
        doc,
        "inputs.ids_mask",
        r"^input 'ids_mask' clashes with the padding-mask argument of input 'ids'$",
    )
    assert len(error.errors) == 1


def test_ids_that_merely_contain_attribute_names_are_fine(minimal_vit) -> None:
    doc = minimal_vit()
    rename_node(doc, "enc", "forward_encoder")
    rename_node(doc, "head", "to_logits")
    rename_input(doc, "image", "image_mask_like")
    load_spec(doc)


# ----------------------------------------------------------------------------------- shorthands


def test_shorthands_are_expanded_while_parsing(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc).update(mask="none", position="relative_bias")
    enc(doc)["overrides"] = [
        {"layers": "1-2", "attention": {"mask": {"kind": "sliding_window", "window": 3}}},
        {"layers": 3, "attention": {"position": "rotary"}},
        {"layers": "0", "mlp": {"ratio": 2}},
    ]
    spec = load_spec(doc)
    assert spec.outputs == ["head"]
    assert spec.inputs["image"].size == (8, 8)
    assert spec.nodes["patches"].patch_size == (2, 2)
    block_attention = spec.nodes["enc"].block.attention
    assert block_attention.mask == NoMask(kind="none")
    assert block_attention.position == RelativeBias(
        kind="relative_bias", buckets=32, max_distance=128
    )
    assert [o.layers for o in spec.nodes["enc"].overrides] == [[1, 2], [3], [0]]


def test_string_and_object_forms_are_equal(minimal_gpt) -> None:
    short, long = minimal_gpt(), minimal_gpt()
    short["nodes"]["dec"]["block"]["attention"].update(mask="causal", position="rotary")
    long["nodes"]["dec"]["block"]["attention"].update(
        mask={"kind": "causal"}, position={"kind": "rotary", "base": 10000.0, "fraction": 1.0}
    )
    assert load_spec(short) == load_spec(long)
    attention_spec = load_spec(short).nodes["dec"].block.attention
    assert attention_spec.mask == CausalMask(kind="causal")
    assert attention_spec.position == Rotary(kind="rotary")


def test_mask_objects_keep_causal_unset(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "block_local", "block": 4}
    assert load_spec(doc).nodes["enc"].block.attention.mask == BlockLocalMask(
        kind="block_local", block=4, causal=None
    )
    attention(doc)["mask"] = {"kind": "sliding_window", "window": 4, "causal": True}
    assert load_spec(doc).nodes["enc"].block.attention.mask == SlidingWindowMask(
        kind="sliding_window", window=4, causal=True
    )


@pytest.mark.parametrize(
    ("layers", "pattern"),
    [
        ("3-1", r"^layers range '3-1' runs backwards; write '1-3'$"),
        ("a-b", r"^layers 'a-b' is neither a list of indices nor a range 'a-b'$"),
        ("1-", r"neither a list of indices nor a range"),
        ([], r"at least 1 item"),
        ([-1], r"greater than or equal to 0"),
    ],
    ids=["backwards", "letters", "open", "empty", "negative"],
)
def test_override_layers_values(spec_error, minimal_vit, layers: object, pattern: str) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": layers, "mlp": {"ratio": 2}}]
    path = "nodes.enc.overrides.0.layers"
    spec_error(doc, path + ".0" if layers == [-1] else path, pattern)


def test_override_range_is_inclusive(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": " 1 - 3 ", "mlp": {"ratio": 2}}]
    assert load_spec(doc).nodes["enc"].overrides[0].layers == [1, 2, 3]


def test_override_without_layers(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"mlp": {"ratio": 2}}]
    spec_error(doc, "nodes.enc.overrides.0.layers", r"^'layers' is required$")


# ------------------------------------------------------------------------------ all errors at once


def test_every_structural_problem_is_reported_at_once(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nmae"] = "typo"
    enc(doc)["dpeth"] = 3
    attention(doc)["heads"] = 0
    attention(doc)["mask"] = "casual"
    doc["inputs"]["image"]["channels"] = -1
    doc["nodes"]["head"]["op"] = "clasify"
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    paths = [p for p, _ in exc.value.errors]
    assert set(paths) >= {
        "nmae",
        "nodes.enc.dpeth",
        "nodes.enc.block.attention.heads",
        "nodes.enc.block.attention.mask",
        "inputs.image.channels",
        "nodes.head",
    }, exc.value.errors
    text = str(exc.value)
    assert text.startswith(f"invalid spec ({len(exc.value.errors)} problems)")
    for path in paths:
        assert f"\n  {path}: " in text


def test_every_graph_problem_is_reported_at_once(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["kv_heads"] = 3
    enc(doc)["prune"] = {"method": "dynamic", "at": [2, 1], "keep": 0.5}
    doc["nodes"]["extra"] = {"op": "norm", "input": "enc"}
    doc["nodes"]["pooled"] = {"op": "pool", "input": "pos", "mode": "cls"}
    doc["nodes"]["head2"] = {"op": "classify", "input": "pooled", "classes": 3, "pool": "mean"}
    doc["outputs"] = ["head", "head2", "head"]
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    paths = [p for p, _ in exc.value.errors]
    assert set(paths) == {
        "nodes.enc.block.attention.kv_heads",
        "nodes.enc.prune.at",
        "nodes.extra",
        "nodes.head2.pool",
        "outputs",
    }, exc.value.errors


def test_an_upstream_error_does_not_cascade(minimal_vit) -> None:
    """A node whose input failed to resolve is skipped, not reported again."""
    doc = minimal_vit()
    doc["nodes"]["patches"]["patch_size"] = 3
    doc["nodes"]["pos"]["max_len"] = 4  # would be too short, but its input never resolves
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert {p for p, _ in exc.value.errors} == {"nodes.patches.patch_size"}


def test_errors_are_deduplicated_and_paths_are_strings(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["patches"]["patch_size"] = [3, 3]
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert len(exc.value.errors) == len(set(exc.value.errors))
    assert all(isinstance(p, str) and isinstance(m, str) for p, m in exc.value.errors)
    assert [m for _, m in exc.value.errors] == [
        "patch size 3 does not divide the image height 8 (from inputs.image.size)",
        "patch size 3 does not divide the image width 8 (from inputs.image.size)",
    ]


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)
    error = SpecError([("a", "x"), ("a", "x"), ("", "whole")], source="f.json")
    assert error.errors == [("a", "x"), ("", "whole")]
    assert str(error) == "f.json: invalid spec (2 problems)\n  a: x\n  <spec>: whole"


def test_image_inputs_names_the_image_inputs_in_order(minimal_vit, minimal_gpt) -> None:
    doc = minimal_vit()
    doc["inputs"] = {
        "second": {"kind": "image", "channels": 1, "size": 8},
        "image": {"kind": "image", "channels": 1, "size": 8},
    }
    doc["nodes"]["patches"]["input"] = "second"
    doc["nodes"]["more"] = {"op": "patch_embed", "input": "image", "dim": 64, "patch_size": 2}
    doc["outputs"] = ["head", "more"]
    assert load_spec(doc).image_inputs() == ("second", "image")
    assert load_spec(minimal_gpt()).image_inputs() == ()
