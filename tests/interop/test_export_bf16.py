"""bfloat16 models of every family go out in bfloat16: a tiny transformers checkpoint imported in
bfloat16, exported and loaded back with ``from_pretrained(DIR, torch_dtype=torch.bfloat16)``
gives archlab's outputs within bfloat16's tolerance, its config says ``torch_dtype``
bfloat16, importing the export again gives the same tensors bit for bit, and both libraries
computing in float32 on the exported weights agree to float32's precision (so what differs in
bfloat16 is the arithmetic, not the conversion)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import archlab
from archlab.interop.export import export_hf

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

#: bfloat16 keeps 8 significant bits: two implementations summing in another order differ by
#: about 1e-2 of the output scale after a few layers (measured: 5e-3 to 1.3e-2).
BF16_TOLERANCE = 2e-2
#: T5 (unscaled attention scores, 2 + 3 layers here) loses more: transformers' own bfloat16 T5
#: is 1.8e-2 to 3.2e-2 of the scale from its float32 outputs on the same weights (archlab's
#: 1.4e-2 to 3.0e-2), so two bfloat16 runs may differ by up to their sum (measured: 2.4e-2 to
#: 3.6e-2 over four seeds); 5e-2 is what ``arch import`` accepts in bfloat16.
T5_BF16_TOLERANCE = 5e-2

IDS = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
MASK = torch.arange(9)[None, :] < torch.tensor([9, 6, 3])[:, None]  # True = real token
IMAGE = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(2))
TYPES = torch.randint(0, 3, IDS.shape, generator=torch.Generator().manual_seed(3))
TGT = IDS.masked_fill(torch.arange(9) == 0, 0)  # T5's decoder starts with 0

VISION = dict(
    image_size=24, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
    intermediate_size=37, num_labels=5,
)  # fmt: skip


def _vision(ours: Any, theirs: Any) -> tuple[Tensor, Tensor]:
    image = IMAGE.to(theirs.dtype)
    return ours(image=image), theirs(pixel_values=image).logits


def _decoder(ours: Any, theirs: Any) -> tuple[Tensor, Tensor]:
    out = ours(ids=IDS, ids_mask=MASK), theirs(input_ids=IDS, attention_mask=MASK.long()).logits
    return out[0][MASK], out[1][MASK]


def _bert(ours: Any, theirs: Any) -> tuple[Tensor, Tensor]:
    mask = MASK.long()
    hf = theirs(input_ids=IDS, token_type_ids=TYPES, attention_mask=mask).logits
    return ours(ids=IDS, token_types=TYPES, ids_mask=MASK), hf


def _t5(ours: Any, theirs: Any) -> tuple[Tensor, Tensor]:
    hf = theirs(input_ids=IDS, attention_mask=MASK.long(), decoder_input_ids=TGT).logits
    return ours(src=IDS, tgt=TGT, src_mask=MASK), hf


FAMILIES: dict[str, tuple[Callable[[], Any], Callable[[Any, Any], tuple[Tensor, Tensor]]]] = {
    "gpt2": (
        lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=61, n_positions=24, n_embd=36, n_layer=2, n_head=3, n_inner=50,
            bos_token_id=0, eos_token_id=0)),
        _decoder,
    ),
    "vit": (
        lambda: transformers.ViTForImageClassification(transformers.ViTConfig(**VISION)),
        _vision,
    ),
    "deit": (
        lambda: transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**VISION)),
        _vision,
    ),
    "bert": (
        lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=59, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
            intermediate_size=50, max_position_embeddings=24, type_vocab_size=3, num_labels=5)),
        _bert,
    ),
    "t5": (
        lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=61, d_model=40, d_kv=8, d_ff=72, num_layers=2, num_decoder_layers=3,
            num_heads=5, feed_forward_proj="gated-gelu")),
        _t5,
    ),
    "llama": (
        lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=53, hidden_size=48, intermediate_size=60, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False)),
        _decoder,
    ),
}  # fmt: skip


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Random, not zero, biases and not unit norms, so that a misplaced tensor shows."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _load(directory: Path, dtype: torch.dtype = torch.bfloat16) -> Any:
    """``from_pretrained(directory, torch_dtype=dtype)`` (named ``dtype`` from transformers 5
    on)."""
    config = json.loads((directory / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    major = int(transformers.__version__.split(".")[0])
    setting = {"dtype" if major >= 5 else "torch_dtype": dtype}
    return cls.from_pretrained(directory, attn_implementation="eager", **setting).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_model_exports_and_round_trips(tmp_path: Path, family: str) -> None:
    make, run = FAMILIES[family]
    torch.manual_seed(0)
    _randomized(make()).save_pretrained(tmp_path / "source")
    ours = archlab.import_pretrained(tmp_path / "source", dtype="bfloat16")
    written = export_hf(ours, tmp_path / "out")
    config = json.loads((written / "config.json").read_text())
    assert (config["model_type"], config["torch_dtype"]) == (family, "bfloat16")
    saved = safetensors_torch.load_file(written / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    back = _load(written)
    assert back.dtype == torch.bfloat16
    with torch.no_grad():
        mine, theirs = run(ours, back)
    assert mine.dtype == theirs.dtype == torch.bfloat16
    gap = _relative_diff(mine, theirs)
    print(f"{family} bf16 round trip: relative max diff {gap:.3g}")
    assert gap <= (T5_BF16_TOLERANCE if family == "t5" else BF16_TOLERANCE)
    again = archlab.import_pretrained(written, dtype="float32")
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor.float()), name
    with torch.no_grad():  # the same exported weights computed in float32 by both
        mine32, theirs32 = run(again, _load(written, torch.float32))
    assert _relative_diff(mine32, theirs32) <= 1e-5


def _relative_diff(ours: Tensor, theirs: Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())
