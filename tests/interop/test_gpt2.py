"""GPT-2 checkpoints imported with outputs equal to transformers' (fp32, padded batches)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.interop.verify import compare, generated_inputs

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

Save = Callable[..., tuple[Any, Path]]


def relative_gap(source: Any, model: Any) -> float:
    """The largest difference over the real tokens of a padded batch, relative to the output."""
    inputs = generated_inputs(model, batch=3, length=11, seed=1)
    ids, mask = inputs["ids"], inputs["ids_mask"]
    assert not mask.all()  # padding is exercised
    with torch.inference_mode():
        ours = model(**inputs)
        result = source(input_ids=ids, attention_mask=mask.long())
    theirs = result.logits if hasattr(result, "logits") else result.last_hidden_state
    assert ours.shape == theirs.shape
    scale = theirs[mask].abs().max()
    return float((ours - theirs)[mask].abs().max() / scale)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("architecture", ["GPT2LMHeadModel", "GPT2Model"])
def test_outputs_equal_the_source(save_gpt2: Save, architecture: str, tie: bool) -> None:
    source, folder = save_gpt2(architecture, tie_word_embeddings=tie)
    model = archlab.import_pretrained(folder)
    assert relative_gap(source, model) <= 1e-5
    assert model.spec.outputs == (["lm_head"] if architecture == "GPT2LMHeadModel" else ["norm"])
    if architecture == "GPT2LMHeadModel":
        head = model.spec.nodes["lm_head"]
        assert (head.tie == "tok") is tie
        assert (model.lm_head.weight is model.tok.weight) is tie
    # the generic check (transformers loads the same folder) agrees
    assert compare(model, folder, source.config.to_dict()).relative <= 1e-5


@pytest.mark.parametrize("how", ["sharded", "bin"])
def test_sharded_and_pickled_checkpoints(save_gpt2: Save, how: str) -> None:
    source, folder = save_gpt2(how=how, tie_word_embeddings=False)
    model = archlab.import_pretrained(folder)
    assert relative_gap(source, model) <= 1e-5
    # a folder whose config names no architecture (the pickle's): the family's default on both sides
    assert compare(model, folder, json.loads((folder / "config.json").read_text())).relative <= 1e-5


def test_settings_carried_into_the_spec(save_gpt2: Save) -> None:
    source, folder = save_gpt2(
        activation_function="relu", layer_norm_epsilon=1e-3, n_inner=None, resid_pdrop=0.2
    )
    model = archlab.import_pretrained(folder)
    block = model.spec.nodes["decoder"].block
    assert block.mlp.activation == "relu" and block.mlp.hidden == 4 * 36
    assert block.norm.eps == 1e-3 and block.dropout == 0.2
    assert not model.training
    assert relative_gap(source, model) <= 1e-5


def test_bfloat16_within_its_tolerance(save_gpt2: Save) -> None:
    source, folder = save_gpt2()
    model = archlab.import_pretrained(folder, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert compare(model, folder, source.config.to_dict()).relative <= 3e-2


def test_unsupported_gpt2_settings_are_refused(save_gpt2: Save) -> None:
    from archlab.errors import InteropError

    _source, folder = save_gpt2(scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(InteropError, match="scale_attn_by_inverse_layer_idx"):
        archlab.import_pretrained(folder)


def test_imported_parameters_are_ordinary_and_trainable(save_gpt2: Save) -> None:
    _source, folder = save_gpt2()
    model = archlab.import_pretrained(folder)
    fresh = archlab.compile_spec(model.spec)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in fresh.named_parameters()]
    assert all(p.requires_grad and p.is_contiguous() for p in model.parameters())
    before = archlab.import_pretrained(folder).state_dict()
    model.train()
    model(**model.example_inputs()).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(p.grad)  # an update in place leaves the checkpoint (and a re-import) alone
    again = archlab.import_pretrained(folder).state_dict()
    assert all(torch.equal(before[k], again[k]) for k in before)
