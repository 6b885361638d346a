"""``arch explain``: relevance maps of a weights file or a run's checkpoint
(``runners/explain_run.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from archlab.cli.formatting import dumps
from archlab.cli.options import open_registry, registry_option


class ListOptions(click.Command):
    """``--method a b c`` and ``--index 0 5 9``: the words after these options, up to the next
    option, are more values of it (rewritten as ``--method a --method b ...`` before parsing),
    so a list reads as it does in the docs. MODEL|RUN therefore comes before them."""

    LISTS = ("--method", "--index")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        current: str | None = None
        taken = 0  # values given to the current list option so far
        for word in args:
            if word == "--":
                current = None
            elif current is not None and taken and not _is_option(word):
                out.append(current)
            elif word.startswith("-") and not _is_number(word):
                current = word if word in self.LISTS else None
                taken = 0
                out.append(word)
                continue
            taken += 1
            out.append(word)
        return super().parse_args(ctx, out)


def _is_number(word: str) -> bool:
    return word.lstrip("-").isdigit()


def _is_option(word: str) -> bool:
    return word.startswith("-") and not _is_number(word)


@click.command("explain", cls=ListOptions)
@click.argument("source", metavar="MODEL|RUN")
@click.option("--data", "data_source", metavar="SOURCE",
              help="The samples' data (digits, npz:FILE, imagefolder:DIR, text:FILE, ...) "
              "[default for a RUN: its own validation split].")  # fmt: skip
@click.option("--method", "methods", multiple=True, metavar="M",
              help="attention, rollout, generic or chefer; several give one row each, e.g. "
              "--method attention rollout [default: generic].")  # fmt: skip
@click.option("--index", "indices", type=int, multiple=True, metavar="I",
              help="Explain these samples (rows of the data), e.g. --index 0 5 9.")  # fmt: skip
@click.option("--count", type=int, metavar="N",
              help="Explain the first N samples [default: 8].")  # fmt: skip
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE",
              help="The picture: .png, .svg or .pdf for image inputs, .html for token inputs "
              "[default: explain.png or explain.html].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help='Print {"METHOD": {"scores": [[...]], "target": [...]}, ..., "indices": '
              "[...]} (raw scores) besides writing the picture.")  # fmt: skip
@click.option("--target", type=int, metavar="CLASS",
              help="Explain every sample for this class (or next token) [default: each one's "
              "prediction].")  # fmt: skip
@click.option("--evaluate", type=click.Choice(["perturbation"]),
              help="Instead of pictures: Chefer's perturbation test of RUN's checkpoint on "
              "--data (or its validation split), recorded as an eval run with auc_pos_METHOD "
              "and auc_neg_METHOD.")  # fmt: skip
@click.option("--fill", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="--evaluate: what a removed patch's pixels become.")  # fmt: skip
@click.option("--no-record", is_flag=True,
              help="Do not record the picture as an eval run of RUN (a MODEL file never is).")  # fmt: skip
@registry_option
def explain_command(
    source: str,
    data_source: str | None,
    methods: tuple[str, ...],
    indices: tuple[int, ...],
    count: int | None,
    output: Path | None,
    as_json: bool,
    target: int | None,
    evaluate: str | None,
    fill: str,
    no_record: bool,
    registry_url: str | None,
) -> None:
    """Which input positions made MODEL (a weights file archlab wrote) or RUN's checkpoint
    decide, for a batch of samples, with each method.

    Image inputs give a grid: the images in the first row (label and prediction above, red when
    wrong), then one row per method with its map over each image (normalised per sample for
    display). Token inputs give an HTML page with each token coloured by its relevance, and the
    same colours in the terminal. For a RUN the picture is recorded as an eval run linked to
    it (artifact kind relevance-map) unless --no-record.

    \b
    arch explain RUN --method attention rollout generic chefer --count 6 -o maps.png
    arch explain model.safetensors --data digits --index 0 5 9 -o maps.png --json
    arch explain LM_RUN --data text:input.txt --count 3 -o tokens.html
    arch explain RUN --evaluate perturbation --method attention rollout generic chefer
    """
    if evaluate is not None:
        if no_record:
            raise click.UsageError("--evaluate perturbation records its figures as an eval run; "
                                   "leave out --no-record")  # fmt: skip
        _evaluate(source, data_source, list(methods) or ["generic"], fill, registry_url, as_json)
        return
    from archlab.runners.explain_run import explain_run
    from archlab.viz.explain import token_ansi

    result = explain_run(
        source,
        data_source,
        methods=list(methods) or ["generic"],
        indices=list(indices) or None,
        count=count,
        output=output,
        registry_url=registry_url,
        target=target,
        record=not no_record,
    )
    if as_json:
        click.echo(dumps(result.to_dict()))
        return
    n = len(result.indices)
    click.echo(
        f"wrote {result.path}: {n} sample(s) from {result.data_source} ({result.spec_name}, "
        f"{result.model_name}), method(s) {', '.join(result.scores)}"
    )
    if result.token_panels is not None:
        for method in result.scores:
            click.echo(f"\n{method}:")
            click.echo(token_ansi(result.token_panels, method))
    else:
        for i, row in enumerate(result.indices):
            label = "" if result.labels is None else f"label {result.labels[i]}, "
            click.echo(f"  #{row}: {label}predicted {result.predictions[i]}")
    if result.eval_run is not None:
        click.echo(f"recorded as eval run {result.eval_run}")


def _evaluate(
    run: str, data: str | None, methods: list[str], fill: str, url: str | None, as_json: bool
) -> None:
    """``--evaluate perturbation``: one library call, its table printed."""
    from archlab.runners.explain_eval import evaluate_run

    with open_registry(url) as registry:
        found = evaluate_run(run, data, methods, registry, fill=fill)  # type: ignore[arg-type]
    if as_json:
        click.echo(dumps(found))
        return
    click.echo(
        f"eval run {found['run']} (evaluates {found['evaluates']}, {found['examples']} examples):"
    )
    click.echo("  method      auc_pos (lower is better)  auc_neg (higher is better)")
    for method, figures in found["results"].items():
        click.echo(f"  {method:<11} {figures['auc_pos']:>25.4f}  {figures['auc_neg']:>26.4f}")


COMMANDS = [explain_command]
