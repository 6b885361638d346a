"""``arch embed``: a 2-D map of a model's embeddings, their nearest neighbours and their quality
(``runners/embed_run.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from archlab.cli.formatting import dumps
from archlab.cli.options import registry_option


@click.command("embed")
@click.argument("source", metavar="MODEL|RUN|GROUP")
@click.option("--data", "data_source", metavar="SOURCE",
              help="The samples' data (digits, npz:FILE, imagefolder:DIR, ...) [default for a "
              "RUN: its own data, --split val].")  # fmt: skip
@click.option("--node", metavar="ID",
              help="Embed this node's output, pooled over its real tokens [default: what the "
              "head reads].")  # fmt: skip
@click.option("--pool", type=click.Choice(["cls", "mean"]),
              help="How --node's tokens are pooled [default: cls when it has CLS tokens, else "
              "mean].")  # fmt: skip
@click.option("--method", type=click.Choice(["tsne", "umap", "pca"]), default="tsne",
              show_default=True, help="How the embeddings are reduced to 2-D (umap: the umap "
              "extra).")  # fmt: skip
@click.option("--split", type=click.Choice(["val", "all"]),
              help="A RUN: map its validation split or every row of its data [default: val].")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="The reduction's seed: the same seed draws the same map.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE",
              help="The map: .png, .svg or .pdf [default: embed.png].")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(path_type=Path), metavar="FILE",
              help='Also write the points: {"method", "points": [{"x", "y", "label", '
              '"index"}, ...]}.')  # fmt: skip
@click.option("--tokens", is_flag=True,
              help="Map the rows of the token embedding table, each labelled by its token.")  # fmt: skip
@click.option("--limit", type=int, metavar="N",
              help="--tokens: map the first N token ids only [default: all].")  # fmt: skip
@click.option("--neighbours", metavar="TOKEN|INDEX",
              help="Print the nearest tokens (with --tokens: a token's text or #ID) or the "
              "nearest samples (a row of the data) by cosine similarity.")  # fmt: skip
@click.option("-k", "neighbours_k", type=int, default=10, show_default=True,
              help="How many neighbours --neighbours prints.")  # fmt: skip
@click.option("--knn-k", type=int, default=5, show_default=True,
              help="k of the k-nearest-neighbour accuracy and the trustworthiness.")  # fmt: skip
@click.option("--baseline", type=click.Choice(["raw", "onehot"]),
              help="Also the kNN accuracy of the raw inputs: pixels or bag-of-tokens counts "
              "(raw), or length-normalised one-hot vectors (onehot).")  # fmt: skip
@click.option("--no-record", is_flag=True,
              help="Do not record the quality figures as an eval run.")  # fmt: skip
@click.option("--print-json", "as_json", is_flag=True,
              help="Print one JSON object instead of the text report.")  # fmt: skip
@registry_option
def embed_command(
    source: str,
    data_source: str | None,
    node: str | None,
    pool: str | None,
    method: str,
    split: str | None,
    seed: int,
    output: Path | None,
    json_path: Path | None,
    tokens: bool,
    limit: int | None,
    neighbours: str | None,
    neighbours_k: int,
    knn_k: int,
    baseline: str | None,
    no_record: bool,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """A 2-D map (t-SNE, UMAP or PCA) of the embeddings MODEL (a weights file archlab wrote),
    RUN's checkpoint or every fold of CV group GROUP gives samples of data, coloured by label,
    with the quality of the representation: k-nearest-neighbour accuracy (from a run's training
    split to its validation split; leave-one-out over other data), the map's trustworthiness,
    and with --baseline the same kNN accuracy on the raw inputs. A RUN's figures are recorded as
    an eval run linked to it (a GROUP's as a CV group of eval runs: mean ± std in arch runs).

    \b
    arch embed RUN -o map.png --baseline raw
    arch embed GROUP --method pca -o fold0.png
    arch embed model.safetensors --data digits --method umap -o map.png --json points.json
    arch embed LM_RUN --tokens --neighbours the -k 10 -o tokens.png
    """
    from archlab.runners.embed_run import embed_group, embed_run, embed_tokens

    if tokens:
        if data_source or node or pool or split or baseline:
            raise click.UsageError("--tokens maps the token table: no --data, --node, --pool, "
                                   "--split or --baseline")  # fmt: skip
        report = embed_tokens(
            source, method=method, seed=seed, limit=limit, output=output, json_path=json_path,
            neighbours=neighbours, neighbours_k=neighbours_k, registry_url=registry_url,
        )  # fmt: skip
        _show(report, as_json)
        return
    row = _row(neighbours)
    options: dict[str, Any] = {
        "node": node, "pool": pool, "method": method, "seed": seed, "k": knn_k,
        "baseline": baseline, "output": output, "json_path": json_path,
        "record": not no_record,
    }  # fmt: skip
    if _is_group(source, registry_url):
        if data_source is not None or split == "all" or row is not None:
            raise click.UsageError("a GROUP maps each fold's validation split: no --data, "
                                   "--split all or --neighbours")  # fmt: skip
        reports, group, aggregates = embed_group(source, registry_url, **options)
        _show_group(reports, group, aggregates, as_json)
        return
    report = embed_run(
        source, data_source, split=split, neighbours=row, neighbours_k=neighbours_k,
        registry_url=registry_url, **options,
    )  # fmt: skip
    _show(report, as_json)


def _row(neighbours: str | None) -> int | None:
    if neighbours is None:
        return None
    if not neighbours.isdigit():
        raise click.BadParameter(
            f"{neighbours!r} is not a row of the data; give a row number (or use --tokens to "
            "look up a token)",
            param_hint="--neighbours",
        )
    return int(neighbours)


def _is_group(source: str, url: str | None) -> bool:
    """Whether ``source`` names a CV group of the registry (a file or run id is not one)."""
    if Path(source).exists() or Path(source).suffix:
        return False
    from archlab.registry import Registry, RegistryError

    try:
        with Registry(url, create=False) as registry:
            return registry.kind_of(source) == "group"
    except RegistryError:
        return False  # loading it as a run says what is wrong


def _show(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(dumps(report.to_dict()))
        return
    click.echo(
        f"wrote {report.path}: {len(report.indices)} points of {report.where} "
        f"({report.model_name}, {report.method})"
    )
    for name, value in report.quality.items():
        click.echo(f"  {name:<18} {value:.4f}")
    if report.eval_run is not None:
        click.echo(f"recorded as eval run {report.eval_run}")
    if report.neighbours:
        click.echo(f"nearest to {report.query} by cosine similarity:")
        for index, label, similarity in report.neighbours:
            click.echo(f"  {index:>6}  {similarity:.4f}  {label!r}")


def _show_group(
    reports: list[Any], group: str | None, aggregates: dict[str, Any], as_json: bool
) -> None:
    if as_json:
        out = {
            "folds": [r.to_dict() for r in reports],
            "eval_group": group,
            "aggregates": {m: dataclasses.asdict(a) for m, a in aggregates.items()},
        }
        click.echo(dumps(out))
        return
    first = reports[0]
    click.echo(f"wrote {first.path}: the map of fold 0 ({len(first.indices)} points)")
    for report in reports:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in report.quality.items())
        click.echo(f"  {report.model_name}: {figures}")
    for name, agg in aggregates.items():
        std = "n/a" if agg.std is None else f"{agg.std:.4f}"
        click.echo(f"  {name:<18} {agg.mean:.4f} ± {std} over {agg.n} folds")
    if group is not None:
        click.echo(f"recorded as the CV group of eval runs {group}")


COMMANDS = [embed_command]
