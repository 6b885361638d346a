"""Export to Hugging Face for GPT-2 and BERT: models imported from tiny transformers checkpoints
(tied and untied heads, bare models, a classifier with its pooler and token types) and a spec
built here go back out with ``export_hf`` and load in ``transformers`` with the same outputs on
padded batches; specs the families cannot express are refused by spec path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import archlab
from archlab.interop.export import ExportError, export_hf
from archlab.interop.families import ConversionError, bert, gpt2

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ROOT = Path(__file__).parents[2]

GPT2_TINY = dict(
    vocab_size=61, n_positions=24, n_embd=36, n_layer=2, n_head=3, n_inner=50, bos_token_id=0,
    eos_token_id=0,
)  # fmt: skip
BERT_TINY = dict(
    vocab_size=59, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
    intermediate_size=50, max_position_embeddings=24, type_vocab_size=3, layer_norm_eps=1e-6,
)  # fmt: skip


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, norms around one (zero biases and unit norms would hide a
    misplaced tensor)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = "ln_" in name or "LayerNorm" in name
            p.copy_(1.0 + 0.1 * noise if is_norm and name.endswith("weight") else 0.2 * noise)


def _relative_diff(ours: Tensor, theirs: Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


def _batch(vocab: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Three sequences of 9, 6 and 3 real tokens, right-padded; ``mask`` True = real."""
    ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(seed))
    mask = torch.arange(9)[None, :] < torch.tensor([9, 6, 3])[:, None]
    return ids, mask


def _load_hf(directory: Path) -> Any:
    config = json.loads((directory / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    return cls.from_pretrained(directory, attn_implementation="eager").eval()


def _main(result: Any) -> Tensor:
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


def _imported(tmp_path: Path, source: Any, family: Any) -> archlab.CompiledModel:
    """``source`` saved with ``save_pretrained`` and converted by ``family``."""
    folder = tmp_path / "source"
    source.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    state = safetensors_torch.load_file(folder / "model.safetensors")
    architecture = config["architectures"][0]
    model = archlab.compile_spec(family.spec(config, architecture))
    model.load_state_dict(family.weights(state, config, architecture), strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------- GPT-2


@pytest.mark.parametrize(
    ("architecture", "tie"),
    [("GPT2LMHeadModel", True), ("GPT2LMHeadModel", False), ("GPT2Model", True)],
    ids=["lm-tied", "lm-untied", "bare"],
)
def test_gpt2_round_trip_gives_the_source_outputs(
    tmp_path: Path, architecture: str, tie: bool
) -> None:
    config = transformers.GPT2Config(
        **GPT2_TINY, tie_word_embeddings=tie, activation_function="gelu_new"
    )
    source = getattr(transformers, architecture)(config)
    _randomize(source, seed=7)
    source.eval()
    ours = _imported(tmp_path, source, gpt2.FAMILY)
    written = export_hf(ours, tmp_path / "out")
    back = _load_hf(written)
    assert type(back).__name__ == architecture
    saved = safetensors_torch.load_file(written / "model.safetensors")
    if architecture == "GPT2LMHeadModel":
        assert back.config.tie_word_embeddings is tie
        assert ("lm_head.weight" in saved) != tie
    ids, mask = _batch(61)
    with torch.no_grad():
        original = _main(source(input_ids=ids, attention_mask=mask.long()))
        exported = _main(back(input_ids=ids, attention_mask=mask.long()))
        archlab_out = ours(ids=ids, ids_mask=mask)
    gap = _relative_diff(exported[mask], original[mask])
    print(f"gpt2 {architecture} tied={tie}: relative max diff {gap:.3g}")
    assert gap <= 1e-5
    assert _relative_diff(archlab_out[mask], original[mask]) <= 1e-5
    exported_state = back.state_dict()
    for name, tensor in source.state_dict().items():
        if name.endswith("attn.bias") or name.endswith("masked_bias"):
            continue  # causal-mask buffers of older transformers
        assert torch.equal(exported_state[name], tensor), name


def _shrunk_gpt2_small() -> dict[str, Any]:
    """specs/gpt2-small.json at depth 2, width 48, 4 heads, vocabulary 97, context 32."""
    doc = json.loads((ROOT / "specs/gpt2-small.json").read_text())
    doc["inputs"]["ids"].update(vocab_size=97, max_len=32)
    doc["nodes"]["tok"]["dim"] = 48
    doc["nodes"]["pos"]["max_len"] = 32
    decoder = doc["nodes"]["decoder"]
    decoder["depth"] = 2
    decoder["block"]["attention"]["heads"] = 4
    return doc


def test_gpt2_spec_built_here_exports_with_equal_logits(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_gpt2_small(), seed=3)
    _randomize(model, seed=4)
    model.eval()
    written = export_hf(model, tmp_path / "gpt2")
    config = json.loads((written / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"]
    assert (config["n_inner"], config["activation_function"]) == (192, "gelu_new")
    back = _load_hf(written)
    assert type(back).__name__ == "GPT2LMHeadModel"
    ids, mask = _batch(97, seed=2)
    with torch.no_grad():
        ours = model(ids=ids, ids_mask=mask)
        theirs = back(input_ids=ids, attention_mask=mask.long()).logits
    gap = _relative_diff(ours[mask], theirs[mask])
    print(f"gpt2 built here: relative max diff {gap:.3g}")
    assert gap <= 1e-5


def test_gpt2_renamed_nodes_export_as_gpt2_model(tmp_path: Path) -> None:
    doc = _shrunk_gpt2_small()
    n = doc["nodes"]
    doc["nodes"] = {
        "words": n["tok"],
        "where": {**n["pos"], "input": "words"},
        "stack": {**n["decoder"], "input": "where"},
        "ln_f": {**n["norm"], "input": "stack"},
    }
    doc["outputs"] = "ln_f"
    model = archlab.compile_spec(doc, seed=5).eval()
    back = _load_hf(export_hf(model, tmp_path / "bare", family="gpt2"))
    assert type(back).__name__ == "GPT2Model"
    ids, mask = _batch(97, seed=3)
    with torch.no_grad():
        ours = model(ids=ids, ids_mask=mask)
        theirs = back(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert _relative_diff(ours[mask], theirs[mask]) <= 1e-5


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("block", "norm", "placement", "post"), "nodes.decoder.block.norm.placement: 'post'"),
        (("block", "norm", "kind", "rmsnorm"), "nodes.decoder.block.norm.kind: 'rmsnorm'"),
        (("block", "mlp", "activation", "swiglu"), "nodes.decoder.block.mlp.activation"),
        (("block", "attention", "kv_heads", 2), "nodes.decoder.block.attention.kv_heads: 2"),
        (("block", "attention", "bias", False), "nodes.decoder.block.attention.bias: False"),
        (("block", "attention", "position", "rotary"), "attention.position"),
    ],
)
def test_gpt2_misfits_are_named_by_spec_path(change: tuple[Any, ...], fragment: str) -> None:
    doc = _shrunk_gpt2_small()
    *keys, last, value = change
    target = doc["nodes"]["decoder"]
    for key in keys:
        target = target[key]
    target[last] = value
    problems = gpt2.export_problems(archlab.load_spec(doc))
    assert any(fragment in p for p in problems), problems


def test_gpt2_structure_misfits_are_refused(tmp_path: Path) -> None:
    doc = _shrunk_gpt2_small()
    doc["nodes"]["norm"]["eps"] = 1e-6
    doc["inputs"]["ids"]["pad_id"] = 0
    problems = gpt2.export_problems(archlab.load_spec(doc))
    assert "nodes.norm.eps: 1e-06; GPT-2 has 1e-05" in problems
    assert "inputs.ids.pad_id: 0; GPT-2 has None" in problems
    model = archlab.compile_spec(doc, device="meta")
    with pytest.raises(ConversionError, match=r"nodes\.norm\.eps") as caught:
        export_hf(model, tmp_path / "out", family="gpt2")
    assert isinstance(caught.value, ExportError)
    assert not (tmp_path / "out").exists()
    # sinusoidal positions are not GPT-2's
    doc = _shrunk_gpt2_small()
    doc["nodes"]["pos"]["encoding"] = "sinusoidal"
    assert any(
        p.startswith("nodes.pos.encoding: 'sinusoidal'")
        for p in gpt2.export_problems(archlab.load_spec(doc))
    )


# ------------------------------------------------------------------------------------ BERT


def _bert_batch(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    ids, mask = _batch(59, seed=seed)
    types = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(seed + 1))
    return ids, types, mask


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification", "BertModel"])
def test_bert_round_trip_gives_the_source_outputs(tmp_path: Path, architecture: str) -> None:
    config = transformers.BertConfig(**BERT_TINY, num_labels=5, hidden_act="gelu")
    source = getattr(transformers, architecture)(config)
    _randomize(source, seed=11)
    source.eval()
    ours = _imported(tmp_path, source, bert.FAMILY)
    written = export_hf(ours, tmp_path / "out")
    back = _load_hf(written)
    assert type(back).__name__ == architecture
    ids, types, mask = _bert_batch()
    with torch.no_grad():
        kwargs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        original = _main(source(**kwargs))
        exported = _main(back(**kwargs))
        archlab_out = ours(ids=ids, token_types=types, ids_mask=mask)
    if architecture == "BertModel":
        original, exported, archlab_out = original[mask], exported[mask], archlab_out[mask]
    else:
        assert exported.shape == (3, 5)
    gap = _relative_diff(exported, original)
    print(f"bert {architecture}: relative max diff {gap:.3g}")
    assert gap <= 1e-5
    assert _relative_diff(archlab_out, original) <= 1e-5
    exported_state = back.state_dict()
    for name, tensor in source.state_dict().items():
        if name.startswith("pooler.") and architecture == "BertModel":
            continue  # no pooler in a bare BERT spec: transformers initialises it afresh
        assert torch.equal(exported_state[name], tensor), name


def _bert_spec() -> dict[str, Any]:
    """A BERT classifier written in archlab's spec language, node ids of its own."""
    block = {
        "attention": {"heads": 4, "bias": True},
        "mlp": {"hidden": 80, "activation": "gelu_tanh"},
        "norm": {"kind": "layernorm", "placement": "post", "eps": 1e-12},
        "dropout": 0.1,
    }
    return {
        "version": 1,
        "name": "bert-here",
        "inputs": {
            "words": {"kind": "tokens", "vocab_size": 71, "max_len": 20},
            "segments": {"kind": "tokens", "vocab_size": 2, "max_len": 20},
        },
        "nodes": {
            "w": {"op": "embed", "input": "words", "dim": 48},
            "s": {"op": "embed", "input": "segments", "dim": 48},
            "sum": {"op": "add", "inputs": ["w", "s"]},
            "p": {"op": "position", "input": "sum", "encoding": "learned"},
            "ln": {"op": "norm", "input": "p", "kind": "layernorm", "eps": 1e-12},
            "d": {"op": "dropout", "input": "ln", "p": 0.1},
            "body": {"op": "encoder", "input": "d", "depth": 2, "block": block},
            "cls": {
                "op": "classify", "input": "body", "classes": 3, "pool": "first",
                "pre_logits": {"activation": "tanh"},
            },
        },
        "outputs": "cls",
    }  # fmt: skip


def test_bert_spec_built_here_exports_with_equal_logits(tmp_path: Path) -> None:
    model = archlab.compile_spec(_bert_spec(), seed=3)
    _randomize(model, seed=4)
    model.eval()
    written = export_hf(model, tmp_path / "bert")
    config = json.loads((written / "config.json").read_text())
    assert (config["model_type"], config["hidden_act"], config["type_vocab_size"]) == (
        "bert",
        "gelu_new",
        2,
    )
    back = _load_hf(written)
    assert type(back).__name__ == "BertForSequenceClassification"
    ids, mask = _batch(71, seed=2)
    types = (torch.arange(9)[None, :] >= 4).long().expand(3, 9)
    with torch.no_grad():
        ours = model(words=ids, segments=types, words_mask=mask)
        theirs = back(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
    gap = _relative_diff(ours, theirs)
    print(f"bert built here: relative max diff {gap:.3g}")
    assert gap <= 1e-5


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("body", "block", "norm", "placement"), "pre", "nodes.body.block.norm.placement: 'pre'"),
        (("body", "block", "attention", "kv_heads"), 2, "nodes.body.block.attention.kv_heads: 2"),
        (("body", "block", "mlp", "activation"), "swiglu", "nodes.body.block.mlp.activation"),
        (("cls", "pool"), "mean", "nodes.cls.pool: 'mean'"),
        (("cls", "pre_logits", "dim"), 32, "nodes.cls.pre_logits.dim: 32; BERT has 48"),
        (("ln", "eps"), 1e-5, "nodes.ln.eps: 1e-05; BERT has 1e-12"),
        (("p", "encoding"), "sinusoidal", "nodes.p.encoding: 'sinusoidal'"),
    ],
)
def test_bert_misfits_are_named_by_spec_path(
    path: tuple[str, ...], value: Any, fragment: str
) -> None:
    doc = _bert_spec()
    target = doc["nodes"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = bert.export_problems(archlab.load_spec(doc))
    assert any(fragment in p for p in problems), problems


def test_bert_structure_misfits_are_refused(tmp_path: Path) -> None:
    doc = _bert_spec()
    doc["inputs"]["words"]["pad_id"] = 0
    assert "inputs.words.pad_id: 0; BERT has None" in bert.export_problems(archlab.load_spec(doc))
    doc = _bert_spec()  # no token types: the words feed the positions directly
    del doc["inputs"]["segments"]
    del doc["nodes"]["s"], doc["nodes"]["sum"]
    doc["nodes"]["p"]["input"] = "w"
    problems = bert.export_problems(archlab.load_spec(doc))
    assert problems == [
        "nodes: BERT has words + types (op 'add') here; this spec has op 'embed'"
    ], problems
    model = archlab.compile_spec(doc, device="meta")
    with pytest.raises(ExportError, match="op 'add'"):
        export_hf(model, tmp_path / "out", family="bert")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["gpt2", "bert"])
def test_cli_export_picks_the_family_by_structure(tmp_path: Path, which: str) -> None:
    from click.testing import CliRunner

    from archlab.cli.main import cli

    doc = _shrunk_gpt2_small() if which == "gpt2" else _bert_spec()
    archlab.compile_spec(doc, seed=1, dtype="bfloat16").save(tmp_path / "m.safetensors")
    out = tmp_path / "hf"
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / "m.safetensors"), "--to", "hf", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = "GPT2LMHeadModel" if which == "gpt2" else "BertForSequenceClassification"
    assert expected in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["torch_dtype"]) == (which, "bfloat16")
    tensors = safetensors_torch.load_file(out / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
