"""What ``import_pretrained`` hands back, for every Hugging Face family: each parameter and buffer
real (none left on ``meta``), on the requested device, in the requested dtype and finite; the
buffers the checkpoint does not hold (rotary caches, position tables) those a plain compile
computes; tied weights one tensor; and the outputs those of ``transformers`` on the same folder.

The import builds its parameters on ``meta`` and takes the checkpoint's tensors in their place,
so these are the properties that approach could lose."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from interop_testing import randomize

import archlab
from archlab.interop.convert import import_checkpoint
from archlab.interop.verify import compare

transformers = pytest.importorskip("transformers")


def _gpt2() -> Any:
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=61, n_positions=24, n_embd=36, n_layer=2, n_head=3)
    )


def _llama() -> Any:  # rotary caches are buffers; a tied head
    config = transformers.LlamaConfig(
        vocab_size=61, hidden_size=40, intermediate_size=26, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rope_theta=500.0, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _t5() -> Any:  # one shared embedding for the encoder, the decoder and the head
    config = transformers.T5Config(
        vocab_size=61, d_model=40, d_kv=8, d_ff=72, num_layers=2, num_decoder_layers=2,
        num_heads=5, relative_attention_num_buckets=8, relative_attention_max_distance=20,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(config)


def _bert() -> Any:
    config = transformers.BertConfig(
        vocab_size=97, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=53, max_position_embeddings=24, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def _vit() -> Any:
    config = transformers.ViTConfig(
        image_size=24, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=37, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


SOURCES: dict[str, Callable[[], Any]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "t5": _t5,
    "bert": _bert,
    "vit": _vit,
}


@pytest.fixture(params=list(SOURCES))
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A tiny random checkpoint of one family, saved with ``save_pretrained``."""
    torch.manual_seed(0)
    randomize(SOURCES[request.param]()).eval().save_pretrained(tmp_path)
    return tmp_path


def _tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """The names that share one tensor, per tensor shared by several."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return sorted(names for names in groups.values() if len(names) > 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_every_tensor_is_real_on_the_device(folder: Path, dtype: torch.dtype) -> None:
    model = archlab.import_pretrained(folder, device="cpu", dtype=dtype)
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    for name, tensor in tensors:
        assert not tensor.is_meta, name
        assert tensor.device == torch.device("cpu"), name
        if tensor.is_floating_point():
            assert tensor.dtype == dtype, name
            assert bool(torch.isfinite(tensor).all()), name
    assert all(p.is_contiguous() and p.requires_grad for p in model.parameters())
    fresh = archlab.compile_spec(model.spec, dtype=dtype)  # the buffers a plain compile computes
    expected = dict(fresh.named_buffers())
    got = dict(model.named_buffers())
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    assert _tied_groups(model) == _tied_groups(fresh)
    assert model.summary().kernels == fresh.summary().kernels


def test_ties_survive_the_import(folder: Path) -> None:
    model = archlab.import_pretrained(folder)
    ties = _tied_groups(model)
    nodes = model.spec.nodes.values()  # tied heads and embeddings say so in the spec
    assert bool(ties) == any(getattr(node, "tie", None) for node in nodes)
    for names in ties:
        first = model.get_parameter(names[0])
        assert all(model.get_parameter(name) is first for name in names)


def test_outputs_equal_the_source(folder: Path) -> None:
    imported = import_checkpoint(folder)
    assert compare(imported.model, imported.folder, imported.config).relative <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_imported_onto_cuda(folder: Path) -> None:
    imported = import_checkpoint(folder, device="cuda", dtype="float32")
    model = imported.model
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device.type == "cuda", name
    fresh = archlab.compile_spec(model.spec, device="cuda")
    assert model.summary().kernels == fresh.summary().kernels  # chosen for CUDA, not meta
    assert compare(model, imported.folder, imported.config).relative <= 1e-4
