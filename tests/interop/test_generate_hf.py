"""Imported Hugging Face checkpoints write what ``transformers`` writes: tiny GPT-2 (tied and
untied), Llama (GQA, untied, a non-default rope_theta) and T5 models with random weights, saved
with ``save_pretrained`` and imported with ``archlab.import_pretrained``, give exactly the tokens
of ``transformers``' ``generate`` greedily (equal-length prompts, and left-padded prompts of
different lengths) and, for T5, with beam search.

Beam search is compared with transformers' defaults (``early_stopping=False``,
``length_penalty`` as given), which score the same way as ``generate(num_beams=...)``: the
2 * beams best candidates of each row, the best ``beams`` of them that do not end in eos kept
running, a candidate ending in eos among the best ``beams`` set aside with its summed
log-probability over (generated tokens, eos included) ** length_penalty, and a row finished once
it has ``beams`` such outputs and its best running beam, penalised at the current length, cannot
beat the worst of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import archlab

transformers = pytest.importorskip("transformers")

VOCAB = 61
NEW = 12


def _randomize(model: torch.nn.Module, seed: int) -> Any:
    """Every parameter random and large enough that the logits spread over several units (HF's
    init gives near-uniform logits, where greedy decoding repeats one token), norms near one;
    GPT-2's token and position tables small, so a tied head does not just echo the last token."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            normish = "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            table = name.endswith(("wte.weight", "wpe.weight"))
            p.copy_(1.0 + 0.1 * noise if normish else (0.02 if table else 0.3) * noise)
    return model.eval()


def _imported(model: Any, folder: Path) -> archlab.CompiledModel:
    model.save_pretrained(folder)
    return archlab.import_pretrained(folder).eval()


def _gpt2(tied: bool) -> Any:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=40, n_embd=36, n_layer=2, n_head=3, n_inner=50,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied,
    )  # fmt: skip
    return _randomize(transformers.GPT2LMHeadModel(config), seed=1 if tied else 2)


def _llama() -> Any:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=40, hidden_size=36, intermediate_size=52,
        num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
        rope_theta=5000.0, tie_word_embeddings=False, attn_implementation="eager",
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return _randomize(transformers.LlamaForCausalLM(config), seed=3)


DECODERS = {"gpt2-tied": lambda: _gpt2(True), "gpt2-untied": lambda: _gpt2(False), "llama": _llama}


def _hf_greedy(model: Any, ids: Tensor, mask: Tensor, **options: Any) -> Tensor:
    with torch.no_grad():
        return model.generate(
            ids, attention_mask=mask.long(), max_new_tokens=NEW, do_sample=False, **options
        )


def _prompts(left_padded: bool) -> tuple[Tensor, Tensor]:
    """Four prompts of 7 tokens, or of 7, 5, 2 and 6 real tokens left-padded with 0."""
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(1, VOCAB, (4, 7), generator=gen)
    lengths = torch.tensor([7, 5, 2, 6] if left_padded else [7, 7, 7, 7])
    mask = torch.arange(7)[None, :] >= (7 - lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


def _varied(tokens: Tensor) -> None:
    """The outputs are not degenerate: several distinct tokens, and rows that differ (a tiny
    random model still falls into short loops, so a row alone may repeat itself)."""
    assert len(set(tokens.flatten().tolist())) >= 6, tokens
    assert len({tuple(row.tolist()) for row in tokens}) == len(tokens), tokens


@pytest.mark.parametrize("name", list(DECODERS))
@pytest.mark.parametrize("left_padded", [False, True], ids=["equal", "left-padded"])
def test_greedy_tokens_equal_transformers(tmp_path: Path, name: str, left_padded: bool) -> None:
    hf = DECODERS[name]()
    hf.generation_config.eos_token_id = None  # the full length, no stop
    hf.generation_config.pad_token_id = 0
    ours = _imported(hf, tmp_path)
    ids, mask = _prompts(left_padded)
    expected = _hf_greedy(hf, ids, mask)
    got = ours.generate(ids, NEW, ids_mask=mask if left_padded else None)
    _varied(expected[:, 7:])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", list(DECODERS))
def test_rows_that_reach_eos_are_padded_as_transformers_pads_them(
    tmp_path: Path, name: str
) -> None:
    """An eos the rows reach at different steps: finished rows continue as pad, the others go
    on, and decoding stops when every row has finished (or at the limit)."""
    hf = DECODERS[name]()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    ids, mask = _prompts(left_padded=True)
    free = _hf_greedy(hf, ids, mask)[:, 7:]
    eos = int(free[0, 3])  # a token row 0 writes early on; other rows may not
    ours = _imported(hf, tmp_path)
    expected = _hf_greedy(hf, ids, mask, eos_token_id=eos, pad_token_id=0)
    got = ours.generate(ids, NEW, ids_mask=mask, eos_id=eos, pad_id=0)
    assert (expected[0, 7:] == 0).any()  # row 0 did finish early
    assert torch.equal(got, expected)


def _t5() -> Any:
    """A tiny untied gated-GELU T5 (v1.1-shaped). As many decoder as encoder layers:
    transformers' generate sizes its decoder cache by ``num_layers`` and fails otherwise."""
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=40, d_kv=8, d_ff=72, num_layers=2, num_decoder_layers=2,
        num_heads=5, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # T5's init gives near-flat logits: every weight random, norms near 1
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(1.0 + 0.1 * noise if "layer_norm" in name else 0.3 * noise)
        model.lm_head.weight[0] = 0.0  # the pad (and start) token: never the best choice
    return model.eval()


def _sources() -> tuple[Tensor, Tensor]:
    """Three sources of 9, 6 and 4 real tokens, right-padded with 0 (mask True = real)."""
    gen = torch.Generator().manual_seed(6)
    src = torch.randint(2, VOCAB, (3, 9), generator=gen)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 6, 4])[:, None]
    return src.masked_fill(~mask, 0), mask


def _t5_pair(tmp_path: Path) -> tuple[Any, archlab.CompiledModel]:
    hf = _t5()
    return hf, _imported(hf, tmp_path)


def test_t5_greedy_equals_transformers(tmp_path: Path) -> None:
    hf, ours = _t5_pair(tmp_path)
    src, mask = _sources()
    with torch.no_grad():
        expected = hf.generate(
            input_ids=src, attention_mask=mask.long(), max_new_tokens=NEW, do_sample=False
        )
    got = ours.generate(src=src, src_mask=mask, max_new_tokens=NEW, start_id=0, eos_id=1, pad_id=0)
    _varied(expected[:, 1:])
    assert torch.equal(got, expected)


def _hf_beams(hf: Any, src: Tensor, mask: Tensor, length_penalty: float, eos: int | None) -> Tensor:
    with torch.no_grad():
        return hf.generate(
            input_ids=src,
            attention_mask=mask.long(),
            max_new_tokens=NEW,
            num_beams=3,
            length_penalty=length_penalty,
            early_stopping=False,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
        )


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("found_eos", [True, False], ids=["found-eos", "limit"])
def test_t5_beam_search_equals_transformers(
    tmp_path: Path, length_penalty: float, found_eos: bool
) -> None:
    """``found-eos``: eos is a token the beams write after a few steps (so outputs finish at
    different lengths, and the length penalty and the stopping rule decide); ``limit``: no eos,
    every beam runs to ``max_new_tokens``. With a length penalty of 1 or 2 the short outputs
    ending in eos lose to longer running ones; with 0 they win.

    transformers fills a finished beam's output with ``pad_token_id or eos_token_id``, so with
    T5's pad id 0 (falsy) the filler is eos, not pad; archlab is given ``pad_id=eos`` to match."""
    hf, ours = _t5_pair(tmp_path)
    src, mask = _sources()
    free = _hf_beams(hf, src, mask, length_penalty, None)
    eos = int(free[0, 6]) if found_eos else None
    expected = free if eos is None else _hf_beams(hf, src, mask, length_penalty, eos)
    got = ours.generate(
        src=src,
        src_mask=mask,
        max_new_tokens=NEW,
        start_id=0,
        num_beams=3,
        length_penalty=length_penalty,
        eos_id=eos,
        pad_id=eos,  # transformers fills after eos with `pad_token_id or eos`: T5's pad 0 is falsy
    )
    _varied(expected[:, 1:])
    assert torch.equal(got, expected), (got, expected)
