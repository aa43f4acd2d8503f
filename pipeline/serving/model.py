"""The Python API: `snn.load(path_or_uri)` -> a Model that scores records with the online scorer.

    model = snn.load("specs/.snn/bundles/adult-income")          # a bundle folder
    model = snn.load("models:/adult-income@champion")             # or an MLflow model (mlflow_model.py)
    model.score({"age": 39, ...})          -> float (with several tasks, one per task [T])
    model.score([{...}, {...}])            -> float64 [n] (or [n, T])
    model.score(polars_or_pandas_frame)    -> float64 [n] (or [n, T])
    model.raw(...)                         -> the network's probabilities before correction and calibration
    model.predict(...)                     -> a polars frame of Bundle.score_columns (score, raw_score, ...)
    model.outputs(...)                     -> the same columns as numpy arrays {name: float64 [n]}
    model.schema                           -> {column: kind} of the columns a record is read for

Schema drift: a record key that is no column of the schema (unknown) or a schema column a record
lacks (missing; scored as a missing value) is counted per column in `model.drift`; with
`strict=True` either is an InputError naming the columns instead. A column the bundle only needs for
its key or label is neither required nor unknown.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import InputError
from ..features.spec import PositionFeature, TreeLeavesFeature
from ..store.bundle import Bundle
from .online import OnlineScorer

DRIFT_NAMES = 1000  # distinct unknown keys counted by name; the rest together (a client's random keys)
Records = Mapping[str, Any] | Sequence[Mapping[str, Any]] | pl.DataFrame | Any  # Any: a pandas DataFrame


class Model:
    """A loaded bundle and its online scorer; see the module docstring."""

    def __init__(self, bundle: Bundle, source: str, strict: bool = False, meta: Mapping | None = None):
        self.bundle, self.source, self.strict, self.meta = bundle, source, strict, dict(meta or {})
        self.scorer = OnlineScorer(bundle)
        self.schema: dict[str, str] = {}
        for feature in bundle.recipe.features:
            if isinstance(feature, PositionFeature):
                continue  # served as the bundle's fixed slot: no column is read
            if isinstance(feature, TreeLeavesFeature):
                self.schema.update(dict.fromkeys(feature.inputs, "tree_input"))
            else:
                self.schema[feature.name] = feature.kind
        for column in bundle.slice_columns:  # a break-down column that is also a feature keeps its kind
            self.schema.setdefault(column, "slice")
        data = bundle.recipe.data
        self._allowed = set(self.schema) | {c for c in (bundle.key, data.weight, *data.label_columns) if c}
        self._allowed |= set(data.oracle_columns) | {f.name for f in bundle.recipe.features}
        self._columns = frozenset(self.schema)
        self.drift: Counter[str] = Counter()  # "unknown:<key>" / "missing:<column>" -> records

    @property
    def score_names(self) -> list[str]:
        """The output columns of `predict`: score and raw_score, or per task (Bundle.score_columns)."""
        tasks = len(self.bundle.tasks)
        one_row = np.full((1, tasks) if tasks else 1, 0.5)
        return list(
            self.bundle.score_columns(one_row, {c: np.array(["null"], object) for c in self.bundle.slice_columns})
        )

    def records(self, records: Records) -> list[dict]:
        """Any accepted input -> a list of dicts, checked against the schema (counted, or refused when strict)."""
        if isinstance(records, Mapping):
            rows = [dict(records)]
        elif isinstance(records, pl.DataFrame):
            rows = records.to_dicts()
        elif type(records).__module__.split(".")[0] == "pandas" and type(records).__name__ == "DataFrame":
            try:
                rows = self._from_pandas(pl.from_pandas(records)).to_dicts()  # pandas' NaN -> None
            except Exception as exc:  # a column pandas holds as objects of mixed types, say
                raise InputError(f"cannot read the pandas frame's columns ({str(exc)[:200]})") from None
        elif isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
            rows = list(records)  # type: ignore[arg-type]  # checked below: each a Mapping
            bad = next((i for i, row in enumerate(rows) if not isinstance(row, Mapping)), None)
            if bad is not None:
                raise InputError(
                    f"record {bad} is {type(rows[bad]).__name__}, not an object of column: value; "
                    "pass a dict, a list of dicts or a data frame"
                )
            rows = [row if type(row) is dict else dict(row) for row in rows]
        else:
            raise InputError(
                f"cannot score a {type(records).__name__}; pass a dict, a list of dicts, or a polars or pandas "
                "DataFrame"
            )
        self._check(rows)
        return rows

    def _from_pandas(self, frame: pl.DataFrame) -> pl.DataFrame:
        """pandas stores an integer column with a missing value as floats (7 -> 7.0): a categorical
        column of floats that are all whole numbers is read back as the integers it held."""
        whole = [
            name
            for name, dtype in frame.schema.items()
            if self.schema.get(name) == "categorical"
            and dtype.is_float()
            and bool((frame[name].drop_nulls() % 1 == 0).all())
            and bool((frame[name].drop_nulls().abs() < 2.0**53).all())
        ]
        return frame.with_columns(pl.col(whole).cast(pl.Int64)) if whole else frame

    def _check(self, rows: list[dict]) -> None:
        """Count (or, strict, refuse) unknown keys and missing schema columns, one pass per distinct key set."""
        unknown: Counter[str] = Counter()
        missing: Counter[str] = Counter()
        for keys, count in Counter(frozenset(row) for row in rows).items():
            for key in keys - self._allowed:
                unknown[str(key)] += count
            for column in self._columns - keys:
                missing[column] += count
        if self.strict and (unknown or missing):
            parts = []
            if missing:
                parts.append(f"missing feature(s) {sorted(missing)}")
            if unknown:
                parts.append(f"unknown feature(s) {sorted(unknown)}")
            raise InputError(
                f"schema drift: {' and '.join(parts)}; the model reads {sorted(self.schema)} "
                "(load with strict=False to score anyway, counting them)"
            )
        for name, count in unknown.items():  # at most DRIFT_NAMES unknown names are told apart
            known = f"unknown:{name}" in self.drift or len(self.drift) < DRIFT_NAMES
            self.drift[f"unknown:{name}" if known else "unknown:(other names)"] += count
        self.drift.update({f"missing:{k}": n for k, n in missing.items()})

    def raw(self, records: Records) -> float | np.ndarray:
        """The network's probabilities: [n] (or [n, T]); one record -> a float (or [T])."""
        out = self.scorer.raw_many(self.records(records))
        return _one(out) if isinstance(records, Mapping) else out

    def score(self, records: Records) -> float | np.ndarray:
        """Final scores (corrected for downsampling, calibrated): [n] (or [n, T]); one record -> a float (or [T])."""
        out = self.scorer.score_many(self.records(records))
        return _one(out) if isinstance(records, Mapping) else out

    def outputs(self, records: Records) -> dict[str, np.ndarray]:
        """Every output column (Bundle.score_columns: score and raw_score, or per task and the value) [n]."""
        return self.scorer.outputs_many(self.records(records))

    def predict(self, records: Records) -> pl.DataFrame:
        """`outputs` as a polars frame."""
        return pl.DataFrame(self.outputs(records))

    def metadata(self) -> dict:
        """What the model is: source, snn and format versions, the recipe's hash, tasks, schema, outputs."""
        meta = self.meta
        return {
            "source": self.source,
            "snn_version": meta.get("snn_version"),
            "format_version": meta.get("format_version"),
            "spec_sha256": meta.get("recipe_sha256"),
            "created": meta.get("created"),
            "calibrated": meta.get("calibrated"),
            "tasks": [task.name for task in self.bundle.tasks],
            "schema": self.schema,
            "drift": dict(self.drift),
            "outputs": self.score_names,
        }


def _one(out: np.ndarray) -> float | np.ndarray:
    return float(out[0]) if out.ndim == 1 else out[0]


def load(source: str | Path, strict: bool = False) -> Model:
    """A bundle folder, or an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/PATH,
    or an MLflow model folder) -> a Model. strict: refuse unknown or missing columns (see the module)."""
    from .mlflow_model import local_bundle

    with local_bundle(str(source)) as folder:
        meta = json.loads((folder / "bundle.json").read_text())
        return Model(Bundle.load(folder), str(source), strict, meta)
