"""Canonical form and ``spec_hash``: equal for every spelling of one architecture, different for
every real change, idempotent, and stable through JSON round trips."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archlab import canonical_form, load_spec, spec_hash
from archlab.specs import canonical_json
from archlab.specs.canonical import UNHASHED
from archlab.specs.models import Spec

ZOO = sorted(Path(__file__).parents[2].glob("specs/*.json"))
Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def vit_enc(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]


def vit_attention(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]["block"]["attention"]


def gpt_attention(doc: Doc) -> Doc:
    return doc["nodes"]["dec"]["block"]["attention"]


def with_memory(doc: Doc) -> Doc:
    doc["inputs"]["src"] = {"kind": "features", "dim": 32, "max_len": 10}
    doc["nodes"]["dec"]["memory"] = "src"
    return doc


def hash_of(doc: Doc) -> str:
    return spec_hash(copy.deepcopy(doc))


# --------------------------------------------------------------------------- same architecture

VIT_SAME: list[tuple[str, Mutation]] = [
    ("kv_heads = heads", lambda d: vit_attention(d).__setitem__("kv_heads", 4)),
    ("head_dim = dim / heads", lambda d: vit_attention(d).__setitem__("head_dim", 16)),
    ("mask none in an encoder", lambda d: vit_attention(d).__setitem__("mask", "none")),
    ("mask null", lambda d: vit_attention(d).__setitem__("mask", None)),
    ("size pair", lambda d: d["inputs"]["image"].__setitem__("size", [8, 8])),
    ("patch_size pair", lambda d: d["nodes"]["patches"].__setitem__("patch_size", [2, 2])),
    ("outputs list", lambda d: d.__setitem__("outputs", ["head"])),
    ("max_len inferred", lambda d: d["nodes"]["pos"].__setitem__("max_len", 17)),
    ("classify pool default", lambda d: d["nodes"]["head"].__setitem__("pool", "cls")),
    ("cls count default", lambda d: d["nodes"]["cls"].__setitem__("count", 1)),
    ("mlp ratio written", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"ratio": 4.0})),
    ("mlp ratio as int", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"ratio": 4})),
    ("mlp hidden = ratio * dim", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"hidden": 256})),
    (
        "block norm defaults",
        lambda d: vit_enc(d)["block"].__setitem__("norm", {"kind": "layernorm", "placement": "pre", "eps": 1e-6}),
    ),
    ("block scalars", lambda d: vit_enc(d)["block"].update(dropout=0.0, drop_path=0.0, layer_scale=None)),
    ("no overrides", lambda d: vit_enc(d).__setitem__("overrides", [])),
    ("prune null", lambda d: vit_enc(d).__setitem__("prune", None)),
    (
        "override repeating the base",
        lambda d: vit_enc(d).__setitem__("overrides", [{"layers": [1], "attention": {"heads": 4}, "mlp": {"ratio": 4}}]),
    ),
    (
        "attention defaults",
        lambda d: vit_attention(d).update(kind="softmax", dropout=0.0, bias=True, qk_norm=False, feature_map="elu", position=None),
    ),
    ("name, description, $schema", lambda d: d.update({"name": "other", "description": "text", "$schema": "x.json"})),
    ("no name", lambda d: d.pop("name")),
    ("head classes as written", lambda d: d["nodes"]["head"].__setitem__("classes", 10)),
]  # fmt: skip

GPT_SAME: list[tuple[str, Mutation]] = [
    ("mask causal in a decoder", lambda d: gpt_attention(d).__setitem__("mask", "causal")),
    ("mask causal object", lambda d: gpt_attention(d).__setitem__("mask", {"kind": "causal"})),
    ("lm_head vocab written", lambda d: d["nodes"]["logits"].__setitem__("vocab_size", 100)),
    ("norm node defaults", lambda d: d["nodes"]["norm"].update(kind="layernorm", eps=1e-6)),
    ("embed scale default", lambda d: d["nodes"]["tok"].__setitem__("scale", False)),
    ("cross_attention null", lambda d: d["nodes"]["dec"]["block"].__setitem__("cross_attention", None)),
    ("memory null", lambda d: d["nodes"]["dec"].__setitem__("memory", None)),
    ("pad_id null", lambda d: d["inputs"]["ids"].__setitem__("pad_id", None)),
]  # fmt: skip


@pytest.mark.parametrize("mutate", [m for _, m in VIT_SAME], ids=[n for n, _ in VIT_SAME])
def test_vit_spelling_does_not_change_the_hash(minimal_vit, mutate: Mutation) -> None:
    doc = minimal_vit()
    mutate(doc)
    assert hash_of(doc) == hash_of(minimal_vit())


@pytest.mark.parametrize("mutate", [m for _, m in GPT_SAME], ids=[n for n, _ in GPT_SAME])
def test_gpt_spelling_does_not_change_the_hash(minimal_gpt, mutate: Mutation) -> None:
    doc = minimal_gpt()
    mutate(doc)
    assert hash_of(doc) == hash_of(minimal_gpt())


def test_key_order_and_layout_do_not_change_the_hash(minimal_vit) -> None:
    doc = minimal_vit()

    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    pretty = json.dumps(reverse(doc), indent=7)
    compact = json.dumps(doc, separators=(",", ":"))
    assert spec_hash(pretty) == spec_hash(compact) == hash_of(doc)


def test_file_and_dict_hash_the_same(tmp_path: Path, minimal_vit) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(minimal_vit()), encoding="utf-8")
    assert spec_hash(path) == spec_hash(str(path)) == hash_of(minimal_vit())
    assert spec_hash(load_spec(path)) == hash_of(minimal_vit())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([{"layers": "1-3", "mlp": {"ratio": 2}}], [{"layers": [1, 2, 3], "mlp": {"ratio": 2}}]),
        ([{"layers": "1-3", "mlp": {"ratio": 2}}], [{"layers": [3, 1, 2], "mlp": {"ratio": 2.0}}]),
        (
            [{"layers": "1-3", "mlp": {"ratio": 2}}],
            [{"layers": [1], "mlp": {"ratio": 2}}, {"layers": [2, 3], "mlp": {"hidden": 128}}],
        ),
        ([{"layers": 2, "mlp": {"ratio": 2}}], [{"layers": "2", "mlp": {"ratio": 2}}]),
    ],
    ids=["range", "unsorted", "split", "int-and-string"],
)
def test_equivalent_overrides_hash_the_same(minimal_vit, a: list, b: list) -> None:
    first, second = minimal_vit(), minimal_vit()
    vit_enc(first)["overrides"] = a
    vit_enc(second)["overrides"] = b
    assert hash_of(first) == hash_of(second)


def test_an_override_of_every_layer_equals_the_block_setting(minimal_vit) -> None:
    in_override, in_block = minimal_vit(), minimal_vit()
    vit_enc(in_override)["overrides"] = [{"layers": "0-3", "mlp": {"ratio": 2}}]
    vit_enc(in_block)["block"]["mlp"] = {"ratio": 2}
    assert hash_of(in_override) == hash_of(in_block)


def test_cross_attention_defaults_written_out_hash_the_same(minimal_gpt) -> None:
    base = with_memory(minimal_gpt())
    for cross in (
        {},
        {"heads": 4},
        {"heads": 4, "kv_heads": 4, "head_dim": 16, "bias": True, "qk_norm": False},
        {"mask": "none", "position": None, "kind": "softmax", "dropout": 0.0},
    ):
        doc = copy.deepcopy(base)
        doc["nodes"]["dec"]["block"]["cross_attention"] = cross
        assert hash_of(doc) == hash_of(base), cross


def test_mask_causal_defaults_written_out_hash_the_same(minimal_gpt, minimal_vit) -> None:
    gpt, gpt_written = minimal_gpt(), minimal_gpt()
    gpt_attention(gpt)["mask"] = {"kind": "sliding_window", "window": 8}
    gpt_attention(gpt_written)["mask"] = {"kind": "sliding_window", "window": 8, "causal": True}
    assert hash_of(gpt) == hash_of(gpt_written)
    vit, vit_written = minimal_vit(), minimal_vit()
    vit_attention(vit)["mask"] = {"kind": "block_local", "block": 4}
    vit_attention(vit_written)["mask"] = {"kind": "block_local", "block": 4, "causal": False}
    assert hash_of(vit) == hash_of(vit_written)


def test_tied_embed_dim_written_out_hashes_the_same(minimal_gpt) -> None:
    def two_inputs(**embed: Any) -> Doc:
        doc = minimal_gpt()
        doc["inputs"]["ids2"] = {"kind": "tokens", "vocab_size": 100, "max_len": 32}
        doc["nodes"]["tok2"] = {"op": "embed", "input": "ids2", "tie": "tok", **embed}
        doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "tok2"]}
        doc["nodes"]["dec"]["input"] = "both"
        return doc

    assert hash_of(two_inputs()) == hash_of(two_inputs(dim=64))


def test_pool_mode_written_out_hashes_the_same(minimal_vit) -> None:
    doc, written = minimal_vit(), minimal_vit()
    for d, mode in ((doc, None), (written, "cls")):
        d["nodes"]["p"] = {"op": "pool", "input": "enc", **({"mode": mode} if mode else {})}
        d["nodes"]["head"]["input"] = "p"
    assert hash_of(doc) == hash_of(written)


# ------------------------------------------------------------------------------ real changes

VIT_DIFFERENT: list[tuple[str, Mutation]] = [
    ("heads", lambda d: vit_attention(d).__setitem__("heads", 8)),
    ("kv_heads", lambda d: vit_attention(d).__setitem__("kv_heads", 2)),
    ("head_dim", lambda d: vit_attention(d).__setitem__("head_dim", 32)),
    ("depth", lambda d: vit_enc(d).__setitem__("depth", 3)),
    ("dim", lambda d: d["nodes"]["patches"].__setitem__("dim", 32)),
    ("patch size", lambda d: d["nodes"]["patches"].__setitem__("patch_size", 4)),
    ("image size", lambda d: d["inputs"]["image"].__setitem__("size", [8, 16])),
    ("channels", lambda d: d["inputs"]["image"].__setitem__("channels", 3)),
    ("activation", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"activation": "relu"})),
    ("mlp ratio", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"ratio": 2})),
    ("norm placement", lambda d: vit_enc(d)["block"].__setitem__("norm", {"placement": "post"})),
    ("norm eps", lambda d: vit_enc(d)["block"].__setitem__("norm", {"eps": 1e-5})),
    ("dropout", lambda d: vit_enc(d)["block"].__setitem__("dropout", 0.1)),
    ("drop_path", lambda d: vit_enc(d)["block"].__setitem__("drop_path", 0.1)),
    ("layer_scale", lambda d: vit_enc(d)["block"].__setitem__("layer_scale", 1e-5)),
    ("mask window", lambda d: vit_attention(d).__setitem__("mask", {"kind": "sliding_window", "window": 4})),
    ("mask causal", lambda d: vit_attention(d).__setitem__("mask", "causal")),
    ("rotary", lambda d: vit_attention(d).__setitem__("position", "rotary")),
    ("qk_norm", lambda d: vit_attention(d).__setitem__("qk_norm", True)),
    ("attention scale", lambda d: vit_attention(d).__setitem__("scale", 1.0)),
    ("geglu_tanh", lambda d: vit_enc(d)["block"].__setitem__("mlp", {"activation": "geglu_tanh"})),
    ("attention bias", lambda d: vit_attention(d).__setitem__("bias", False)),
    ("prune", lambda d: vit_enc(d).__setitem__("prune", {"method": "dynamic", "at": [1], "keep": 0.5})),
    ("override", lambda d: vit_enc(d).__setitem__("overrides", [{"layers": [1], "mlp": {"ratio": 2}}])),
    ("max_len", lambda d: d["nodes"]["pos"].__setitem__("max_len", 18)),
    ("encoding", lambda d: d["nodes"]["pos"].__setitem__("encoding", "sinusoidal")),
    ("classes", lambda d: d["nodes"]["head"].__setitem__("classes", 11)),
    ("pool", lambda d: d["nodes"]["head"].__setitem__("pool", "mean")),
    ("cls count", lambda d: d["nodes"]["cls"].__setitem__("count", 2)),
    ("new node", lambda d: (d["nodes"].__setitem__("n", {"op": "norm", "input": "enc"}), d["nodes"]["head"].__setitem__("input", "n"))),
    ("node id", lambda d: (d["nodes"].__setitem__("encoder", d["nodes"].pop("enc")), d["nodes"]["head"].__setitem__("input", "encoder"))),
]  # fmt: skip


@pytest.mark.parametrize("mutate", [m for _, m in VIT_DIFFERENT], ids=[n for n, _ in VIT_DIFFERENT])
def test_every_real_change_changes_the_hash(minimal_vit, mutate: Mutation) -> None:
    doc = minimal_vit()
    mutate(doc)
    assert hash_of(doc) != hash_of(minimal_vit())


def test_all_real_changes_hash_apart(minimal_vit) -> None:
    hashes = [hash_of(minimal_vit())]
    for _, mutate in VIT_DIFFERENT:
        doc = minimal_vit()
        mutate(doc)
        hashes.append(hash_of(doc))
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"method": "dynamic", "at": [1], "keep": 0.5}, {"method": "dynamic", "at": [1], "keep": 0.6}),
        ({"method": "dynamic", "at": [1], "keep": 0.5}, {"method": "dynamic", "at": [2], "keep": 0.5}),
        ({"method": "merge", "at": [1], "r": 2}, {"method": "merge", "at": [1], "r": 3}),
        ({"method": "attention_topk", "at": [1], "keep": 0.5}, {"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True}),
        ({"method": "attention_topk", "at": [1], "keep": 0.5}, {"method": "dynamic", "at": [1], "keep": 0.5}),
    ],
    ids=["keep", "at", "r", "fuse", "method"],
)  # fmt: skip
def test_prune_changes_change_the_hash(minimal_vit, a: Doc, b: Doc) -> None:
    first, second = minimal_vit(), minimal_vit()
    vit_enc(first)["prune"] = a
    vit_enc(second)["prune"] = b
    assert hash_of(first) != hash_of(second)


def test_override_value_changes_the_hash(minimal_vit) -> None:
    first, second, third = minimal_vit(), minimal_vit(), minimal_vit()
    vit_enc(first)["overrides"] = [{"layers": [1], "mlp": {"ratio": 2}}]
    vit_enc(second)["overrides"] = [{"layers": [1], "mlp": {"ratio": 3}}]
    vit_enc(third)["overrides"] = [{"layers": [2], "mlp": {"ratio": 2}}]
    assert len({hash_of(first), hash_of(second), hash_of(third)}) == 3


def test_mask_none_in_a_decoder_is_a_real_change(minimal_gpt) -> None:
    doc = minimal_gpt()
    gpt_attention(doc)["mask"] = "none"
    assert hash_of(doc) != hash_of(minimal_gpt())


def test_scales_hash_only_when_set(minimal_gpt) -> None:
    base = hash_of(minimal_gpt())
    doc = minimal_gpt()
    gpt_attention(doc)["scale"] = None
    doc["nodes"]["logits"]["scale"] = None
    assert hash_of(doc) == base
    assert "scale" not in canonical_form(doc)["nodes"]["logits"]
    doc["nodes"]["logits"]["scale"] = 0.125
    assert hash_of(doc) != base
    assert canonical_form(doc)["nodes"]["logits"]["scale"] == 0.125


def test_cross_attention_change_is_a_real_change(minimal_gpt) -> None:
    base = with_memory(minimal_gpt())
    doc = copy.deepcopy(base)
    doc["nodes"]["dec"]["block"]["cross_attention"] = {"heads": 2}
    assert hash_of(doc) != hash_of(base) != hash_of(minimal_gpt())


# ---------------------------------------------------------------------------- canonical form


def test_canonical_form_fills_defaults_and_expands_shorthands(minimal_vit) -> None:
    doc = minimal_vit()
    vit_enc(doc)["overrides"] = [{"layers": "2-3", "attention": {"position": "rotary"}}]
    form = canonical_form(doc)
    assert "$schema" not in form
    assert form["name"] == "mini-vit"
    assert form["outputs"] == ["head"]
    assert form["inputs"]["image"] == {"kind": "image", "channels": 1, "size": [8, 8]}
    assert form["nodes"]["patches"]["patch_size"] == [2, 2]
    assert form["nodes"]["pos"]["max_len"] == 17
    assert form["nodes"]["head"]["pool"] == "cls"
    block = form["nodes"]["enc"]["block"]
    assert block["attention"] == {
        "kind": "softmax",
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 16,
        "mask": {"kind": "none"},
        "position": None,
        "dropout": 0.0,
        "bias": True,
        "qk_norm": False,
        "feature_map": "elu",
    }
    assert block["mlp"] == {
        "ratio": 4.0,
        "hidden": 256,
        "activation": "gelu",
        "bias": True,
        "dropout": 0.0,
    }
    assert form["nodes"]["enc"]["overrides"] == [
        {
            "layers": [2, 3],
            "attention": {"position": {"kind": "rotary", "base": 10000.0, "fraction": 1.0}},
        }
    ]


def test_canonical_form_keeps_the_prune_shorthand(minimal_vit) -> None:
    doc = minimal_vit()
    vit_enc(doc)["prune"] = {"method": "merge", "at": [1, 2], "r": 2}
    form = canonical_form(doc)
    assert form["nodes"]["enc"]["prune"] == {
        "method": "merge",
        "keep": None,
        "r": 2,
        "fuse": False,
        "at": [1, 2],
    }
    assert set(form["nodes"]) == set(doc["nodes"])


def test_canonical_form_of_a_decoder(minimal_gpt) -> None:
    form = canonical_form(with_memory(minimal_gpt()))
    assert form["nodes"]["logits"]["vocab_size"] == 100
    attention = form["nodes"]["dec"]["block"]["attention"]
    cross = form["nodes"]["dec"]["block"]["cross_attention"]
    assert attention["mask"] == {"kind": "causal"}
    assert cross["mask"] == {"kind": "none"}
    assert (cross["heads"], cross["kv_heads"], cross["head_dim"]) == (4, 4, 16)


def test_canonical_form_does_not_drop_name_or_description(minimal_vit) -> None:
    doc = minimal_vit()
    doc["description"] = "words"
    doc["$schema"] = "schema.json"
    form = canonical_form(doc)
    assert (form["name"], form["description"]) == ("mini-vit", "words")
    del doc["name"], doc["description"]
    assert "name" not in canonical_form(doc)
    assert "description" not in canonical_form(doc)


def test_spec_hash_is_sha256_of_the_canonical_json(minimal_vit) -> None:
    form = canonical_form(minimal_vit())
    hashed = {k: v for k, v in form.items() if k not in UNHASHED}
    text = canonical_json(hashed)
    assert text == json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hash_of(minimal_vit()) == hashlib.sha256(text.encode()).hexdigest()
    assert len(hash_of(minimal_vit())) == 64


def test_canonical_json_sorts_keys() -> None:
    assert (
        canonical_json({"b": 1, "a": {"d": [2, 1], "c": "é"}}) == '{"a":{"c":"é","d":[2,1]},"b":1}'
    )


def test_canonical_form_of_the_zoo_is_idempotent(zoo_path: Path) -> None:
    spec = load_spec(zoo_path)
    form = canonical_form(spec)
    again = canonical_form(copy.deepcopy(form))
    assert again == form
    assert spec_hash(form) == spec_hash(spec)
    assert isinstance(load_spec(form), Spec)
    assert json.loads(json.dumps(form)) == form  # plain JSON


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: vit_enc(d).__setitem__(
            "overrides",
            [
                {"layers": "1-2", "mlp": {"ratio": 2}, "attention": {"heads": 8, "position": "rotary"}},
                {"layers": [3], "attention": {"mask": {"kind": "sliding_window", "window": 3}}},
                {"layers": [0], "attention": {"kind": "linear"}},
            ],
        ),
        lambda d: vit_enc(d).__setitem__("prune", {"method": "attention_topk", "at": [1, 3], "keep": 0.5, "fuse": True}),
        lambda d: vit_attention(d).update(position={"kind": "relative_bias", "buckets": 8}, kv_heads=2),
        lambda d: d["nodes"]["pos"].update(encoding="sincos_2d"),
    ],
    ids=["overrides", "prune", "relative-bias", "sincos"],
)  # fmt: skip
def test_canonical_form_is_idempotent(minimal_vit, mutate: Mutation) -> None:
    doc = minimal_vit()
    mutate(doc)
    form = canonical_form(doc)
    assert canonical_form(copy.deepcopy(form)) == form
    assert spec_hash(form) == hash_of(doc)


def test_canonical_form_of_a_decoder_with_memory_and_overrides_is_idempotent(minimal_gpt) -> None:
    doc = with_memory(minimal_gpt())
    doc["nodes"]["dec"]["depth"] = 3
    doc["nodes"]["dec"]["block"]["cross_attention"] = {"heads": 2}
    doc["nodes"]["dec"]["overrides"] = [
        {"layers": [1], "attention": {"heads": 8}},
        {"layers": [2], "cross_attention": {"heads": 8, "kv_heads": 4}},
    ]
    form = canonical_form(doc)
    assert canonical_form(copy.deepcopy(form)) == form
    assert spec_hash(form) == hash_of(doc)


def test_json_round_trip_of_the_zoo(zoo_path: Path) -> None:
    spec = load_spec(zoo_path)
    text = spec.model_dump_json(by_alias=True)
    again = Spec.model_validate_json(text)
    assert again == spec
    assert spec_hash(again) == spec_hash(spec)
    assert load_spec(text) == spec


def test_zoo_hashes_are_distinct() -> None:
    hashes = {spec_hash(path) for path in ZOO}
    assert len(hashes) == len(ZOO)
