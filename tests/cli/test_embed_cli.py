"""``arch embed``: a trained digits ViT's validation split mapped, its quality (kNN accuracy of
the embeddings against the raw pixels, trustworthiness) recorded as an eval run; a CV group's
folds as a CV group of eval runs with mean ± std; the same seed draws the same map; a token
table with its nearest tokens; bad input exits 2 with a message.

The registry (module scope) holds a digits ViT trained by ``arch train`` (one run), the same
spec cross-validated over two folds for one epoch, and a run without a checkpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from archlab import compile_spec
from archlab.cli import cli
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@dataclass(frozen=True)
class Setup:
    root: Path
    registry: str
    trained: str
    group: str
    bare: str
    vit: Path
    gpt: Path


def _train(registry: str, *flags: str) -> dict:
    code, out, err = run(
        "train", str(VIT), "--data", "digits", "--device", "cpu", "--registry", registry,
        "--batch-size", "64", "--lr", "3e-3", "--warmup", "0.5", "--json", *flags,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("embed-cli")
    registry = f"sqlite:///{root / 'r.db'}"
    trained = str(_train(registry, "--epochs", "8")["runs"][0]["id"])
    group = _train(registry, "--epochs", "1", "--folds", "2")["group"]["id"]
    with Registry(registry) as reg, reg.start_run(json.loads(VIT.read_text()), {}) as bare:
        bare.log_metrics({"train_loss": 2.3}, step=0)
    vit = root / "vit.safetensors"
    compile_spec(VIT, seed=0).save(vit)
    doc = json.loads((ROOT / "specs/gpt-tiny.json").read_text())
    doc["inputs"]["ids"]["vocab_size"] = 256  # spelled as bytes
    gpt = root / "gpt.safetensors"
    compile_spec(doc, seed=0).save(gpt)
    yield Setup(root, registry, trained, str(group), bare.id, vit, gpt)


def test_help_lists_the_command() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "arch embed MODEL|RUN" in out
    code, out, _ = run("embed", "--help")
    assert code == 0 and "--neighbours" in out and "--baseline" in out


def test_a_run_maps_its_validation_split_and_records_its_quality(setup: Setup) -> None:
    picture, points = setup.root / "map.png", setup.root / "points.json"
    code, out, err = run(
        "embed", setup.trained, "--registry", setup.registry, "--method", "pca",
        "--baseline", "raw", "-o", str(picture), "--json", str(points), "--print-json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    doc = json.loads(points.read_text())
    assert doc["method"] == "pca" and len(doc["points"]) == report["samples"] == 360
    assert {"x", "y", "label", "index"} == set(doc["points"][0])
    assert len({p["index"] for p in doc["points"]}) == 360  # one point per sample
    assert picture.stat().st_size > 10_000
    quality = report["quality"]
    print(f"digits ViT, 8 epochs: kNN acc {quality['knn_acc']:.3f}, raw pixels "
          f"{quality['knn_acc_raw']:.3f}, trustworthiness {quality['trustworthiness']:.3f}")  # fmt: skip
    assert quality["knn_acc"] > 0.6  # chance is 0.1
    assert 0.5 < quality["trustworthiness"] <= 1.0
    with Registry(setup.registry) as reg:
        evaluated = reg.get(report["eval_run"])
        assert evaluated.kind == "eval" and evaluated.tags["evaluates"] == setup.trained
        assert evaluated.config["evaluation"] == "embed"
        assert {"knn_acc", "knn_acc_raw", "trustworthiness"} == set(evaluated.metrics)
        assert {a.kind for a in evaluated.artifacts} == {"embedding-map", "embedding-points"}


def test_the_same_seed_draws_the_same_map(setup: Setup) -> None:
    def points(seed: int) -> list[tuple[float, float]]:
        target = setup.root / f"seed{seed}.json"
        code, _, err = run(
            "embed", str(setup.vit), "--data", "npz:" + str(_small_digits(setup.root)),
            "--seed", str(seed), "--no-record", "-o", str(setup.root / "tsne.png"),
            "--json", str(target),
        )  # fmt: skip
        assert code == 0, err
        return [(p["x"], p["y"]) for p in json.loads(target.read_text())["points"]]

    first = points(0)
    assert points(0) == first and points(1) != first


def _small_digits(root: Path) -> Path:
    """The first 150 digits as an npz file: a t-SNE of a few seconds."""
    import numpy as np
    from sklearn.datasets import load_digits

    path = root / "digits150.npz"
    if not path.exists():
        digits = load_digits()
        images = (digits.images[:150] / 16.0).astype("float32")[:, None]
        np.savez(path, x=images, y=digits.target[:150])
    return path


def test_a_group_records_one_eval_run_per_fold_with_mean_and_std(setup: Setup) -> None:
    code, out, err = run(
        "embed", setup.group, "--registry", setup.registry, "--method", "pca",
        "-o", str(setup.root / "fold0.png"),
    )  # fmt: skip
    assert code == 0, err
    assert "knn_acc" in out and "± " in out and "over 2 folds" in out
    group = out.split("recorded as the CV group of eval runs ")[1].split()[0]
    with Registry(setup.registry) as reg:
        aggregates = reg.group(group).aggregates
        assert aggregates["knn_acc"].n == 2 and aggregates["trustworthiness"].n == 2
        kinds = {reg.get(r).kind for r in reg.group(group).runs}
    assert kinds == {"eval"}


def test_a_sample_and_a_token_have_nearest_neighbours(setup: Setup) -> None:
    code, out, err = run(
        "embed", str(setup.vit), "--data", "npz:" + str(_small_digits(setup.root)),
        "--method", "pca", "--neighbours", "7", "-k", "4", "-o", str(setup.root / "n.png"),
    )  # fmt: skip
    assert code == 0, err
    lines = out.split("nearest to row 7 by cosine similarity:\n")[1].strip().splitlines()
    assert len(lines) == 4 and all(" 7 " not in f" {line.split()[0]} " for line in lines)
    tokens = setup.root / "tokens.json"
    code, out, err = run(
        "embed", str(setup.gpt), "--tokens", "--method", "pca", "--neighbours", "e", "-k", "5",
        "-o", str(setup.root / "tokens.png"), "--json", str(tokens),
    )  # fmt: skip
    assert code == 0, err
    assert len(json.loads(tokens.read_text())["points"]) == 256
    assert out.count("\n  ") == 5 and "nearest to e by cosine similarity" in out


def test_a_token_classifier_is_measured_against_bag_of_tokens(
    setup: Setup, token_classifier: Callable[..., dict[str, Any]]
) -> None:
    """Token inputs with padding: mapped, kNN by leave-one-out, the one-hot baseline beside."""
    import numpy as np

    spec = token_classifier(depth=1)
    weights = setup.root / "tokens.safetensors"
    compile_spec(spec, seed=0).save(weights)
    rng = np.random.default_rng(0)
    x = rng.integers(1, 32, (60, 12))
    mask = np.arange(12)[None, :] < rng.integers(4, 13, 60)[:, None]
    x[~mask] = 0
    np.savez(setup.root / "tokens.npz", x=x, y=np.arange(60) % 3, ids_mask=mask)
    code, out, err = run(
        "embed", str(weights), "--data", f"npz:{setup.root / 'tokens.npz'}", "--method", "pca",
        "--baseline", "onehot", "--print-json", "-o", str(setup.root / "tokens-map.png"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["samples"] == 60 and report["eval_run"] is None  # a weights file: no run
    assert set(report["quality"]) == {"knn_acc", "knn_acc_onehot", "trustworthiness"}


def test_split_all_maps_every_row_of_the_runs_data(setup: Setup) -> None:
    code, out, err = run(
        "embed", setup.trained, "--registry", setup.registry, "--method", "pca", "--split",
        "all", "--no-record", "--print-json", "-o", str(setup.root / "all.png"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["samples"] == 1797 and report["eval_run"] is None
    assert "every row of run" in report["data"] and report["quality"]["knn_acc"] > 0.6


def test_a_missing_extra_says_which_to_install(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    code, out, err = run(
        "embed", str(setup.vit), "--data", "npz:" + str(_small_digits(setup.root)),
        "--method", "umap", "-o", str(setup.root / "umap.png"),
    )  # fmt: skip
    assert code == 2 and "pip install 'archlab[umap]'" in err and "Traceback" not in out + err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("VIT", "--node", "nosuch"), "unknown node 'nosuch'"),
        (("BARE",), "has no checkpoint"),
        (("nosuchrun",), "nosuchrun: no such file or run in this registry"),
        (("VIT", "--data", "text:README.md"), "text"),
        (("VIT", "--split", "val"), "--split val maps a run's own validation split"),
        (("VIT", "-o", "x.txt"), "name a .png, .svg or .pdf file"),
        (("GPT", "--tokens", "--neighbours", "no-such-token"), "no token spells"),
        (("VIT", "--neighbours", "x"), "is not a row of the data"),
    ],
)
def test_bad_input_exits_2(setup: Setup, args: tuple[str, ...], message: str) -> None:
    names = {"VIT": str(setup.vit), "BARE": setup.bare, "GPT": str(setup.gpt)}
    first, *rest = args
    data = [] if "--data" in rest or "--tokens" in rest or first != "VIT" else ["--data", "digits"]
    code, out, err = run(
        "embed", names.get(first, first), *data, "--registry", setup.registry,
        "--method", "pca", "-o", str(setup.root / "bad.png"), *rest,
    )  # fmt: skip
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in out + err
