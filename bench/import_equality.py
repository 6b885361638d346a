"""How far imported models are from the library they came from, per family and architecture.

    python bench/import_equality.py [--seed 0]

For each family ``arch import`` supports, makes small random ``transformers`` models locally
(odd sizes, grouped-query attention, untied heads, several rope thetas; LayerNorm and bias
parameters perturbed so they are not the identity), saves them with ``save_pretrained``, imports
each folder with ``archlab.import_pretrained`` in float32 and bfloat16, and prints the largest
output difference over a padded batch relative to the source's output scale
(``archlab.interop.verify.compare``: the source always runs in float32). Needs transformers
(``pip install -e .[interop]``). The tests assert the tolerances; this prints the figures.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

import archlab
from archlab.interop.sources import read_config
from archlab.interop.verify import compare

#: (family, architecture, config class, config keyword arguments)
CASES: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
    ("gpt2", "GPT2LMHeadModel", transformers.GPT2Config,
     {"vocab_size": 101, "n_positions": 40, "n_embd": 48, "n_layer": 3, "n_head": 3,
      "bos_token_id": 0, "eos_token_id": 0}),
    ("gpt2", "GPT2Model", transformers.GPT2Config,
     {"vocab_size": 101, "n_positions": 40, "n_embd": 48, "n_layer": 2, "n_head": 4,
      "bos_token_id": 0, "eos_token_id": 0}),
    ("llama", "LlamaForCausalLM", transformers.LlamaConfig,
     {"vocab_size": 97, "hidden_size": 48, "intermediate_size": 70, "num_hidden_layers": 2,
      "num_attention_heads": 6, "num_key_value_heads": 2, "rope_theta": 500000.0,
      "tie_word_embeddings": False, "rms_norm_eps": 1e-5}),
    ("llama", "LlamaForCausalLM", transformers.LlamaConfig,
     {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 4, "rope_theta": 10000.0,
      "tie_word_embeddings": True}),
    ("bert", "BertForSequenceClassification", transformers.BertConfig,
     {"vocab_size": 97, "hidden_size": 36, "num_hidden_layers": 2, "num_attention_heads": 3,
      "intermediate_size": 53, "max_position_embeddings": 24, "num_labels": 3}),
    ("bert", "BertModel", transformers.BertConfig,
     {"vocab_size": 97, "hidden_size": 36, "num_hidden_layers": 2, "num_attention_heads": 3,
      "intermediate_size": 53, "max_position_embeddings": 24}),
    ("t5", "T5ForConditionalGeneration", transformers.T5Config,
     {"vocab_size": 71, "d_model": 40, "d_kv": 10, "d_ff": 56, "num_layers": 2, "num_heads": 4}),
    ("t5", "T5ForConditionalGeneration", transformers.T5Config,
     {"vocab_size": 71, "d_model": 40, "d_kv": 10, "d_ff": 56, "num_layers": 2, "num_heads": 4,
      "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}),
    ("vit", "ViTForImageClassification", transformers.ViTConfig,
     {"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 3, "intermediate_size": 70, "num_labels": 5}),
    ("vit", "ViTModel", transformers.ViTConfig,
     {"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 3, "intermediate_size": 70}),
    ("deit", "DeiTForImageClassificationWithTeacher", transformers.DeiTConfig,
     {"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 3, "intermediate_size": 70, "num_labels": 5}),
    ("deit", "DeiTForImageClassification", transformers.DeiTConfig,
     {"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
      "num_attention_heads": 3, "intermediate_size": 70, "num_labels": 5}),
]  # fmt: skip


def saved(folder: Path, architecture: str, config_class: Callable[..., Any], kwargs: dict) -> Path:
    """A random model of ``architecture`` with perturbed norms and biases, saved in ``folder``."""
    model = getattr(transformers, architecture)(config_class(**kwargs)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, CPU")
    print(f"{'family':<6} {'architecture':<38} {'float32':>10} {'bfloat16':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, architecture, config_class, kwargs) in enumerate(CASES):
            torch.manual_seed(args.seed + i)
            folder = saved(Path(tmp) / str(i), architecture, config_class, kwargs)
            config = read_config(folder)
            figures = []
            for dtype in ("float32", "bfloat16"):
                model = archlab.import_pretrained(folder, dtype=dtype)
                figures.append(compare(model, folder, config).relative)
            print(f"{family:<6} {architecture:<38} {figures[0]:>10.2e} {figures[1]:>10.2e}")


if __name__ == "__main__":
    main()
