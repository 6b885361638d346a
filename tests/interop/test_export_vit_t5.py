"""Export of ViT, DeiT and T5 models to Hugging Face: tiny ``transformers`` models converted to
archlab, written with ``export_hf`` and loaded back with ``from_pretrained`` give the source's
outputs; specs built here export by their shape whatever their node ids, and what a family
cannot express is refused by its spec path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

import archlab
from archlab.cli.main import cli
from archlab.interop.export import ExportError, export_hf
from archlab.interop.families import ConversionError, deit, t5, vit

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ROOT = Path(__file__).parents[2]

VISION = {
    "image_size": 24,
    "patch_size": 8,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 37,
    "num_labels": 5,
}


def _relative_diff(ours: Tensor, theirs: Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Random biases and norms, not HF's zeros and ones, so that a misplaced tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _load_hf(directory: Path) -> Any:
    config = json.loads((directory / "config.json").read_text())
    architecture = config["architectures"][0]
    extra = {"add_pooling_layer": False} if architecture in ("ViTModel", "DeiTModel") else {}
    cls = getattr(transformers, architecture)
    return cls.from_pretrained(directory, attn_implementation="eager", **extra).eval()


def _main_output(out: Any) -> Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _vision_source(family: Any, architecture: str, **overrides: Any) -> tuple[Any, Any]:
    """A random tiny HF vision model and archlab's conversion of it (both in eval mode)."""
    config_cls = transformers.ViTConfig if family is vit.FAMILY else transformers.DeiTConfig
    config = config_cls(**{**VISION, **overrides})
    config.architectures = [architecture]
    torch.manual_seed(0)
    cls = getattr(transformers, architecture)
    bare = architecture in ("ViTModel", "DeiTModel")
    source = cls(config, add_pooling_layer=False) if bare else cls(config)
    _randomize(source, seed=1)
    source.eval()
    doc = family.spec(config.to_dict(), architecture)
    ours = archlab.compile_spec(doc)
    ours.load_state_dict(family.weights(source.state_dict(), config.to_dict(), architecture))
    return source, ours.eval()


def _image(config: Any, batch: int = 3) -> Tensor:
    size = config.image_size
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(2)
    return torch.randn(batch, config.num_channels, h, w, generator=gen)


VISION_CASES = [
    (vit.FAMILY, "ViTForImageClassification", {}),
    (vit.FAMILY, "ViTModel", {}),
    (vit.FAMILY, "ViTForImageClassification", {"hidden_act": "gelu_pytorch_tanh",
                                               "layer_norm_eps": 1e-6}),
    (vit.FAMILY, "ViTModel", {"image_size": [24, 16], "patch_size": [8, 4], "num_channels": 1}),
    (deit.FAMILY, "DeiTForImageClassificationWithTeacher", {}),
    (deit.FAMILY, "DeiTForImageClassification", {"layer_norm_eps": 1e-6}),
    (deit.FAMILY, "DeiTModel", {"image_size": [16, 24]}),
]  # fmt: skip


@pytest.mark.parametrize(("family", "architecture", "overrides"), VISION_CASES)
def test_vision_round_trip_gives_the_source_outputs(
    tmp_path: Path, family: Any, architecture: str, overrides: dict[str, Any]
) -> None:
    """transformers -> archlab -> export_hf -> from_pretrained: the source's outputs and
    tensors."""
    source, ours = _vision_source(family, architecture, **overrides)
    back = _load_hf(export_hf(ours, tmp_path / "out"))
    assert type(back).__name__ == architecture
    image = _image(source.config)
    with torch.no_grad():
        want = _main_output(source(pixel_values=image))
        got = _main_output(back(pixel_values=image))
        assert _relative_diff(ours(image), want) <= 1e-5
    assert got.shape == want.shape
    assert _relative_diff(got, want) <= 1e-5
    exported = back.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(exported[name], tensor), name


def _shrunk_vit(**block_changes: Any) -> dict[str, Any]:
    """specs/vit-tiny-digits.json at depth 2, width 48 in 3 heads, its norms at eps 1e-5."""
    doc = json.loads((ROOT / "specs/vit-tiny-digits.json").read_text())
    doc["nodes"]["patches"]["dim"] = 48
    encoder = doc["nodes"]["encoder"]
    encoder["depth"] = 2
    encoder["block"]["attention"]["heads"] = 3
    encoder["block"]["norm"]["eps"] = 1e-5
    doc["nodes"]["norm"]["eps"] = 1e-5
    for key, value in block_changes.items():
        encoder["block"][key] = {**encoder["block"].get(key, {}), **value}
    return doc


def test_vit_spec_built_here_exports_with_equal_logits(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_vit(), seed=3)
    _randomize(model, seed=4)
    model.eval()
    written = export_hf(model, tmp_path / "vit")
    config = json.loads((written / "config.json").read_text())
    assert (config["model_type"], config["layer_norm_eps"], config["num_channels"]) == (
        "vit",
        1e-5,
        1,
    )
    back = _load_hf(written)
    image = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert _relative_diff(model(image), back(pixel_values=image).logits) <= 1e-5


def test_renamed_distilled_deit_exports_by_shape(tmp_path: Path) -> None:
    """Node ids do not matter, nor the order the average lists its heads in."""
    config = transformers.DeiTConfig(**VISION)
    doc = deit.spec(config.to_dict(), "DeiTForImageClassificationWithTeacher")
    names = {"patches": "p", "cls": "tokens", "pos": "where", "encoder": "body", "norm": "ln",
             "head": "a", "head_dist": "b", "logits": "mean"}  # fmt: skip
    nodes = {}
    for old, node in doc["nodes"].items():
        node = dict(node)
        if "input" in node:
            node["input"] = names.get(node["input"], node["input"])
        if "inputs" in node:
            node["inputs"] = [names[i] for i in reversed(node["inputs"])]
        nodes[names[old]] = node
    doc["nodes"], doc["outputs"] = nodes, "mean"
    model = archlab.compile_spec(doc, seed=1)
    _randomize(model, seed=2)
    model.eval()
    back = _load_hf(export_hf(model, tmp_path / "deit"))
    assert type(back).__name__ == "DeiTForImageClassificationWithTeacher"
    image = _image(config)
    with torch.no_grad():
        assert _relative_diff(model(image), back(pixel_values=image).logits) <= 1e-5


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["nodes"]["encoder"]["block"]["attention"].update(position="rotary"),
         "nodes.encoder.block.attention.position: {'kind': 'rotary'"),
        (lambda d: d["nodes"]["head"].update(pool="mean"), "nodes.head.pool: 'mean'; ViT has 'cls'"),
        (lambda d: d["nodes"]["norm"].update(eps=1e-6), "nodes.norm.eps: 1e-06; ViT has 1e-05"),
        (lambda d: d["nodes"]["encoder"]["block"]["mlp"].update(activation="swiglu"),
         "nodes.encoder.block.mlp.activation: 'swiglu'"),
        (lambda d: d["nodes"]["encoder"]["block"]["attention"].update(bias=False),
         "nodes.encoder.block.attention.bias: False; ViT has True"),
        (lambda d: d["nodes"]["encoder"]["block"]["norm"].update(kind="rmsnorm"),
         "nodes.encoder.block.norm.kind: 'rmsnorm'; ViT has 'layernorm'"),
        (lambda d: d["nodes"]["pos"].update(encoding="sincos_2d"),
         "nodes.pos.encoding: 'sincos_2d'; ViT has 'learned'"),
        (lambda d: d["nodes"]["cls"].update(count=2), "nodes.cls.count: 2; ViT has 1"),
        (lambda d: d["nodes"]["head"].update(pre_logits={"dim": 32}), "nodes.head.pre_logits"),
        (lambda d: (d["nodes"].update(extra={"op": "norm", "input": "norm"}),
                    d["nodes"]["head"].update(input="extra")),
         "nodes.norm: op 'norm' (layernorm) where ViT has op 'encoder'"),
    ],
)  # fmt: skip
def test_what_vit_cannot_express_is_named(change: Any, fragment: str) -> None:
    doc = _shrunk_vit()
    change(doc)
    problems = vit.export_problems(archlab.load_spec(doc))
    assert any(fragment in p for p in problems), problems


def test_vit_misfit_is_refused_and_nothing_written(tmp_path: Path) -> None:
    doc = _shrunk_vit(attention={"position": "rotary"})
    doc["nodes"]["head"]["pool"] = "mean"
    model = archlab.compile_spec(doc, device="meta")
    with pytest.raises(ConversionError) as caught:
        export_hf(model, tmp_path / "out", family="vit")
    assert isinstance(caught.value, ExportError)
    assert "nodes.head.pool: 'mean'" in str(caught.value)
    assert "nodes.encoder.block.attention.position" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConversionError, match=r"ViT: nodes\.encoder\.block\.attention\.position"):
        vit.export(model.spec, {})


def test_deit_spec_fits_deit_only() -> None:
    config = transformers.DeiTConfig(**VISION).to_dict()
    spec = archlab.load_spec(deit.spec(config, "DeiTForImageClassificationWithTeacher"))
    assert deit.export_problems(spec) == []
    assert any("nodes.cls.count: 2; ViT has 1" in p for p in vit.export_problems(spec))
    assert deit.export_problems(archlab.load_spec(_shrunk_vit())) != []


# ------------------------------------------------------------------------------------------ T5

T5_TINY = {
    "vocab_size": 61,
    "d_model": 40,
    "d_kv": 8,
    "d_ff": 72,
    "num_layers": 2,
    "num_decoder_layers": 3,
    "num_heads": 5,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 20,
    "dropout_rate": 0.1,
}
T5_ARCH = "T5ForConditionalGeneration"


def _t5_source(tmp_path: Path, untied: bool = False, **settings: Any) -> tuple[Any, Any]:
    """A random tiny HF T5 (``untied``: its own lm_head, no rescale, as T5 v1.1) and archlab's
    conversion of its saved folder."""
    torch.manual_seed(0)
    source = transformers.T5ForConditionalGeneration(transformers.T5Config(**T5_TINY, **settings))
    with torch.no_grad():
        for name, param in source.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
    if untied:
        source.lm_head.weight = torch.nn.Parameter(torch.randn(61, 40))
        source.config.scale_decoder_outputs = False
    source.eval()
    source.save_pretrained(tmp_path / "source")
    config = json.loads((tmp_path / "source" / "config.json").read_text())
    state = safetensors_torch.load_file(tmp_path / "source" / "model.safetensors")
    if untied:
        config["tie_word_embeddings"] = False
        config.pop("scale_decoder_outputs", None)
    ours = archlab.compile_spec(t5.spec(config, T5_ARCH))
    ours.load_state_dict(t5.weights(state, config, T5_ARCH), strict=True)
    return source, ours.eval()


def _t5_batch(vocab: int = 61) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded source ids (mask True = real; 11, 7 and 3 real tokens) and target ids that
    start with T5's decoder start (0)."""
    g = torch.Generator().manual_seed(2)
    src = torch.randint(0, vocab, (3, 11), generator=g)
    src_mask = torch.arange(11)[None, :] < torch.tensor([11, 7, 3])[:, None]
    src = src.masked_fill(~src_mask, 0)
    tgt = torch.randint(0, vocab, (3, 9), generator=g)
    tgt[:, 0] = 0
    return src, src_mask, tgt


def _t5_logits(model: Any, src: Tensor, src_mask: Tensor, tgt: Tensor) -> Tensor:
    with torch.no_grad():
        return model(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt).logits


@pytest.mark.parametrize(
    ("settings", "untied"),
    [({"feed_forward_proj": "relu"}, False), ({"feed_forward_proj": "gated-gelu"}, False),
     ({"feed_forward_proj": "gated-gelu"}, True)],
    ids=["relu-tied-rescaled", "gated-gelu-tied-rescaled", "gated-gelu-untied"],
)  # fmt: skip
def test_t5_round_trip_gives_the_source_logits(
    tmp_path: Path, settings: dict[str, Any], untied: bool
) -> None:
    source, ours = _t5_source(tmp_path, untied, **settings)
    written = export_hf(ours, tmp_path / "out")
    config = json.loads((written / "config.json").read_text())
    assert config["tie_word_embeddings"] is not untied
    assert (
        "lm_head.weight" in safetensors_torch.load_file(written / "model.safetensors")
    ) is untied
    back = _load_hf(written)
    assert back.config.scale_decoder_outputs is not untied
    src, src_mask, tgt = _t5_batch()
    want = _t5_logits(source, src, src_mask, tgt)
    with torch.no_grad():
        assert _relative_diff(ours(src, tgt, src_mask=src_mask), want) <= 1e-5
    assert _relative_diff(_t5_logits(back, src, src_mask, tgt), want) <= 1e-5
    exported = back.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(exported[name], tensor), name


def _shrunk_t5(**attention: Any) -> dict[str, Any]:
    """specs/t5-small.json at width 40 (5 heads of 8), MLP 72, 2 + 2 layers, vocabulary 61."""
    doc = json.loads((ROOT / "specs/t5-small.json").read_text())
    for name in ("src", "tgt"):
        doc["inputs"][name].update(vocab_size=61, max_len=64)
    doc["nodes"]["shared"]["dim"] = 40
    for stack in ("encoder", "decoder"):
        node = doc["nodes"][stack]
        node["depth"] = 2
        node["block"]["attention"].update(heads=5, **attention)
        node["block"]["mlp"]["hidden"] = 72
    return doc


def test_t5_small_needs_unit_scale_and_no_pad_id() -> None:
    """specs/t5-small.json scales its scores by 1/sqrt(d) and masks pad tokens itself: T5 does
    neither."""
    problems = t5.export_problems(archlab.load_spec(_shrunk_t5()))
    for fragment in [
        "inputs.src.pad_id: 0; T5 has None",
        "inputs.tgt.pad_id: 0; T5 has None",
        "nodes.encoder.block.attention.scale: None; T5 has 1.0",
        "nodes.decoder.block.cross_attention.scale: None; T5 has 1.0",
    ]:
        assert any(fragment in p for p in problems), problems


def test_t5_spec_built_here_exports_with_equal_logits(tmp_path: Path) -> None:
    """t5-small's layout with unit scale and no pad_id: its tied head without a rescale is
    written as an lm_head of its own (a copy of the embedding)."""
    doc = _shrunk_t5(scale=1.0)
    for name in ("src", "tgt"):
        del doc["inputs"][name]["pad_id"]
    model = archlab.compile_spec(doc, seed=3)
    _randomize(model, seed=4)
    model.eval()
    written = export_hf(model, tmp_path / "t5")
    config = json.loads((written / "config.json").read_text())
    assert (config["tie_word_embeddings"], config["dropout_rate"]) == (False, 0.1)
    back = _load_hf(written)
    assert torch.equal(back.lm_head.weight, model.shared.weight)
    src, src_mask, tgt = _t5_batch()
    with torch.no_grad():
        ours = model(src, tgt, src_mask=src_mask)
    assert _relative_diff(ours, _t5_logits(back, src, src_mask, tgt)) <= 1e-5


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["nodes"]["decoder"]["block"]["attention"].update(position="rotary"),
         "nodes.decoder.block.attention.position: {'kind': 'rotary'"),
        (lambda d: d["nodes"]["encoder"]["block"]["mlp"].update(bias=True),
         "nodes.encoder.block.mlp.bias: True; T5 has False"),
        (lambda d: d["nodes"]["enc_norm"].update(kind="layernorm"),
         "nodes.enc_norm.kind: 'layernorm'; T5 has 'rmsnorm'"),
        (lambda d: d["nodes"]["encoder"]["block"]["mlp"].update(activation="geglu"),
         "nodes.encoder.block.mlp.activation: 'geglu'"),
        (lambda d: d["nodes"]["lm_head"].update(scale=0.5),
         "nodes.lm_head.scale: 0.5; T5 rescales only a tied head"),
        (lambda d: d["nodes"]["tgt_tok"].update(tie=None, dim=40),
         "nodes.tgt_tok.tie: None; T5's target embedding is its source embedding"),
        (lambda d: d["nodes"]["decoder"]["block"].update(cross_attention={"heads": 4, "head_dim": 8}),
         "nodes.decoder.block.cross_attention.heads: 4; T5 has 5"),
    ],
)  # fmt: skip
def test_what_t5_cannot_express_is_named(change: Any, fragment: str) -> None:
    doc = _shrunk_t5(scale=1.0)
    for name in ("src", "tgt"):
        del doc["inputs"][name]["pad_id"]
    change(doc)
    problems = t5.export_problems(archlab.load_spec(doc))
    assert any(fragment in p for p in problems), problems
    with pytest.raises(ConversionError, match="cannot be exported to T5"):
        t5.export(archlab.load_spec(doc), {})


def test_decoder_only_spec_is_not_t5() -> None:
    problems = t5.export_problems(archlab.load_spec(ROOT / "specs/gpt-tiny.json"))
    assert problems == ["nodes.decoder.memory: None; T5's decoder attends to its encoder"]


@pytest.mark.parametrize("which", ["vit", "t5"])
def test_cli_exports_each_family(tmp_path: Path, which: str) -> None:
    if which == "vit":
        doc, expected = _shrunk_vit(), "ViTForImageClassification"
    else:
        doc, expected = _shrunk_t5(scale=1.0), "T5ForConditionalGeneration"
        for name in ("src", "tgt"):
            del doc["inputs"][name]["pad_id"]
    archlab.compile_spec(doc, seed=0).save(tmp_path / "model.safetensors")
    out = tmp_path / "hf"
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / "model.safetensors"), "--to", "hf", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert expected in result.output
    assert json.loads((out / "config.json").read_text())["model_type"] == which
