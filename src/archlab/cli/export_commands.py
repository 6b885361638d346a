"""``arch export``: an archlab model written as another library's model folder
(``interop/export.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from archlab.textsafe import printable


@click.command("export")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(["hf"]), required=True,
              help="The format to write: hf, a Hugging Face model folder (config.json and "
              "model.safetensors) for transformers' from_pretrained.")  # fmt: skip
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--family", metavar="NAME", default=None,
              help="The family to write (llama) [default: the one the spec fits].")  # fmt: skip
@click.option("--replace", is_flag=True,
              help="Replace DIR when it is already a model folder (has a config.json); by "
              "default DIR must be new or empty.")  # fmt: skip
def export_command(
    model_path: Path, target: str, directory: Path, family: str | None, replace: bool
) -> None:
    """Write MODEL (weights saved by archlab: arch compile -o) as a model folder DIR.

    The family is read from the spec's structure (a decoder with rotary positions, RMSNorm, SwiGLU
    and causal masks is Llama); a spec the family cannot express exactly is refused with what
    does not fit. DIR appears whole or not at all.

    \b
    arch export model.safetensors --to hf out/my-llama
    python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('out/my-llama')"
    """
    from archlab.compiler import load_compiled
    from archlab.interop.export import export_hf

    model = load_compiled(model_path)
    written = export_hf(model, directory, family=family, replace=replace)
    info = json.loads((written / "config.json").read_text(encoding="utf-8"))
    params = sum(p.numel() for p in model.parameters())
    click.echo(
        f"wrote {printable(str(written))}: {info['architectures'][0]} "
        f"(model_type {info['model_type']}), {params:,} parameters, {info.get('torch_dtype')}"
    )


COMMANDS = [export_command]
