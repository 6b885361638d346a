"""``archlab.embed``: the vector the head reads (hooked here on the head itself), any node pooled
over its real tokens, batches equal to samples alone, padding without effect, and the errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import archlab
from archlab.compiler.model import CompiledModel
from archlab.runners.data.common import TaskData
from archlab.runners.embed import EmbedError, embed_dim, embed_rows, token_table
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]


def _spec(name: str, small: bool = True) -> dict[str, Any]:
    doc = json.loads((ROOT / f"specs/{name}.json").read_text())
    return small_version(doc) if small else doc


def _model(doc: dict[str, Any] | str) -> CompiledModel:
    """The spec's model, seeded, in eval mode (as ``embed`` runs it) for the hooked references."""
    torch.manual_seed(0)
    return archlab.compile_spec(doc).eval()


@contextmanager
def _head_input(module: torch.nn.Module) -> Iterator[list[tuple[torch.Tensor, Any]]]:
    """What ``module`` (a head) is called with: (first argument, mask or None) per call."""
    calls: list[tuple[torch.Tensor, Any]] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        calls.append((args[0], args[1] if len(args) > 1 else None))

    handle = module.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None, skip: int = 0) -> torch.Tensor:
    x = x[:, skip:]
    if mask is None:
        return x.mean(1)
    real = mask[:, skip:].float()
    return (x * real[..., None]).sum(1) / real.sum(1, keepdim=True)


def _ragged_ids(lengths: list[int], width: int, vocab: int, left: bool = False) -> Any:
    """Token ids `(B, width)` with rows of ``lengths`` real tokens (ids >= 1), padded with 0, and
    the mask of the real ones."""
    gen = torch.Generator().manual_seed(4)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        span = slice(width - n, width) if left else slice(0, n)
        ids[row, span] = torch.randint(1, vocab, (n,), generator=gen)
        mask[row, span] = True
    return ids, mask


@pytest.fixture(scope="module")
def vit() -> CompiledModel:
    return _model(str(ROOT / "specs/vit-tiny-digits.json"))


@pytest.fixture(scope="module")
def bert() -> CompiledModel:
    return _model(_spec("bert-base"))  # pad_id 0, mean pooling, dropout


def test_a_vit_embeds_the_final_norm_cls_vector_its_head_reads(vit) -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    vit.train()
    vecs = archlab.embed(vit, image=x)
    assert vit.training and not vecs.requires_grad  # mode restored, no graph
    with torch.no_grad(), _head_input(vit.head) as calls:
        vit.eval()(image=x)
    assert vecs.shape == (5, 64) == (5, embed_dim(vit))
    assert torch.equal(vecs, calls[0][0][:, 0])  # the CLS row of the final norm's output
    for i in range(5):  # a batch embeds as its samples alone
        alone = archlab.embed(vit, image=x[i : i + 1])
        torch.testing.assert_close(vecs[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_a_mean_pooled_encoder_embeds_the_masked_mean_and_ignores_padding(bert) -> None:
    ids, mask = _ragged_ids([3, 9, 6, 12], 12, 100)
    vecs = archlab.embed(bert, ids=ids)  # pad_id 0 masks the padding
    with torch.no_grad(), _head_input(bert.head) as calls:
        bert(ids=ids)
    x, head_mask = calls[0]
    assert torch.equal(head_mask, mask)
    torch.testing.assert_close(vecs, _masked_mean(x, mask), rtol=1e-6, atol=1e-7)
    assert torch.equal(archlab.embed(bert, ids=ids, ids_mask=mask), vecs)
    for i, n in enumerate([3, 9, 6, 12]):  # alone and unpadded == padded in a longer batch
        alone = archlab.embed(bert, ids=ids[i : i + 1, :n])
        torch.testing.assert_close(vecs[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_bert_with_a_pooler_embeds_what_enters_the_pooler() -> None:
    doc = _spec("bert-base")
    doc["nodes"]["head"]["pre_logits"] = {"dim": 32}
    model = _model(doc)
    ids, _ = _ragged_ids([4, 7], 8, 100)
    with torch.no_grad(), _head_input(model.head.pre_logits) as calls:
        model(ids=ids)
    assert torch.equal(archlab.embed(model, ids=ids), calls[0][0])
    assert embed_dim(model) == 64


def test_two_averaged_heads_embed_the_mean_of_their_vectors(minimal_vit) -> None:
    doc = minimal_vit()  # DeiT distilled: CLS and distillation tokens, one head each, averaged
    doc["nodes"]["cls"]["count"] = 2
    doc["nodes"]["head"]["pool"] = "cls"
    doc["nodes"]["head_dist"] = {"op": "classify", "input": "enc", "classes": 10, "pool": "distill"}  # fmt: skip
    doc["nodes"]["logits"] = {"op": "average", "inputs": ["head", "head_dist"]}
    doc["outputs"] = "logits"
    model = _model(doc)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad(), _outputs(model, "enc") as outs:
        model(image=x)
    expected = (outs[0][:, 0] + outs[0][:, 1]) / 2
    torch.testing.assert_close(archlab.embed(model, image=x), expected, rtol=1e-6, atol=1e-7)


def test_a_pool_node_before_the_head_gives_its_vector(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["pooled"] = {"op": "pool", "input": "enc", "mode": "mean"}
    doc["nodes"]["head"] = {"op": "classify", "input": "pooled", "classes": 10}
    model = _model(doc)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad(), _outputs(model, "pooled") as outs:
        logits = model(image=x)
    assert torch.equal(archlab.embed(model, image=x), outs[0])  # what `fc` reads
    assert torch.equal(archlab.embed(model, node="pooled", image=x), outs[0])
    assert torch.equal(archlab.embed(model, node="head", image=x), logits)  # fc without forward


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_a_decoder_lm_embeds_its_last_real_tokens_vector(left: bool) -> None:
    model = _model(_spec("gpt-tiny"))
    lengths = [2, 7, 5]
    ids, mask = _ragged_ids(lengths, 7, 100, left=left)
    vecs = archlab.embed(model, ids=ids, ids_mask=mask)
    with torch.no_grad(), _head_input(model.lm_head) as calls:
        model(ids=ids, ids_mask=mask)
    x = calls[0][0]  # (B, T, D): the final norm's output
    last = [6 if left else n - 1 for n in lengths]
    assert torch.equal(vecs, x[torch.arange(3), last])
    for i, n in enumerate(lengths):  # the prompt alone predicts its next token from the same vector
        real = ids[i : i + 1, 7 - n :] if left else ids[i : i + 1, :n]
        torch.testing.assert_close(vecs[i : i + 1], archlab.embed(model, ids=real), rtol=1e-5, atol=1e-6)  # fmt: skip


def test_an_encoder_decoder_embeds_on_the_decoder_side() -> None:
    model = _model(str(ROOT / "specs/transformer-tiny.json"))
    src, _ = _ragged_ids([5, 9, 16], 16, 16)
    tgt, _ = _ragged_ids([3, 8, 1], 10, 16)
    vecs = archlab.embed(model, src=src, tgt=tgt)  # pad_id 0 on both sides
    with torch.no_grad(), _head_input(model.lm_head) as calls:
        model(src=src, tgt=tgt)
    assert vecs.shape == (3, 64)
    assert torch.equal(vecs, calls[0][0][torch.arange(3), torch.tensor([2, 7, 0])])
    encoder = archlab.embed(model, node="encoder", src=src, tgt=tgt)
    with torch.no_grad(), _outputs(model, "encoder") as outs:
        model(src=src, tgt=tgt)
    src_mask = src != 0
    torch.testing.assert_close(encoder, _masked_mean(outs[0], src_mask), rtol=1e-6, atol=1e-7)


@contextmanager
def _outputs(model: CompiledModel, node: str) -> Iterator[list[torch.Tensor]]:
    outs: list[torch.Tensor] = []

    def hook(_: torch.nn.Module, args: Any, out: Any) -> None:
        outs.append(out[0] if isinstance(out, tuple) else out)

    handle = getattr(model, node).register_forward_hook(hook)
    try:
        yield outs
    finally:
        handle.remove()


def _pruned(name: str, pool: str) -> CompiledModel:
    if name == "tome":
        doc = _spec("deit-small-16")
        doc["nodes"]["encoder"]["prune"] = {"method": "merge", "at": [0, 1], "r": 2}
    else:
        doc = _spec(name)
    doc["nodes"]["head"]["pool"] = pool
    return _model(doc)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("name", ["dynamicvit-tiny-digits", "evit-deit-s", "tome"])
def test_pruned_models_embed_what_their_head_reads(name: str, pool: str) -> None:
    model = _pruned(name, pool)
    inputs = model.example_inputs(batch=3)
    vecs = archlab.embed(model, **inputs)
    with torch.no_grad(), _head_input(model.head) as calls:
        _, trace = model.trace_tokens(**inputs)
    x, mask = calls[0]
    assert x.shape[1] < 17  # tokens were pruned before the head
    expected = x[:, 0] if pool == "cls" else _masked_mean(x, mask, skip=1)
    torch.testing.assert_close(vecs, expected, rtol=1e-6, atol=1e-7)
    # the pruned stack's own output, over the tokens present (CLS left out of the mean)
    encoder = trace.features["encoder"]  # (B, T', D), T' < 17
    node_mean = archlab.embed(model, node="encoder", pool="mean", **inputs)
    node_cls = archlab.embed(model, node="encoder", **inputs)  # CLS tokens: cls by default
    torch.testing.assert_close(node_mean, encoder[:, 1:].mean(1), rtol=1e-6, atol=1e-7)
    assert torch.equal(node_cls, encoder[:, 0])
    for i in range(3):
        alone = archlab.embed(model, **{k: v[i : i + 1] for k, v in inputs.items()})
        torch.testing.assert_close(vecs[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_a_pruned_padded_encoder_pools_the_kept_real_tokens() -> None:
    doc = _spec("bert-base")
    doc["nodes"]["encoder"]["prune"] = {"method": "dynamic", "at": [1], "keep": 0.5}
    model = _model(doc)
    ids, _ = _ragged_ids([3, 10, 6], 10, 100)
    vecs = archlab.embed(model, ids=ids)
    with torch.no_grad(), _head_input(model.head) as calls:
        model(ids=ids)
    x, mask = calls[0]  # (B, 5, D) and the kept tokens' padding mask
    assert x.shape[1] == 5 and not mask.all()
    torch.testing.assert_close(vecs, _masked_mean(x, mask), rtol=1e-6, atol=1e-7)
    node = archlab.embed(model, node="encoder", ids=ids)  # no CLS tokens: mean by default
    torch.testing.assert_close(node, vecs, rtol=0, atol=0)


def test_node_pools_an_intermediate_output_both_ways(vit, bert) -> None:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), _outputs(vit, "pos") as outs:
        logits = vit(image=x)
    pos = outs[0]  # (B, 17, 64), one CLS token
    assert torch.equal(archlab.embed(vit, node="pos", pool="cls", image=x), pos[:, 0])
    assert torch.equal(archlab.embed(vit, node="pos", image=x), pos[:, 0])  # CLS: cls by default
    mean = archlab.embed(vit, node="pos", pool="mean", image=x)
    torch.testing.assert_close(mean, pos[:, 1:].mean(1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(archlab.embed(vit, node="head", image=x), logits)  # already (B, D)
    assert embed_dim(vit, "head") == 10
    ids, mask = _ragged_ids([2, 8, 5], 8, 100)
    with torch.no_grad(), _outputs(bert, "emb_norm") as outs:
        bert(ids=ids)
    emb = outs[0]
    torch.testing.assert_close(archlab.embed(bert, node="emb_norm", ids=ids), _masked_mean(emb, mask), rtol=1e-6, atol=1e-7)  # fmt: skip
    assert torch.equal(archlab.embed(bert, node="emb_norm", pool="cls", ids=ids), emb[:, 0])


def test_a_bare_encoder_output_is_pooled_like_a_node(minimal_vit) -> None:
    doc = minimal_vit()
    del doc["nodes"]["head"]
    doc["outputs"] = "enc"
    model = _model(doc)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        out = model(image=x)
    assert torch.equal(archlab.embed(model, image=x), out[:, 0])
    torch.testing.assert_close(archlab.embed(model, pool="mean", image=x), out[:, 1:].mean(1))


def test_an_imported_vit_embeds_what_hugging_faces_classifier_reads(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=24, patch_size=8, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=3, intermediate_size=37, num_labels=5,
    )  # fmt: skip
    torch.manual_seed(0)
    source = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # random norms and biases, so that a wrong tensor shows
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    source.save_pretrained(tmp_path / "vit")
    model = archlab.import_pretrained(tmp_path / "vit")
    image = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), _head_input(source.classifier) as calls:
        hidden = source(pixel_values=image, output_hidden_states=True).hidden_states[-1]
    theirs = calls[0][0]  # what the classifier reads: the final layernorm's CLS vector
    torch.testing.assert_close(theirs, source.vit.layernorm(hidden)[:, 0])
    torch.testing.assert_close(archlab.embed(model, image=image), theirs, rtol=1e-5, atol=1e-5)


def _task_data(inputs: dict[str, torch.Tensor]) -> TaskData:
    n = len(next(iter(inputs.values())))
    return TaskData(
        task="classify", inputs=inputs, targets=torch.zeros(n, dtype=torch.long), groups=None,
        classes=10, vocab_size=None, source="test", content_sha256="0", description="test",
    )  # fmt: skip


def test_embed_rows_gives_the_values_of_one_batch(vit, bert) -> None:
    images = torch.rand(11, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    rows = np.array([9, 0, 4, 4, 10, 2, 7])
    got = embed_rows(vit, _task_data({"image": images}), rows, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (7, 64)
    whole = archlab.embed(vit, image=images[torch.as_tensor(rows)]).numpy()
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    ids, mask = _ragged_ids([3, 9, 6, 12, 1], 12, 100)
    data = _task_data({"ids": ids, "ids_mask": mask})
    got = embed_rows(bert, data, np.arange(5), batch_size=2, node="encoder", pool="cls")
    whole = archlab.embed(bert, node="encoder", pool="cls", ids=ids, ids_mask=mask).numpy()
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    assert embed_rows(vit, _task_data({"image": images}), np.array([], dtype=int)).shape == (0, 64)
    with pytest.raises(EmbedError, match=r"row 11 lies outside the data's 11 samples \(0..10\)"):
        embed_rows(vit, _task_data({"image": images}), np.array([1, 11]))
    with pytest.raises(EmbedError, match="batch_size must be at least 1, got 0"):
        embed_rows(vit, _task_data({"image": images}), rows, batch_size=0)


def test_token_table_is_the_first_token_inputs_embedding(vit) -> None:
    gpt = _model(_spec("gpt-tiny"))
    name, table = token_table(gpt)
    assert name == "ids" and table.shape == (100, 64) and table.dtype == np.float32
    np.testing.assert_array_equal(table, gpt.tok.weight.detach().numpy())
    seq2seq = _model(str(ROOT / "specs/transformer-tiny.json"))
    name, table = token_table(seq2seq)
    assert name == "src"
    np.testing.assert_array_equal(table, seq2seq.src_tok.weight.detach().numpy())
    with pytest.raises(EmbedError, match=r"model vit-tiny-digits has no token input \(its inputs: image\)"):  # fmt: skip
        token_table(vit)


def test_bad_requests_say_what_is_wrong(vit, minimal_vit) -> None:
    x = torch.rand(2, 1, 8, 8)
    ids = "image, patches, cls, pos, encoder, norm, head"
    with pytest.raises(EmbedError, match=f"unknown node 'enc'; the spec's nodes are {ids}"):
        archlab.embed(vit, node="enc", image=x)
    with pytest.raises(EmbedError, match="unknown pool 'max'; choose one of cls, mean"):
        archlab.embed(vit, node="encoder", pool="max", image=x)
    with pytest.raises(EmbedError, match=r"node 'head' is already one vector per sample \(B, 10\): it has no token axis to pool with 'mean'"):  # fmt: skip
        archlab.embed(vit, node="head", pool="mean", image=x)
    with pytest.raises(EmbedError, match=r"node 'image' is an input of images \(B, C, H, W\), not a sequence of vectors: it has no token axis to pool; embed a node that reads it \(patches\)"):  # fmt: skip
        archlab.embed(vit, node="image", image=x)
    with pytest.raises(EmbedError, match=r"pool='cls' applies to a node's output \(node=...\); the classify head 'head' reads its own vector"):  # fmt: skip
        archlab.embed(vit, pool="cls", image=x)
    doc = minimal_vit()
    doc["outputs"] = ["head", "enc"]
    two = _model(doc)
    with pytest.raises(EmbedError, match=r"the spec has 2 outputs \(head, enc\), so no one head to read from; name the node to embed \(node=...\)"):  # fmt: skip
        archlab.embed(two, image=x)
    assert archlab.embed(two, node="enc", image=x).shape == (2, 64)  # a named node still works
    assert issubclass(EmbedError, archlab.errors.UserInputError)
