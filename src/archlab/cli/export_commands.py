"""``arch export``: an archlab model written as another library's model folder
(``interop/export.py``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from archlab.cli.options import open_registry, registry_option
from archlab.textsafe import printable

if TYPE_CHECKING:
    from archlab.compiler import CompiledModel


@click.command("export")
@click.argument("model", metavar="MODEL|RUN")
@click.option("--to", "target", type=click.Choice(["hf"]), required=True,
              help="The format to write: hf, a Hugging Face model folder (config.json and "
              "model.safetensors) for transformers' from_pretrained.")  # fmt: skip
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--family", metavar="NAME", default=None,
              help="The family to write (llama) [default: the one the spec fits].")  # fmt: skip
@click.option("--replace", is_flag=True,
              help="Replace DIR when it is already a model folder (has a config.json); by "
              "default DIR must be new or empty.")  # fmt: skip
@registry_option
def export_command(
    model: str,
    target: str,
    directory: Path,
    family: str | None,
    replace: bool,
    registry_url: str | None,
) -> None:
    """Write MODEL (weights saved by archlab: arch compile -o, arch import) or the best
    checkpoint of training run RUN as a model folder DIR.

    The family is read from the spec's structure (a decoder with rotary positions, RMSNorm, SwiGLU
    and causal masks is Llama); a spec the family cannot express exactly is refused with what
    does not fit. DIR appears whole or not at all.

    \b
    arch export model.safetensors --to hf out/my-llama
    arch export 3f2a9c1e --to hf out/fine-tuned
    python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('out/my-llama')"
    """
    from archlab.interop.export import export_hf

    compiled = _load_model(model, registry_url)
    written = export_hf(compiled, directory, family=family, replace=replace)
    info = json.loads((written / "config.json").read_text(encoding="utf-8"))
    params = sum(p.numel() for p in compiled.parameters())
    click.echo(
        f"wrote {printable(str(written))}: {info['architectures'][0]} "
        f"(model_type {info['model_type']}), {params:,} parameters, {info.get('torch_dtype')}"
    )


def _load_model(model: str, registry_url: str | None) -> CompiledModel:
    """The model a weights file holds or, when MODEL is no file, the run it names (resolved as
    ``arch train --init`` resolves it); the registry is only opened for a run."""
    from archlab.compiler import load_compiled
    from archlab.registry import RegistryError
    from archlab.runners.init import InitError, weights_file

    if Path(model).is_file():
        return load_compiled(model)
    with contextlib.ExitStack() as stack:
        try:
            registry = stack.enter_context(open_registry(registry_url))
        except RegistryError as exc:
            raise InitError(
                f"MODEL {printable(model)}: no such file, and no registry to find a run in ({exc})"
            ) from None
        compiled: CompiledModel = load_compiled(weights_file(model, registry, what="MODEL"))
        return compiled


COMMANDS = [export_command]
