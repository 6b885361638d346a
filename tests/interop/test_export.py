"""Export to Hugging Face: an archlab model written with ``export_hf`` / ``arch export`` loads in
``transformers`` with the same logits, whether it was imported from a Llama checkpoint (tied,
untied, GQA) or built here from a spec; specs Llama cannot express are refused by what does not
fit, and nothing is half-written."""

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
from archlab.files import OutputError
from archlab.interop.export import ExportError, export_hf
from archlab.interop.families import ConversionError, architecture_of, exporter_for, llama

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ROOT = Path(__file__).parents[2]
VOCAB = 53

CASES: dict[str, dict[str, Any]] = {
    "gqa-untied": dict(
        hidden_size=48, intermediate_size=60, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False,
    ),
    "gqa-headdim-tied": dict(
        hidden_size=36, intermediate_size=52, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, rope_theta=5e5, tie_word_embeddings=True,
    ),
    "mha-biases-eps": dict(
        hidden_size=40, intermediate_size=26, num_hidden_layers=3, num_attention_heads=4,
        rope_theta=500.0, rms_norm_eps=1e-5, attention_bias=True, mlp_bias=True,
    ),
}  # fmt: skip


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, norms around one (HF's zero biases and unit norms would hide a
    misplaced tensor)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.2 * noise)


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


def _imported(tmp_path: Path, source: Any) -> archlab.CompiledModel:
    """``source`` saved with ``save_pretrained`` and converted by the Llama family."""
    folder = tmp_path / "source"
    source.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    state = safetensors_torch.load_file(folder / "model.safetensors")
    architecture = architecture_of(config, llama.FAMILY)
    model = archlab.compile_spec(llama.spec(config, architecture))
    model.load_state_dict(llama.weights(state, config, architecture), strict=True)
    return model.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_the_source_logits(tmp_path: Path, case: str) -> None:
    """transformers -> archlab -> export_hf -> from_pretrained: the logits of the original."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=32, attn_implementation="eager", **CASES[case]
    )
    source = transformers.LlamaForCausalLM(config)
    _randomize(source, seed=len(case))
    source.eval()
    ours = _imported(tmp_path, source)
    written = export_hf(ours, tmp_path / "out")
    assert written == tmp_path / "out"
    assert sorted(p.name for p in written.iterdir()) == ["config.json", "model.safetensors"]
    back = _load_hf(written)
    tied = CASES[case].get("tie_word_embeddings", False)
    assert back.config.tie_word_embeddings is tied
    assert ("lm_head.weight" in safetensors_torch.load_file(written / "model.safetensors")) != tied
    ids, mask = _batch(VOCAB)
    with torch.no_grad():
        original = source(input_ids=ids, attention_mask=mask.long()).logits
        exported = back(input_ids=ids, attention_mask=mask.long()).logits
    assert _relative_diff(exported[mask], original[mask]) <= 1e-5
    # the exported folder holds the source's tensors exactly
    exported_state = back.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(exported_state[name], tensor), name


def _shrunk_llama_style(**changes: Any) -> dict[str, Any]:
    """specs/llama-style.json at depth 2, width 64, vocabulary 97, context 64."""
    doc = json.loads((ROOT / "specs/llama-style.json").read_text())
    doc["inputs"]["ids"].update(vocab_size=97, max_len=64)
    doc["nodes"]["tok"]["dim"] = 64
    decoder = doc["nodes"]["decoder"]
    decoder["depth"] = 2
    decoder["block"]["attention"].update(heads=4, kv_heads=2)
    decoder["block"]["mlp"]["hidden"] = 96
    doc["nodes"]["lm_head"]["vocab_size"] = 97
    for key, value in changes.items():
        doc[key] = value
    return doc


def test_spec_built_here_exports_with_equal_logits(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_llama_style(), seed=3)
    _randomize(model, seed=4)
    model.eval()
    back = _load_hf(export_hf(model, tmp_path / "llama"))
    assert type(back).__name__ == "LlamaForCausalLM"
    assert (back.config.num_key_value_heads, back.config.head_dim) == (2, 16)
    ids, mask = _batch(97, seed=2)
    with torch.no_grad():
        ours = model(ids=ids, ids_mask=mask)
        theirs = back(input_ids=ids, attention_mask=mask.long()).logits
    assert _relative_diff(ours[mask], theirs[mask]) <= 1e-5
    # generation: transformers' greedy decoding continues as archlab's argmax does
    prompt = ids[:1, :5]
    generated = back.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                              do_sample=False, pad_token_id=0)  # fmt: skip
    expected = prompt
    with torch.no_grad():
        for _ in range(4):
            next_id = model(ids=expected)[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(generated, expected)


def test_bf16_model_exports_in_bf16(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_llama_style(), seed=1, dtype="bfloat16").eval()
    written = export_hf(model, tmp_path / "bf16")
    assert json.loads((written / "config.json").read_text())["torch_dtype"] == "bfloat16"
    tensors = safetensors_torch.load_file(written / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert torch.equal(tensors["model.embed_tokens.weight"], model.tok.weight)


def test_renamed_nodes_and_no_head_export_as_llama_model(tmp_path: Path) -> None:
    """Node ids do not matter, only the structure; without an lm_head it is a LlamaModel."""
    doc = _shrunk_llama_style()
    nodes = doc["nodes"]
    doc["nodes"] = {
        "embedding": nodes["tok"],
        "layers": {**nodes["decoder"], "input": "embedding"},
        "final_norm": {**nodes["norm"], "input": "layers"},
    }
    doc["outputs"] = "final_norm"
    model = archlab.compile_spec(doc, seed=5)
    _randomize(model, seed=6)
    model.eval()
    back = _load_hf(export_hf(model, tmp_path / "bare", family="llama"))
    assert type(back).__name__ == "LlamaModel"
    ids, mask = _batch(97, seed=3)
    with torch.no_grad():
        ours = model(ids=ids, ids_mask=mask)
        theirs = back(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert _relative_diff(ours[mask], theirs[mask]) <= 1e-5


def test_gpt_tiny_fits_llama_with_biases_and_a_tied_head(tmp_path: Path) -> None:
    """gpt-tiny (rotary, RMSNorm, SwiGLU, biases on, tied head) is a Llama with biases."""
    model = archlab.compile_spec(ROOT / "specs/gpt-tiny.json", seed=1).eval()
    written = export_hf(model, tmp_path / "gpt-tiny")
    config = json.loads((written / "config.json").read_text())
    assert config["attention_bias"] and config["mlp_bias"] and config["tie_word_embeddings"]
    back = _load_hf(written)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert _relative_diff(model(ids=ids), back(input_ids=ids).logits) <= 1e-5


def test_spec_llama_cannot_express_is_refused_by_what_does_not_fit(tmp_path: Path) -> None:
    model = archlab.compile_spec(ROOT / "specs/prefix-lm.json", device="meta")
    with pytest.raises(ConversionError) as caught:
        export_hf(model, tmp_path / "out")
    message = str(caught.value)
    for part in [
        "op 'position' (learned)",
        "mlp.activation: 'gelu'",
        "norm.kind: 'layernorm'",
        "attention.mask: {'kind': 'prefix'",
        "pad_id",
    ]:
        assert part in message
    assert isinstance(caught.value, ExportError)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"position": {"kind": "rotary", "fraction": 0.5}}, "position.fraction: 0.5"),
        ({"position": "alibi"}, "position.kind: 'alibi'"),
        ({"qk_norm": True}, "qk_norm: True"),
        ({"mask": {"kind": "sliding_window", "window": 8}}, "attention.mask"),
    ],
)
def test_each_attention_difference_is_named(change: dict[str, Any], fragment: str) -> None:
    doc = _shrunk_llama_style()
    doc["nodes"]["decoder"]["block"]["attention"].update(change)
    problems = llama.export_problems(archlab.load_spec(doc))
    assert any(fragment in p for p in problems), problems


def test_final_norm_eps_must_match_the_blocks() -> None:
    doc = _shrunk_llama_style()
    doc["nodes"]["norm"]["eps"] = 1e-6
    assert llama.export_problems(archlab.load_spec(doc)) == [
        "nodes.norm.eps: 1e-06, the blocks' 1e-05; Llama has one rms_norm_eps"
    ]


def test_a_field_the_checks_do_not_know_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec field the Llama checks do not know (as a newer spec language might add) shows up
    when the spec is compared with the one its exported config converts back to."""
    canonical = llama.canonical_form

    def with_extra_field(spec: Any) -> dict[str, Any]:
        doc = canonical(spec)
        if doc["name"] == "llama-style":  # the spec under test, not the converted-back one
            doc["nodes"]["decoder"]["block"]["attention"]["scale"] = False
        return doc

    monkeypatch.setattr(llama, "canonical_form", with_extra_field)
    problems = llama.export_problems(archlab.load_spec(_shrunk_llama_style()))
    assert problems == ["nodes.decoder.block.attention.scale: False; Llama has None"]


def test_unknown_family_is_refused() -> None:
    spec = archlab.load_spec(_shrunk_llama_style())
    with pytest.raises(ConversionError, match="no family 'mamba'"):
        exporter_for(spec, "mamba")


def test_existing_folder_is_kept_unless_replaced(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_llama_style(), seed=1)
    target = tmp_path / "out"
    target.mkdir()  # an empty folder is fine
    export_hf(model, target)
    before = (target / "model.safetensors").read_bytes()
    other = archlab.compile_spec(_shrunk_llama_style(), seed=2)
    with pytest.raises(OutputError, match="--replace"):
        export_hf(other, target)
    assert (target / "model.safetensors").read_bytes() == before
    export_hf(other, target, replace=True)
    assert (target / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"no config\.json"):
        export_hf(other, notes, replace=True)
    assert (notes / "todo.txt").read_text() == "keep me"


def test_cli_export_writes_the_folder(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_llama_style(), seed=1)
    model.save(tmp_path / "model.safetensors")
    out = tmp_path / "hf"
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / "model.safetensors"), "--to", "hf", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.parametrize("bad", ["missing", "not-safetensors", "unfit"])
def test_cli_bad_model_exits_2_without_writing(tmp_path: Path, bad: str) -> None:
    path = tmp_path / f"{bad}.safetensors"
    if bad == "not-safetensors":
        path.write_text("not weights")
    elif bad == "unfit":
        doc = _shrunk_llama_style()
        doc["nodes"]["decoder"]["block"]["mlp"]["activation"] = "gelu"
        archlab.compile_spec(doc, seed=0).save(path)
    out = tmp_path / "hf"
    result = CliRunner().invoke(cli, ["export", str(path), "--to", "hf", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_parent_folders_are_made_and_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    model = archlab.compile_spec(_shrunk_llama_style(), seed=1)
    assert export_hf(model, tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is not a folder"):
        export_hf(model, tmp_path / "file" / "x")
