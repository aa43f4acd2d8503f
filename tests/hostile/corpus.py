"""The hostile-input corpus: bad specs, data, bundles, caches, paths and faults, each a Case.

A case writes its files into an empty folder and returns the `snn` arguments to run there; the
harness (test_corpus.py) runs them and asserts the exit code, that no traceback and no "bug in snn"
appears, and that stderr names the thing (`says`). Classes follow the issue's (`kind`):

    silent    results that were silently wrong: now refused, or failed (NaN parity, leakage, ...)
    exit      bad input that was reported as a bug (exit 1): now exit 2 naming the input
    resource  values that would allocate gigabytes: refused before allocating, the memory named
    message   messages that misled (a folder "does not exist"): now say what the path is
    fault     crash hygiene that one command shows (stale scratch, orphaned runs, a full disk)

`python -m tests.hostile.corpus OUT` writes every case into OUT/<id>/ and prints its command.
No file here is large: data is generated, at most a few hundred rows.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROWS, TEST_ROWS = 400, 150


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    build: Callable[[Workspace], list[str]]
    exit_code: int
    says: tuple[str, ...]
    check: Callable[[Workspace], None] | None = None  # more to assert after the run (files, runs)


@dataclass
class Workspace:
    """The case's folder, and a trained run (spec, data, .snn with bundles) to copy from."""

    folder: Path
    trained: Path | None = None
    notes: dict = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.folder / name

    def copy_trained(self) -> Path:
        """The trained run's files, copied into the case folder (its spec is `spec.yaml`)."""
        shutil.copytree(self.trained, self.folder, dirs_exist_ok=True, symlinks=True)
        return self.folder / "spec.yaml"

    @property
    def bundle(self) -> Path:
        return self.folder / ".snn" / "bundles" / "tiny"


# ----------------------------------------------------------------------------- the base data and spec


def base_frame(rows: int = ROWS, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    c = rng.choice(["red", "green", "blue", "grey"], rows)
    b = rng.choice(["yes", "no"], rows)
    logit = 1.5 * x + (c == "red") - 0.5 * (b == "yes")
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pl.DataFrame({"x": x.round(3), "c": c, "b": b, "w": rng.uniform(0.5, 2, rows).round(2), "y": y})


def base_spec() -> dict:
    return {
        "version": 1,
        "name": "tiny",
        "data": {
            "format": "csv",
            "train": {"path": "train.csv"},
            "test": {"path": "test.csv"},
            "holdout": {"fraction": 0.2, "seed": 1},
            "label": {"column": "y"},
        },
        "features": [
            {"name": "x", "kind": "continuous", "discretizer": {"kind": "percentile", "bins": 8}},
            {"name": "c", "kind": "categorical"},
            {"name": "b", "kind": "binary"},
        ],
        "model": {"sparse_linear": {"width": 4}, "mlp": {"layers": [4]}},
        "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "seed": 3},
        "calibration": {"kind": "isotonic"},  # a calibrator file in the bundle, for the cases that damage it
        "validation": {"gates": {}},
    }


def write_base(ws: Workspace, frame: pl.DataFrame | None = None, test: pl.DataFrame | None = None) -> None:
    (frame if frame is not None else base_frame()).write_csv(ws.path("train.csv"))
    (test if test is not None else base_frame(TEST_ROWS, seed=1)).write_csv(ws.path("test.csv"))


def write_spec(ws: Workspace, spec: dict, name: str = "spec.yaml") -> Path:
    path = ws.path(name)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def set_path(spec: dict, dotted: str, value) -> dict:
    """A copy of `spec` with the value at a dotted path (list indices as numbers) replaced."""
    spec = copy.deepcopy(spec)
    parts = dotted.split(".")
    node = spec
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


CASES: list[Case] = []


def case(id: str, kind: str, exit_code: int, *says: str, check=None):
    """Register the decorated builder as a case."""

    def register(build):
        CASES.append(Case(id, kind, build, exit_code, says, check))
        return build

    return register


def spec_case(id: str, kind: str, edits: dict, exit_code: int, *says: str, command: str = "fit"):
    """A case that edits the base spec (dotted path -> value) and runs `command` on it."""

    def build(ws: Workspace) -> list[str]:
        write_base(ws)
        spec = base_spec()
        for dotted, value in edits.items():
            spec = set_path(spec, dotted, value)
        return [command, str(write_spec(ws, spec))]

    CASES.append(Case(id, kind, build, exit_code, says))


def text_case(id: str, kind: str, text: bytes | Callable[[], bytes], exit_code: int, *says: str):
    """A case whose spec file holds these exact bytes."""

    def build(ws: Workspace) -> list[str]:
        write_base(ws)
        ws.path("spec.yaml").write_bytes(text() if callable(text) else text)
        return ["fit", str(ws.path("spec.yaml"))]

    CASES.append(Case(id, kind, build, exit_code, says))


def data_case(
    id: str,
    kind: str,
    write: Callable[[Workspace], None],
    exit_code: int,
    *says: str,
    edits: dict | None = None,
    command: str = "fit",
):
    """A case with the base spec (edited) over data that `write` puts in the folder."""

    def build(ws: Workspace) -> list[str]:
        write_base(ws)
        write(ws)
        spec = base_spec()
        for dotted, value in (edits or {}).items():
            spec = set_path(spec, dotted, value)
        return [command, str(write_spec(ws, spec))]

    CASES.append(Case(id, kind, build, exit_code, says))


def yaml_text(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


# ----------------------------------------------------------------------------- silently wrong, now refused


def _online_predictions(ws: Workspace, edit: Callable[[pl.DataFrame], pl.DataFrame]) -> list[str]:
    spec = ws.copy_trained()
    online = pl.read_parquet(ws.path("online.parquet"))
    edit(online).write_parquet(ws.path("online_edited.parquet"))
    return ["validate", str(spec), "--compare", str(ws.path("online_edited.parquet"))]


def _score_at(rows: list[int], value) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda df: df.with_columns(
        pl.when(pl.col("row_id").is_in(rows)).then(pl.lit(value, pl.Float64)).otherwise(pl.col("score")).alias("score")
    )


for _id, _edit, _code, _says in [
    ("parity-some-nan", _score_at([3, 17], float("nan")), 3, ("2 of them NaN",)),
    (
        "parity-all-nan",
        lambda df: df.with_columns(pl.lit(float("nan")).alias("score")),
        3,
        (f"{TEST_ROWS} of them NaN",),
    ),
    ("parity-null-scores", _score_at([5], None), 3, ("1 of them NaN",)),
    ("parity-infinite-score", _score_at([8], float("inf")), 3, ("parity: 1 rows differ",)),
    ("parity-rows-twice", lambda df: pl.concat([df, df]), 2, ("repeats keys",)),
    ("parity-one-row-twice", lambda df: pl.concat([df, df.head(1)]), 2, ("repeats keys such as [0]",)),
    ("parity-rows-missing", lambda df: df.head(100), 3, ("50 offline rows missing online",)),
    ("parity-perturbed-row", _score_at([42], 0.123456), 3, ("[42]",)),
    ("parity-empty-file", lambda df: df.head(0), 3, (f"{TEST_ROWS} offline rows missing online",)),
]:
    CASES.append(Case(_id, "silent", lambda ws, e=_edit: _online_predictions(ws, e), _code, _says))

spec_case(
    "feature-is-the-label",
    "silent",
    {"features.1": {"name": "y", "kind": "categorical"}},
    2,
    "feature 'y' is the label",
)
spec_case(
    "feature-is-the-weight",
    "silent",
    {"data.weight": "w", "features.0": {"name": "w", "kind": "continuous"}},
    2,
    "feature 'w' is the weight",
)
spec_case("feature-is-the-oracle", "silent", {"data.oracle": "x"}, 2, "feature 'x' is the oracle")
spec_case("key-is-the-label", "silent", {"data.key": "y"}, 2, "data.label.column and data.key are both 'y'")
spec_case("lr-infinite", "silent", {"train.lr": float("inf")}, 2, "train.lr: Input should be a finite number")
spec_case("lr-nan", "silent", {"train.lr": float("nan")}, 2, "train.lr: Input should be a finite number")
spec_case("holdout-fraction-nan", "silent", {"data.holdout.fraction": float("nan")}, 2, "data.holdout.fraction")
spec_case(
    "parity-atol-infinite", "silent", {"parity.atol": float("inf")}, 2, "parity.atol: Input should be a finite number"
)
spec_case("gate-min-nan", "silent", {"validation.gates": {"auc": {"min": float("nan")}}}, 2, "validation.gates.auc.min")
spec_case(
    "mlp-layer-zero",
    "silent",
    {"model.mlp.layers": [0]},
    2,
    "model.mlp.layers.0: Input should be greater than or equal to 1",
)
spec_case("sparse-width-zero", "silent", {"model.sparse_linear.width": 0}, 2, "model.sparse_linear.width")
spec_case("decay-factor-negative", "silent", {"train.lr": 2.0, "train.weight_decay": 0.6}, 2, "lr·weight_decay")
spec_case("lr-schedule-unknown", "exit", {"train.lr_schedule": "cosine"}, 2, "train.lr_schedule")
spec_case("table-l2-negative", "silent", {"train.table_l2": -1e-4}, 2, "train.table_l2: Input should be greater")
spec_case("weight-decay-infinite", "silent", {"train.weight_decay": float("inf")}, 2, "train.weight_decay")
spec_case("calibration-one-fold", "exit", {"calibration": {"kind": "auto", "folds": 1}}, 2, "calibration.auto.folds")
spec_case(
    "calibration-candidates-repeat",
    "exit",
    {"calibration": {"kind": "auto", "candidates": ["platt", "platt"]}},
    2,
    "repeat a kind",
)
spec_case("calibration-unknown-kind", "exit", {"calibration": {"kind": "spline"}}, 2, "calibration")


def _weights(values) -> Callable[[Workspace], None]:
    def write(ws: Workspace) -> None:
        base_frame().with_columns(pl.Series("w", values(ROWS))).write_csv(ws.path("train.csv"))

    return write


data_case(
    "weight-beyond-float32",
    "silent",
    _weights(lambda n: [1.0] * (n - 1) + [1e39]),
    2,
    "beyond float32",
    edits={"data.weight": "w"},
)
data_case(
    "weights-sum-to-zero",
    "silent",
    _weights(lambda n: [0.0] * n),
    2,
    "weights (column 'w') sum to 0",
    edits={"data.weight": "w"},
)
data_case(
    "weights-negative",
    "silent",
    _weights(lambda n: [-1.0] + [1.0] * (n - 1)),
    2,
    "weight column 'w' must hold finite numbers >= 0",
    edits={"data.weight": "w"},
)
data_case(
    "weights-infinite",
    "silent",
    _weights(lambda n: ["inf"] + ["1.0"] * (n - 1)),
    2,
    "weight column 'w' must hold finite numbers >= 0",
    edits={"data.weight": "w"},
)


def _bundle_weights(edit: Callable[[dict], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        ws.copy_trained()
        bundle = ws.path("bundle")
        shutil.copytree(ws.bundle, bundle)
        with np.load(bundle / "weights.npz") as npz:
            weights = {k: npz[k] for k in npz.files}
        edit(weights)
        np.savez(bundle / "weights.npz", **weights)
        return ["predict", str(bundle), str(ws.path("test.csv")), "-o", str(ws.path("out.parquet"))]

    return build


def _poison(value: float) -> Callable[[dict], None]:
    def edit(weights: dict) -> None:
        weights["mlp.weight_0"] = weights["mlp.weight_0"].copy()
        weights["mlp.weight_0"][0, 0] = value

    return edit


def _no_output(ws: Workspace) -> None:
    assert not ws.path("out.parquet").exists(), "a failed predict wrote its output"


CASES.append(
    Case(
        "bundle-nan-weight",
        "silent",
        _bundle_weights(_poison(float("nan"))),
        2,
        ("weight mlp.weight_0 holds 1 NaN or infinite values",),
        _no_output,
    )
)
CASES.append(
    Case(
        "bundle-infinite-weight",
        "silent",
        _bundle_weights(_poison(float("-inf"))),
        2,
        ("weight mlp.weight_0 holds 1 NaN or infinite values",),
        _no_output,
    )
)


def _predict_missing_column(online: bool) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        ws.copy_trained()
        pl.read_csv(ws.path("test.csv")).drop("c").write_csv(ws.path("no_c.csv"))
        return ["predict", str(ws.bundle), str(ws.path("no_c.csv")), "-o", str(ws.path("out.parquet"))] + (
            ["--online"] if online else []
        )

    return build


CASES.append(
    Case(
        "predict-online-missing-feature",
        "silent",
        _predict_missing_column(True),
        2,
        ("column(s) c not found",),
        _no_output,
    )
)
CASES.append(
    Case(
        "predict-batch-missing-feature",
        "silent",
        _predict_missing_column(False),
        2,
        ("column(s) c not found",),
        _no_output,
    )
)


def _parquet_with(column: str, series: Callable[[int], pl.Series], label: bool = False) -> Callable[[Workspace], None]:
    def write(ws: Workspace) -> None:
        for name, rows, seed in (("train.parquet", ROWS, 0), ("test.parquet", TEST_ROWS, 1)):
            base_frame(rows, seed).with_columns(series(rows).alias(column)).write_parquet(ws.path(name))

    return write


_PARQUET = {"data.format": "parquet", "data.train.path": "train.parquet", "data.test.path": "test.parquet"}
data_case(
    "parquet-struct-feature",
    "silent",
    _parquet_with("c", lambda n: pl.Series([{"a": i % 3, "b": "z"} for i in range(n)])),
    2,
    "feature 'c' (categorical)",
    "Struct",
    edits=_PARQUET,
)
data_case(
    "parquet-list-feature",
    "silent",
    _parquet_with("x", lambda n: pl.Series([[i, i + 1] for i in range(n)])),
    2,
    "feature 'x' (continuous)",
    "List",
    edits=_PARQUET,
)
data_case(
    "parquet-binary-feature",
    "silent",
    _parquet_with("b", lambda n: pl.Series([b"\x00\x01"] * n)),
    2,
    "feature 'b' (binary)",
    "Binary",
    edits=_PARQUET,
)

_ID_LIST = {"features.1": {"name": "c", "kind": "id_list"}}
data_case(
    "id-list-of-structs",
    "silent",
    _parquet_with("c", lambda n: pl.Series([[{"a": i}] for i in range(n)])),
    2,
    "feature 'c' (id_list)",
    "lists of ids",
    edits={**_PARQUET, **_ID_LIST},
)
spec_case(
    "id-list-weighted-without-weights",
    "silent",
    {"features.1": {"name": "c", "kind": "id_list", "weighted": True}},
    2,
    "id list 'c'",
    "has no ':weight'",
)
spec_case(
    "field-embedding-over-id-lists",
    "exit",
    {**_ID_LIST, "model.interactions": {"dim": 4}},
    2,
    "field_embedding takes one entry per feature",
    "embedding_bag",
)
_BAGS = {
    "model": {
        "blocks": [
            {"name": "bags", "kind": "embedding_bag", "inputs": {"entries": "features"}, "features": ["nope"]},
            {"name": "flat", "kind": "concat", "inputs": {"bags": "bags.out"}},
            {"name": "head", "kind": "logit", "inputs": {"x": "flat.out"}},
        ]
    }
}
spec_case("embedding-bag-unknown-feature", "exit", _BAGS, 2, "block 'bags'", "feature 'nope' is not one of")
spec_case(
    "dense-features-over-binned",
    "exit",
    {
        "model": {
            "blocks": [
                {"name": "dense", "kind": "dense_features", "inputs": {"entries": "features"}, "features": ["x"]},
                {"name": "head", "kind": "logit", "inputs": {"x": "dense.out"}},
            ]
        }
    },
    2,
    "feature 'x' has id entries",
    "embedding_bag",
)
spec_case(
    "transform-with-bins",
    "exit",
    {"features.0.discretizer": {"kind": "log1p", "bins": 8}},
    2,
    "discretizer",
    "bins",
)

_TREES = {"name": "t", "kind": "tree_leaves", "inputs": ["x", "c"], "trees": 3}
spec_case(
    "tree-input-is-the-label",
    "silent",
    {"features.2": {**_TREES, "inputs": ["x", "y"]}},
    2,
    "feature 'y' is the label",
    "remove it",
)
spec_case(
    "tree-input-not-in-data", "exit", {"features.2": {**_TREES, "inputs": ["x", "nope"]}}, 2, "column(s) nope not found"
)
spec_case(
    "dense-features-over-tree-leaves",
    "exit",
    {
        "features.2": _TREES,
        "model": {
            "blocks": [
                {"name": "dense", "kind": "dense_features", "inputs": {"entries": "features"}, "features": ["t"]},
                {"name": "head", "kind": "logit", "inputs": {"x": "dense.out"}},
            ]
        },
    },
    2,
    "feature 't' has list entries",
    "embedding_bag",
)

spec_case(
    "position-served-as-an-unseen-slot",
    "silent",
    {"features.1": {"name": "c", "kind": "position", "serve_as": "purple"}},
    2,
    "served as 'purple', which no train row has",
    "serve_as",
)
spec_case(
    "mixed-dims-budget-below-one-per-id",
    "exit",
    {
        "model": {
            "blocks": [
                {"name": "mixed", "kind": "mixed_embedding", "inputs": {"entries": "features"}, "budget": 3},
                {"name": "flat", "kind": "concat", "inputs": {"m": "mixed.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "flat.out"}},
            ]
        }
    },
    2,
    "block 'mixed' (mixed_embedding): budget 3 is below",
)

spec_case(
    "shares-a-feature-that-does-not-exist",
    "exit",
    {"features.1": {"name": "c", "kind": "categorical", "shares": "colour"}},
    2,
    "feature 'c' shares 'colour', which is not another categorical or id-list feature",
)
spec_case(
    "shared-table-of-two-encodings",
    "silent",
    {
        "model": {
            "blocks": [
                {
                    "name": "bags",
                    "kind": "embedding_bag",
                    "inputs": {"entries": "features"},
                    "features": ["c", "b"],
                    "shared": {"both": ["c", "b"]},
                },
                {"name": "flat", "kind": "concat", "inputs": {"bags": "bags.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "flat.out"}},
            ]
        }
    },
    2,
    "shared table 'both'",
    "give them one encoding",
)


def _predict_over(target: Callable[[Workspace], Path]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        ws.copy_trained()
        out = target(ws)
        ws.notes["before"] = out.read_bytes()
        return ["predict", str(ws.bundle), str(ws.path("test.csv")), "-o", str(out)]

    return build


def _unchanged(target: Callable[[Workspace], Path]) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        assert target(ws).read_bytes() == ws.notes["before"], "an input was overwritten"

    return check


for _id, _target in [
    ("predict-output-is-the-input", lambda ws: ws.path("test.csv")),
    ("predict-output-is-a-bundle-file", lambda ws: ws.bundle / "weights.npz"),
]:
    CASES.append(Case(_id, "silent", _predict_over(_target), 2, ("is also an input",), _unchanged(_target)))


def _pipe_rows(ws: Workspace) -> None:
    frame = base_frame().with_columns(pl.format("|{}", pl.col("c")).alias("c"))
    frame.write_csv(ws.path("train.csv"))


data_case("csv-rows-starting-with-pipe-are-kept", "silent", _pipe_rows, 0, "fit on 323 train rows")
text_case(
    "yaml-key-given-twice",
    "silent",
    lambda: (yaml_text(base_spec()) + "train: {epochs: 1}\n").encode(),
    2,
    "key 'train' is given twice",
)
text_case(
    "yaml-nested-key-given-twice",
    "silent",
    lambda: yaml_text(base_spec()).replace("  batch_size: 64\n", "  batch_size: 64\n  batch_size: 32\n").encode(),
    2,
    "key 'batch_size' is given twice",
)


def _oracle_outside(ws: Workspace) -> None:
    for name, rows, seed in (("train.csv", ROWS, 0), ("test.csv", TEST_ROWS, 1)):
        base_frame(rows, seed).with_columns((pl.col("x") * 5).alias("p")).write_csv(ws.path(name))


data_case(
    "oracle-outside-0-1",
    "silent",
    _oracle_outside,
    2,
    "data.oracle column 'p' must hold probabilities",
    edits={"data.oracle": "p"},
    command="run",
)


# ----------------------------------------------------------------------------- bad input reported as a bug: exit 2


text_case(
    "spec-not-utf8",
    "exit",
    lambda: yaml_text(base_spec()).replace("tiny", "t\xe9").encode("latin-1"),
    2,
    "is not UTF-8 text",
)
text_case("spec-deeply-nested", "exit", b"version: 1\nname: " + b"[" * 20000 + b"]" * 20000 + b"\n", 2, "too deeply")
text_case(
    "spec-alias-bomb",
    "exit",
    lambda: (  # nine levels, each ten aliases of the one before: 10^9 values once expanded
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    ).encode(),
    2,
    "expands to more than",
)
text_case("spec-python-tag", "exit", b"version: !!python/object/apply:os.system ['true']\n", 2, "is not valid YAML")
text_case("spec-top-level-list", "exit", b"- version: 1\n", 2, "must be a YAML mapping")
text_case("spec-empty", "exit", b"", 2, "must be a YAML mapping")
text_case(
    "spec-unset-variable",
    "exit",
    lambda: yaml_text(base_spec()).replace("train.csv", "${SNN_HOSTILE_UNSET}").encode(),
    2,
    "environment variable SNN_HOSTILE_UNSET is not set",
)
spec_case("seed-beyond-int64", "exit", {"train.seed": 2**70}, 2, "train.seed: Input should be less than or equal to")
spec_case("seed-negative", "exit", {"train.seed": -1}, 2, "train.seed: Input should be greater than or equal to 0")
spec_case("holdout-seed-beyond-int64", "exit", {"data.holdout.seed": 2**64}, 2, "data.holdout.seed")
spec_case(
    "downsampling-seed-beyond-int64",
    "exit",
    {"train.negative_downsampling": {"rate": 0.5, "seed": 2**64}},
    2,
    "train.negative_downsampling.seed",
)
spec_case("mlp-layer-negative", "exit", {"model.mlp.layers": [-1]}, 2, "model.mlp.layers.0")
spec_case("rows-beyond-int64", "exit", {"data.test.rows": [0, 2**64]}, 2, "data.test.rows.1")
spec_case("rows-reversed", "exit", {"data.test.rows": [10, 5]}, 2, "rows must be [start, stop)")
spec_case("name-dot-dot", "exit", {"name": ".."}, 2, "name: String should match pattern")
spec_case("name-dot", "exit", {"name": "."}, 2, "name: String should match pattern")
spec_case("name-with-slash", "exit", {"name": "a/b"}, 2, "name: String should match pattern")
spec_case("name-too-long", "exit", {"name": "n" * 300}, 2, "name: String should match pattern")
spec_case("separator-two-characters", "exit", {"data.separator": ";;"}, 2, "separator must be exactly one character")
spec_case("separator-newline", "exit", {"data.separator": "\n"}, 2, "separator must be exactly one character")
spec_case("unknown-feature-kind", "exit", {"features.0": {"name": "x", "kind": "embedding"}}, 2, "features.0")
spec_case("version-2", "exit", {"version": 2}, 2, "version: Input should be 1")
spec_case("workdir-is-a-file", "exit", {"workdir": "train.csv"}, 2, "workdir", "is (or lies under) a file")


@case("force-step-unknown", "exit", 2, "Invalid value for '--force-step'")
def _force_step_unknown(ws: Workspace) -> list[str]:
    write_base(ws)
    return ["fit", str(write_spec(ws, base_spec())), "--force-step", "deploy"]


def _own_row_id(ws: Workspace) -> None:
    base_frame().with_row_index("row_id").write_csv(ws.path("train.csv"))


data_case("csv-with-its-own-row-id", "exit", _own_row_id, 2, "has its own 'row_id' column", "set data.key: row_id")
data_case(
    "csv-with-its-own-row-id-as-key",
    "exit",
    _own_row_id,
    0,
    "[train] done",
    edits={"data.key": "row_id", "data.test": None},
)
data_case(
    "parquet-list-label",
    "exit",
    _parquet_with("y", lambda n: pl.Series([[1]] * n)),
    2,
    "label column",
    "List",
    edits=_PARQUET,
)
data_case(
    "parquet-struct-key",
    "exit",
    _parquet_with("k", lambda n: pl.Series([{"a": i} for i in range(n)])),
    2,
    "key column",
    "Struct",
    edits={**_PARQUET, "data.key": "k"},
)


def _parquet_bytes(edit: Callable[[bytes], bytes]) -> Callable[[Workspace], None]:
    def write(ws: Workspace) -> None:
        base_frame().write_parquet(ws.path("train.parquet"))
        base_frame(TEST_ROWS, 1).write_parquet(ws.path("test.parquet"))
        ws.path("train.parquet").write_bytes(edit(ws.path("train.parquet").read_bytes()))

    return write


def _flip_middle(data: bytes) -> bytes:
    middle = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        middle[i] ^= 0xFF
    return bytes(middle)


def _flip_footer(data: bytes) -> bytes:
    footer = bytearray(data)
    for i in range(len(data) - 40, len(data) - 8):
        footer[i] ^= 0xFF
    return bytes(footer)


data_case(
    "parquet-truncated",
    "exit",
    _parquet_bytes(lambda d: d[: len(d) // 2]),
    2,
    "truncated or damaged parquet",
    edits=_PARQUET,
)
data_case("parquet-flipped-bytes", "exit", _parquet_bytes(_flip_middle), 2, "cannot read", edits=_PARQUET)
data_case("parquet-flipped-footer", "exit", _parquet_bytes(_flip_footer), 2, "cannot read", edits=_PARQUET)
data_case(
    "csv-under-format-parquet", "exit", lambda ws: None, 2, "is not a parquet file", edits={"data.format": "parquet"}
)
data_case(
    "parquet-under-format-csv",
    "exit",
    lambda ws: base_frame().write_parquet(ws.path("train.pq")),
    2,
    "is a parquet file but data.format is csv",
    edits={"data.train.path": "train.pq"},
)
data_case(
    "csv-gzipped",
    "exit",
    lambda ws: ws.path("train.csv.gz").write_bytes(gzip.compress(ws.path("train.csv").read_bytes())),
    2,
    "gzip-compressed",
    edits={"data.train.path": "train.csv.gz"},
)
data_case(
    "csv-not-utf8",
    "exit",
    lambda ws: ws.path("train.csv").write_bytes(ws.path("train.csv").read_bytes().replace(b"red", b"r\xe9d")),
    2,
    "cannot read",
)
data_case(
    "csv-ragged-line",
    "exit",
    lambda ws: ws.path("train.csv").write_text(ws.path("train.csv").read_text() + "1.0,red,yes,1.0,1,extra\n"),
    2,
    "cannot read",
)
data_case(
    "csv-duplicate-header",
    "exit",
    lambda ws: ws.path("train.csv").write_text(ws.path("train.csv").read_text().replace("x,c,b,w,y", "x,c,b,x,y", 1)),
    2,
    "names column(s) ['x'] more than once",
)
data_case(
    "label-outside-0-1",
    "exit",
    lambda ws: base_frame().with_columns(pl.lit(2).alias("y")).write_csv(ws.path("train.csv")),
    2,
    "label column 'y' has values outside [0, 1]",
)
data_case(
    "label-missing-values",
    "exit",
    lambda ws: (
        base_frame()
        .with_columns(pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("y")).alias("y"))
        .write_csv(ws.path("train.csv"))
    ),
    2,
    "label column 'y' has 1 missing",
)
data_case(
    "label-single-class",
    "exit",
    lambda ws: base_frame().with_columns(pl.lit(0).alias("y")).write_csv(ws.path("train.csv")),
    2,
    "single label value",
)
data_case(
    "criteo-wrong-columns",
    "exit",
    lambda ws: ws.path("c.txt").write_text("1\t2\t3\n0\t4\t5\n"),
    2,
    "cannot read",
    edits={
        "data.format": "criteo",
        "data.train.path": "c.txt",
        "features": [{"name": "I1", "kind": "continuous"}],
        "data.label.column": "label",
    },
)
data_case(
    "continuous-feature-is-text",
    "exit",
    lambda ws: base_frame().with_columns(pl.col("c").alias("x")).write_csv(ws.path("train.csv")),
    2,
    "'x' is continuous but has non-numeric values",
)
data_case(
    "binary-feature-has-three-values",
    "exit",
    lambda ws: base_frame().with_columns(pl.col("c").alias("b")).write_csv(ws.path("train.csv")),
    2,
    "feature 'b' is binary but has values",
)
data_case(
    "key-repeated",
    "exit",
    lambda ws: base_frame().with_columns((pl.int_range(pl.len()) % 10).alias("k")).write_csv(ws.path("train.csv")),
    2,
    "repeats keys",
    edits={"data.key": "k", "data.test": None},
)


def _bundle_file(name: str, edit: Callable) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        ws.copy_trained()
        bundle = ws.path("bundle")
        shutil.copytree(ws.bundle, bundle)
        path = bundle / name
        if name.endswith(".json"):
            obj = json.loads(path.read_text()) if path.exists() else None
            result = edit(obj)
            path.write_text(result if isinstance(result, str) else json.dumps(obj if result is None else result))
        else:
            path.write_bytes(edit(path.read_bytes()))
        return ["predict", str(bundle), str(ws.path("test.csv")), "-o", str(ws.path("out.parquet"))]

    return build


def _drop(key: str):
    return lambda obj: {k: v for k, v in obj.items() if k != key}


for _id, _name, _edit, _says in [
    ("bundle-recipe-without-data", "recipe.json", _drop("data"), "ValidationError"),
    ("bundle-recipe-without-features", "recipe.json", _drop("features"), "ValidationError"),
    (
        "bundle-recipe-rate-zero",
        "recipe.json",
        lambda o: {**o, "train": {**o["train"], "negative_downsampling": {"rate": 0}}},
        "negative_downsampling.rate",
    ),
    (
        "bundle-recipe-other-features",
        "recipe.json",
        lambda o: {**o, "features": o["features"][::-1]},
        "the recipe's features are not the feature map's",
    ),
    ("bundle-json-garbage", "bundle.json", lambda o: "{not json", "JSONDecodeError"),
    ("bundle-plan-garbage", "plan.json", lambda o: "[]", "plan format None"),
    (
        "bundle-plan-other-width",
        "plan.json",
        lambda o: {
            **o,
            "blocks": [{**o["blocks"][0], "spec": {**o["blocks"][0]["spec"], "width": 5}}] + o["blocks"][1:],
        },
        "do not match its blocks",
    ),
    ("bundle-calibrator-lengths", "calibrator.json", lambda o: {**o, "xs": o["xs"] + [1.5]}, "calibrator has"),
    ("bundle-calibrator-descending", "calibrator.json", lambda o: {**o, "ys": o["ys"][::-1]}, "not ascending"),
    ("bundle-calibrator-unknown-kind", "calibrator.json", lambda o: {**o, "kind": "spline"}, "has kind 'spline'"),
    (
        "bundle-calibrator-outside-0-1",
        "calibrator.json",
        lambda o: {**o, "ys": [y * 3 for y in o["ys"]]},
        "outside [0, 1]",
    ),
    (
        "bundle-feature-map-edges-text",
        "feature_map.json",
        lambda o: {**o, "encoders": [{**o["encoders"][0], "edges": ["a"]}] + o["encoders"][1:]},
        "feature map is corrupted",
    ),
    (
        "bundle-feature-map-vocabulary-numbers",
        "feature_map.json",
        lambda o: {**o, "encoders": [o["encoders"][0], {**o["encoders"][1], "vocabulary": [1, 2]}] + o["encoders"][2:]},
        "feature map is corrupted",
    ),
    ("bundle-weights-not-a-zip", "weights.npz", lambda b: b"not a zip", "is corrupted"),
    ("bundle-weights-truncated", "weights.npz", lambda b: b[: len(b) // 2], "is corrupted"),
]:
    CASES.append(Case(_id, "exit", _bundle_file(_name, _edit), 2, (_says,), _no_output))


def _cache_file(pattern: str, edit: Callable[[Path], None], command: str = "fit") -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        spec = ws.copy_trained()
        for path in sorted(ws.path(".snn").glob(pattern)):
            edit(path)
        return [command, str(spec)]

    return build


def _ids_out_of_range(path: Path) -> None:
    ids = np.fromfile(path, dtype=np.int32)
    ids[5] = 10**6
    ids.tofile(path)


for _id, _pattern, _edit, _command in [
    ("cache-step-json-garbage", "steps/train-*/step.json", lambda p: p.write_text("{"), "fit"),
    ("cache-step-json-other-key", "steps/prepare-*/step.json", lambda p: p.write_text('{"key": "x"}'), "fit"),
    (
        "cache-feature-map-garbage",
        "steps/prepare-*/feature_map.json",
        lambda p: p.write_text("[]"),
        "fit --force-step train",
    ),
    ("cache-ids-out-of-range", "steps/prepare-*/splits/train/ids.bin", _ids_out_of_range, "fit --force-step train"),
    (
        "cache-split-meta-missing",
        "steps/prepare-*/splits/validation/meta.json",
        lambda p: p.unlink(),
        "calibrate --force-step calibrate",
    ),
    (
        "cache-labels-truncated",
        "steps/prepare-*/splits/train/labels.bin",
        lambda p: p.write_bytes(p.read_bytes()[:8]),
        "fit --force-step train",
    ),
]:
    _cmd, *_extra = _command.split()
    CASES.append(
        Case(
            _id,
            "exit",
            lambda ws, p=_pattern, e=_edit, c=_cmd, x=tuple(_extra): _cache_file(p, e, c)(ws) + list(x),
            2,
            ("corrupted" if "meta" not in _id else "missing or corrupted", "--force"),
        )
    )


def _predict_to(target: Callable[[Workspace], Path]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        ws.copy_trained()
        return ["predict", str(ws.bundle), str(ws.path("test.csv")), "-o", str(target(ws))]

    return build


def _folder(ws: Workspace) -> Path:
    ws.path("outdir").mkdir()
    return ws.path("outdir")


CASES.append(Case("predict-output-is-a-folder", "exit", _predict_to(_folder), 2, ("is a folder",)))
CASES.append(
    Case(
        "predict-output-under-a-file",
        "exit",
        _predict_to(lambda ws: ws.path("test.csv") / "out.parquet"),
        2,
        ("is a file, not a folder",),
    )
)


def _predict_rows(rows: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: _predict_to(lambda w: w.path("o.parquet"))(ws) + ["--rows", rows]


CASES.append(Case("predict-rows-not-numbers", "exit", _predict_rows("a:b"), 2, ("is not START:STOP",)))
CASES.append(Case("predict-rows-beyond-int64", "exit", _predict_rows(f"0:{2**64}"), 2, ("is not START:STOP",)))


def _compare_file(write: Callable[[Workspace, pl.DataFrame], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        spec = ws.copy_trained()
        write(ws, pl.read_parquet(ws.path("online.parquet")))
        return ["validate", str(spec), "--compare", str(ws.path("compare.parquet"))]

    return build


for _id, _write, _says in [
    (
        "compare-key-as-text",
        lambda ws, df: df.with_columns(pl.col("row_id").cast(pl.String)).write_parquet(ws.path("compare.parquet")),
        "key column 'row_id' is String but the offline keys are Int64",
    ),
    (
        "compare-score-as-text",
        lambda ws, df: df.with_columns(pl.col("score").cast(pl.String)).write_parquet(ws.path("compare.parquet")),
        "column 'score' is String, not numbers",
    ),
    (
        "compare-not-parquet",
        lambda ws, df: ws.path("compare.parquet").write_text("row_id,score\n1,0.5\n"),
        "is not a readable parquet file",
    ),
    (
        "compare-without-score",
        lambda ws, df: df.drop("score").write_parquet(ws.path("compare.parquet")),
        "lacks column(s) ['score']",
    ),
    ("compare-is-a-folder", lambda ws, df: ws.path("compare.parquet").mkdir(), "is a folder"),
]:
    CASES.append(Case(_id, "exit", _compare_file(_write), 2, (_says,)))


def _synth(args: Callable[[Workspace], list[str]]) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["data", "synth", *args(ws)]


def _spec_written(ws: Workspace) -> None:
    assert (ws.path("new") / "folder" / "s.yaml").is_file()


CASES.append(
    Case(
        "synth-spec-into-a-missing-folder",
        "exit",
        _synth(
            lambda ws: [str(ws.path("d.parquet")), "--rows", "50", "--spec", str(ws.path("new") / "folder" / "s.yaml")]
        ),
        0,
        ("wrote 50 rows",),
        _spec_written,
    )
)
CASES.append(
    Case(
        "synth-seed-negative",
        "exit",
        _synth(lambda ws: [str(ws.path("d.parquet")), "--rows", "5", "--seed", "-3"]),
        2,
        ("--seed -3 must be an integer",),
    )
)
CASES.append(
    Case("synth-output-is-a-folder", "exit", _synth(lambda ws: [str(_folder(ws)), "--rows", "5"]), 2, ("is a folder",))
)
CASES.append(
    Case(
        "synth-zero-rows",
        "exit",
        _synth(lambda ws: [str(ws.path("d.parquet")), "--rows", "0"]),
        2,
        ("--rows and --row-group must be at least 1",),
    )
)


spec_case("unknown-key", "exit", {"train.epochz": 3}, 2, "train.epochz: unknown key", "spec.yaml:")
spec_case("wrong-type", "exit", {"train.batch_size": "big"}, 2, "train.batch_size: Input should be a valid integer")
text_case("invalid-yaml", "exit", b"version: 1\nname: [unclosed\n", 2, "is not valid YAML")
spec_case(
    "feature-column-missing",
    "exit",
    {"features.0.name": "xx"},
    2,
    "column(s) xx not found",
    "the file has: x, c, b, w, y",
)
data_case("data-file-empty", "exit", lambda ws: ws.path("train.csv").write_text(""), 2, "is empty")
data_case(
    "continuous-feature-infinite",
    "exit",
    lambda ws: (
        base_frame()
        .with_columns(
            pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("inf")).otherwise(pl.col("x").cast(pl.String)).alias("x")
        )
        .write_csv(ws.path("train.csv"))
    ),
    2,
    "'x' has infinite values",
)
spec_case("train-and-test-overlap", "exit", {"data.test.path": "train.csv"}, 2, "data.train and data.test overlap")
spec_case(
    "train-and-test-overlap-allowed",
    "exit",
    {"data.test.path": "train.csv", "data.allow_overlap": True},
    0,
    "[train] done",
)


def _no_steps(ws: Workspace) -> None:
    assert not (ws.path(".snn") / "steps").exists(), "work was done before the tracking server was checked"


@case(
    "tracking-server-unreachable",
    "exit",
    1,
    "MLflow tracking server http://127.0.0.1:9 is unreachable",
    check=_no_steps,
)
def _tracking_unreachable(ws: Workspace) -> list[str]:
    write_base(ws)
    return ["fit", str(write_spec(ws, base_spec())), "--tracking-uri", "http://127.0.0.1:9"]


def _unseen_categories(ws: Workspace) -> list[str]:
    ws.copy_trained()
    frame = pl.read_csv(ws.path("test.csv")).head(5).with_columns(pl.lit("mauve").alias("c"))
    frame.write_csv(ws.path("unseen.csv"))
    return ["predict", str(ws.bundle), str(ws.path("unseen.csv")), "-o", str(ws.path("out.parquet"))]


def _scored_in_range(ws: Workspace) -> None:
    scores = pl.read_parquet(ws.path("out.parquet"))["score"].to_numpy()
    assert len(scores) == 5 and np.all((scores > 0) & (scores < 1))


CASES.append(
    Case(
        "unseen-category-takes-the-oov-id", "silent", _unseen_categories, 0, ("wrote 5 predictions",), _scored_in_range
    )
)
CASES.append(Case("predict-rows-reversed", "exit", _predict_rows("9:3"), 2, ("--rows '9:3' is not START:STOP",)))


@case("compare-file-missing", "message", 2, "missing.parquet does not exist")
def _compare_missing(ws: Workspace) -> list[str]:
    return ["validate", str(ws.copy_trained()), "--compare", str(ws.path("missing.parquet"))]


@case("a-failed-gate-exits-3", "silent", 3, "gate failed", "auc = ", "violates min 0.999")
def _failed_gate(ws: Workspace) -> list[str]:
    ws.copy_trained()
    return ["validate", str(write_spec(ws, set_path(base_spec(), "validation.gates", {"auc": {"min": 0.999}})))]


def _sparse_then_logit(head_reads: str, **sections) -> dict:
    """model: a written-out plan of a sparse linear layer and a logit reading `head_reads`."""
    blocks = [
        {"name": "sparse", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 4},
        {"name": "head", "kind": "logit", "inputs": {"x": head_reads}},
    ]
    return {"model": {**sections, "blocks": blocks}}


spec_case(
    "model-blocks-miswired",
    "exit",
    _sparse_then_logit("sparse.scaled"),
    2,
    "model: Value error, block 'head' input 'x' reads 'sparse.scaled', which is a scaled port",
)
spec_case(
    "model-blocks-and-sections",
    "exit",
    _sparse_then_logit("sparse.out", mlp={"layers": [2]}),
    2,
    "give either `blocks` or the sections",
)
spec_case(
    "model-block-kind-unknown",
    "exit",
    {"model": {"blocks": [{"name": "x", "kind": "transformer", "inputs": {}}]}},
    2,
    "model.blocks.0",
)


# ----------------------------------------------------------------------------- resource limits


spec_case("width-a-billion", "resource", {"model.sparse_linear.width": 10**9}, 2, "above the limit of 8,192", "GiB")
spec_case("mlp-layer-a-million", "resource", {"model.mlp.layers": [10**6]}, 2, "above the limit of 8,192", "GiB")
spec_case(
    "hash-buckets-1e11",
    "resource",
    {"features.1": {"name": "c", "kind": "categorical", "hash_buckets": 10**11}},
    2,
    "above the limit of 2,147,483,647",
    "GiB",
)
spec_case(
    "hashing-discretizer-buckets-2-40",
    "resource",
    {"features.0": {"name": "x", "kind": "continuous", "discretizer": {"kind": "hashing", "buckets": 2**40}}},
    2,
    "above the limit",
    "GiB",
)
spec_case("ece-bins-10-12", "resource", {"validation.ece_bins": 10**12}, 2, "above the limit of 10,000", "GiB")
spec_case("interaction-dim-a-million", "resource", {"model.interactions": {"dim": 10**6}}, 2, "model.interactions.dim")
spec_case("batch-size-10-12", "resource", {"train.batch_size": 10**12}, 2, "train.batch_size")
spec_case("epochs-10-12", "resource", {"train.epochs": 10**12}, 2, "train.epochs")
spec_case(
    "percentile-bins-a-million",
    "resource",
    {"features.0": {"name": "x", "kind": "continuous", "discretizer": {"kind": "percentile", "bins": 10**6}}},
    2,
    "bins",
)
spec_case(
    "model-larger-than-memory",
    "resource",
    {"features.1": {"name": "c", "kind": "categorical", "hash_buckets": 2**31 - 1}, "model.sparse_linear.width": 8192},
    2,
    "the model would need about",
    "GiB",
    "this machine allows",
)
text_case(
    "spec-50-megabytes",
    "resource",
    lambda: yaml_text(base_spec()).encode() + b"#" * (50 << 20),
    2,
    "over the limit of 1,048,576",
)
text_case(
    "spec-many-features",
    "resource",
    lambda: yaml_text(
        set_path(base_spec(), "features", [{"name": f"f{i}", "kind": "categorical"} for i in range(40_000)])
    ).encode(),
    2,
    "over the limit",
)


def _bundle_buckets(ws: Workspace) -> list[str]:
    return _bundle_file(
        "feature_map.json",
        lambda o: {
            **o,
            "num_ids": o["num_ids"] - 6 + 2**40,
            "encoders": [
                o["encoders"][0],
                {"kind": "categorical", "name": "c", "vocabulary": [], "buckets": 2**40 - 1, "min_count": 1},
                *o["encoders"][2:],
            ],
        },
    )(ws)


CASES.append(Case("bundle-declares-2-40-buckets", "resource", _bundle_buckets, 2, ("declares 1099511627775 buckets",)))


def _bundle_num_ids(ws: Workspace) -> list[str]:
    return _bundle_file(
        "feature_map.json",
        lambda o: {
            **o,
            "num_ids": o["num_ids"] + 1,
            "encoders": [
                o["encoders"][0],
                {**o["encoders"][1], "vocabulary": o["encoders"][1]["vocabulary"] + ["extra"]},
                *o["encoders"][2:],
            ],
        },
    )(ws)


CASES.append(
    Case("bundle-tables-fewer-rows-than-ids", "resource", _bundle_num_ids, 2, ("but the feature map declares",))
)


# ----------------------------------------------------------------------------- misleading messages


def _spec_path(make: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        make(ws.path("spec.yaml"))
        return ["fit", str(ws.path("spec.yaml"))]

    return build


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name + ".b", path)
    os.symlink(path.name, path.with_name(path.name + ".b"))


CASES.append(Case("spec-is-a-folder", "message", _spec_path(lambda p: p.mkdir()), 2, ("is a folder, not a file",)))
CASES.append(Case("spec-is-a-fifo", "message", _spec_path(os.mkfifo), 2, ("is a FIFO",)))
CASES.append(Case("spec-is-dev-zero", "message", _spec_path(lambda p: os.symlink("/dev/zero", p)), 2, ("is a device",)))
CASES.append(Case("spec-symlink-loop", "message", _spec_path(_symlink_loop), 2, ("is a symlink loop",)))
CASES.append(
    Case(
        "spec-broken-symlink", "message", _spec_path(lambda p: os.symlink("gone.yaml", p)), 2, ("is a broken symlink",)
    )
)
CASES.append(Case("spec-missing", "message", lambda ws: ["fit", str(ws.path("none.yaml"))], 2, ("does not exist",)))


@case("spec-under-a-file", "message", 2, "a part of the path is a file")
def _spec_under_a_file(ws: Workspace) -> list[str]:
    ws.path("f").write_text("")
    return ["fit", str(ws.path("f") / "spec.yaml")]


def _data_path(make: Callable[[Path], None]) -> Callable[[Workspace], None]:
    return lambda ws: make(ws.path("special"))


for _id, _make, _says in [
    ("data-is-a-folder", lambda p: p.mkdir(), "is a folder, not a file"),
    ("data-is-a-fifo", os.mkfifo, "is a FIFO"),
    ("data-is-dev-zero", lambda p: os.symlink("/dev/zero", p), "is a device"),
    ("data-symlink-loop", _symlink_loop, "is a symlink loop"),
    ("data-broken-symlink", lambda p: os.symlink("gone.csv", p), "is a broken symlink"),
]:
    data_case(_id, "message", _data_path(_make), 2, _says, edits={"data.train.path": "special"})

spec_case("data-file-missing", "message", {"data.test.path": "nope.csv"}, 2, "nope.csv does not exist")
spec_case(
    "data-columns-repeated",
    "message",
    {"data.columns": ["x", "c", "b", "x", "y"]},
    2,
    "column name(s) ['x'] appear more than once",
)
spec_case(
    "feature-not-among-columns",
    "message",
    {"data.columns": ["x", "c", "bb", "w", "y"]},
    2,
    "feature(s) ['b'] are not among data.columns",
)


def _headerless_test(ws: Workspace) -> None:
    text = ws.path("test.csv").read_text()
    ws.path("test.csv").write_text(text.split("\n", 1)[1])


data_case(
    "header-in-train-not-in-test",
    "message",
    _headerless_test,
    0,
    "fit on 323 train rows",
    edits={"data.columns": ["x", "c", "b", "w", "y"], "data.train.header": True, "data.test.header": False},
    command="run",
)
data_case(
    "header-in-train-not-in-test-undescribed",
    "message",
    _headerless_test,
    2,
    "test.csv looks like data",
    "header: false",
)
spec_case("prepare-counts-train-rows-only", "message", {}, 0, "fit on 323 train rows", "323 train, 77 validation rows")
data_case(
    "comment-prefix-skips-lines",
    "message",
    lambda ws: ws.path("train.csv").write_text("#exported 2026\n" + ws.path("train.csv").read_text()),
    0,
    "fit on 323 train rows",
    edits={"data.comment_prefix": "#"},
)


@case("bundle-path-is-a-file", "message", 2, "no bundle at")
def _bundle_is_a_file(ws: Workspace) -> list[str]:
    ws.path("x.csv").write_text("a")
    return ["inspect", str(ws.path("x.csv"))]


# ----------------------------------------------------------------------------- faults one command shows


def _stale_scratch(ws: Workspace) -> list[str]:
    args = CASES_BY_ID["prepare-counts-train-rows-only"].build(ws)
    stale = ws.path(".snn") / "tmp" / "999999-deadbeef"
    (stale / "train-0123").mkdir(parents=True)
    (stale / ".lock").write_text("")
    (stale / "train-0123" / "weights.bin").write_bytes(b"\0" * 4096)
    return args


def _scratch_swept(ws: Workspace) -> None:
    leftovers = list((ws.path(".snn") / "tmp").iterdir())
    assert leftovers == [], f"scratch left behind: {leftovers}"


CASES.append(
    Case("stale-scratch-of-a-dead-process-is-removed", "fault", _stale_scratch, 0, ("[train] done",), _scratch_swept)
)


def _stale_predict_temp(ws: Workspace) -> list[str]:
    args = _predict_to(lambda w: w.path("out.parquet"))(ws)
    ws.path(".out.parquet.snn-999999-deadbeef.tmp").write_bytes(b"half a parquet file")
    return args


def _temp_removed(ws: Workspace) -> None:
    assert not list(ws.folder.glob(".out.parquet.snn-*.tmp")) and ws.path("out.parquet").is_file()


CASES.append(
    Case(
        "stale-predict-temp-file-is-removed", "fault", _stale_predict_temp, 0, ("wrote 150 predictions",), _temp_removed
    )
)


def _orphaned_run(ws: Workspace) -> list[str]:
    """A dead process's scratch notes an MLflow run left RUNNING: the next command ends it KILLED."""
    import mlflow

    args = CASES_BY_ID["prepare-counts-train-rows-only"].build(ws)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("tiny")
    run = mlflow.MlflowClient(uri).create_run(experiment.experiment_id, run_name="killed")
    stale = ws.path(".snn") / "tmp" / "999999-cafebabe"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("")
    (stale / "notes.json").write_text(json.dumps({"tracking_uri": uri, "runs": [run.info.run_id]}))
    ws.notes["run_id"] = run.info.run_id
    return args


def _run_killed(ws: Workspace) -> None:
    import mlflow

    status = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(ws.notes["run_id"]).info.status
    assert status == "KILLED", status


CASES.append(
    Case(
        "running-run-of-a-dead-process-is-ended",
        "fault",
        _orphaned_run,
        0,
        ("ended 1 run(s) of killed processes",),
        _run_killed,
    )
)


def _force_step_keeps_upstream(ws: Workspace) -> list[str]:
    spec = ws.copy_trained()
    ws.notes["train"] = sorted(p.name for p in ws.path(".snn/steps").glob("train-*"))
    ws.notes["mtime"] = {p.name: p.stat().st_mtime_ns for p in ws.path(".snn/steps").glob("train-*/step.json")}
    return ["calibrate", str(spec), "--force-step", "calibrate"]


def _upstream_kept(ws: Workspace) -> None:
    after = {p.name: p.stat().st_mtime_ns for p in ws.path(".snn/steps").glob("train-*/step.json")}
    assert after == ws.notes["mtime"], "--force-step calibrate rebuilt the train step"


CASES.append(
    Case(
        "force-step-reruns-only-downstream",
        "fault",
        _force_step_keeps_upstream,
        0,
        ("[train] cache hit", "[calibrate] done"),
        _upstream_kept,
    )
)


def _rerun_after_kill(ws: Workspace) -> list[str]:
    """A killed fit left its scratch and a checkpoint: the rerun resumes, sweeps, and matches."""
    spec = ws.copy_trained()
    train = next(ws.path(".snn/steps").glob("train-*"))
    with np.load(train / "bundle" / "weights.npz") as npz:
        ws.notes["weights"] = {k: npz[k] for k in npz.files}
    shutil.rmtree(train)
    stale = ws.path(".snn") / "tmp" / "999999-0badf00d"
    (stale / "train-0123").mkdir(parents=True)
    (stale / ".lock").write_text("")
    return ["fit", str(spec)]


def _same_weights(ws: Workspace) -> None:
    train = next(ws.path(".snn/steps").glob("train-*"))
    with np.load(train / "bundle" / "weights.npz") as npz:
        assert {k: npz[k].tobytes() for k in npz.files} == {k: v.tobytes() for k, v in ws.notes["weights"].items()}
    _scratch_swept(ws)


CASES.append(Case("rebuilt-step-equals-the-lost-one", "fault", _rerun_after_kill, 0, ("[train] done",), _same_weights))


CASES_BY_ID = {c.id: c for c in CASES}


def materialize(out: Path, trained: Path | None = None) -> None:
    """Write every case into out/<id>/ and print its command (for looking at a case by hand)."""
    for c in CASES:
        folder = out / c.id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            args = c.build(Workspace(folder, trained))
        except Exception as exc:  # cases that copy a trained run need one: `trained`
            print(f"# {c.id}: needs a trained run ({type(exc).__name__})")
            continue
        print(f"snn {' '.join(args)}   # {c.kind}, expect exit {c.exit_code}")


if __name__ == "__main__":
    materialize(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
