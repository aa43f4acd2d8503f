"""The model bundle: one folder of JSON + npz (no pickle) that both scorers load.

    bundle.json        format version, snn version, the recipe's hash, sampling rates, metrics
    recipe.json        the spec sections the bundle was built from: data, features, model, train
                       (and calibration once calibrated)
    feature_map.json   encoders and their id ranges
    plan.json          the network's blocks, their wiring and every weight's name and shape
    weights.npz        the weights by plan name "<block>.<name>" (np.load with allow_pickle=False);
                       with `model.tables: int8`, each packed table as "<name>.q8" (uint8 codes),
                       "<name>.scale" and "<name>.low" (quantize.py), read back dequantized
    calibrator.json    optional: the calibrator (isotonic knots, or Platt's slope and intercept);
                       with several tasks, calibrators.json: one per task, by name, and
                       breakdown.json: per task calibrated by slice, {value: calibrator}

Scoring: raw = σ(logit); downsampling-corrected p = raw·r / (1 − raw + r·raw) when negatives were
downsampled at rate r; score = calibrator(p) when calibrated, else p. With several tasks, per
task t: the correction at t's rate, then the served probability (a dependent task's is the
product along its conditions, train/tasks.served_probabilities), then t's calibrator: its slice's
when t is calibrated per value of a column and the row's value (as text) has one, else t's own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from .. import __version__
from ..config import Strict
from ..data.readers import Reader
from ..data.rows import key_column
from ..data.spec import DataSpec
from ..errors import ArtifactError, InputError
from ..evaluation.calibrate import Calibrator, calibrator_from_json, downsampling_correction
from ..evaluation.spec import Calibration
from ..features.feature_map import FeatureMap
from ..features.spec import Feature
from ..files import Scratch
from ..model.plan import ModelSpec, Plan
from ..train.spec import TrainSpec
from ..train.tasks import TaskSpec, served_probabilities
from .quantize import SUFFIXES, dequantize_rows, pack, unpack

FORMAT_VERSION = 6  # 2: the plan (plan.json), weights named by it, the recipe; 3: Platt calibrators,
# regularization; 4: id lists, the features' layout in the plan; 5: tree leaves, 8-bit tables;
# 6: several tasks (the plan's outputs, the recipe's tasks)


class Recipe(Strict):
    """The spec sections a bundle was built from (recipe.json): what its data looks like, how its
    features are encoded, its model and training, and its calibration once calibrated."""

    data: DataSpec = Field(description="Where the rows came from and which columns play which role.")
    features: list[Feature] = Field(description="The input features.")
    model: ModelSpec = Field(description="The architecture (the plan states it resolved).")
    train: TrainSpec = Field(description="How it was trained.")
    calibration: Calibration | None = Field(default=None, description="How it was calibrated.")
    tasks: list[TaskSpec] | None = Field(default=None, description="Its tasks, when it learned several.")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


@dataclass
class Bundle:
    recipe: Recipe
    feature_map: FeatureMap
    plan: Plan
    weights: dict[str, np.ndarray]
    calibrator: Calibrator | None = None
    metrics: dict = field(default_factory=dict)
    packed: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)  # 8-bit tables: (codes, scale, low)
    calibrators: dict[str, Calibrator] = field(default_factory=dict)  # several tasks: one per task, by name
    breakdown: dict[str, dict[str, Calibrator]] = field(default_factory=dict)  # task -> slice value -> calibrator

    @classmethod
    def quantized(cls, recipe: Recipe, feature_map: FeatureMap, plan: Plan, weights: dict, metrics: dict) -> Bundle:
        """A bundle whose per-id tables are stored as `recipe.model.tables` says: with int8, each
        table at least 8 wide packed row-wise, and `weights` holding what the codes stand for."""
        if recipe.model.tables != "int8":
            return cls(recipe, feature_map, plan, weights, metrics=metrics)
        tables = {name for name, w in plan.weights.items() if w.per_id and w.trainable}
        packed = pack(weights, tables)
        return cls(recipe, feature_map, plan, unpack(weights, packed), metrics=metrics, packed=packed)

    @property
    def reader(self) -> Reader:
        return Reader.from_spec(self.recipe.data)

    @property
    def key(self) -> str:
        """The row key column carried into prediction files."""
        return key_column(self.recipe.data)

    @property
    def negative_rate(self) -> float:
        """The share of negatives kept in training (1.0: no downsampling)."""
        down = self.recipe.train.negative_downsampling
        return down.rate if down is not None else 1.0

    @property
    def tasks(self) -> list[TaskSpec]:
        """The tasks of a multi-task bundle ([] for one task)."""
        return list(self.recipe.tasks or ())

    def negative_rates(self) -> list[float]:
        """Each task's share of negatives kept in training, or [negative_rate] for one task."""
        if not self.tasks:
            return [self.negative_rate]
        return [t.negative_downsampling.rate if t.negative_downsampling else 1.0 for t in self.tasks]

    def corrected(self, raw: np.ndarray) -> np.ndarray:
        """Raw probabilities [n] (or [n, T]) -> the model's probabilities on undownsampled data (the
        analytic downsampling correction at each task's rate, the identity where nothing was
        downsampled)."""
        p = np.array(raw, dtype=np.float64)
        columns = p if p.ndim == 2 else p.reshape(len(p), 1)  # a view: corrected in place
        for t, rate in enumerate(self.negative_rates()):
            if rate != 1.0:
                columns[:, t] = downsampling_correction(columns[:, t], rate)
        return p

    def served(self, raw: np.ndarray) -> np.ndarray:
        """Raw probabilities -> the served probabilities before calibration: corrected, and with
        several tasks each dependent task's the product along its conditions [n, T]."""
        p = self.corrected(raw)
        return served_probabilities(p, self.tasks) if self.tasks else p

    @property
    def slice_columns(self) -> list[str]:
        """The columns the scorers read besides the features: those some task is calibrated by."""
        return sorted({task.breakdown.column for task in self.tasks if task.breakdown is not None})

    def slice_values(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """The slice columns' values of raw rows, as the calibrators were fit on them: text, a
        missing value 'null' [n] each."""
        return {column: slice_text(frame[column]) for column in self.slice_columns}

    def finish(self, raw: np.ndarray, slices: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Raw probabilities [n] (or [n, T]) -> final scores (served, then each calibrator; with
        break-down calibration, `slices` holds each slice column's values as text [n])."""
        p = self.served(raw)
        if not self.tasks:
            return self.calibrator(p) if self.calibrator is not None else p
        for t, task in enumerate(self.tasks):
            served = p[:, t].copy()
            if task.name in self.calibrators:
                p[:, t] = self.calibrators[task.name](served)
            if task.breakdown is None or not self.breakdown.get(task.name):
                continue
            if slices is None or task.breakdown.column not in slices:
                raise InputError(
                    f"task {task.name!r} is calibrated per value of {task.breakdown.column!r}; give that column"
                )
            values = np.asarray(slices[task.breakdown.column], dtype=object)
            for value, calibrator in self.breakdown[task.name].items():
                rows = values == value
                if rows.any():
                    p[rows, t] = calibrator(served[rows])
        return p

    def score_columns(self, raw: np.ndarray, slices: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """What a prediction file holds for raw probabilities: `score` and `raw_score` for one task;
        with several, `score_<task>` (served, calibrated) and `raw_score_<task>` (the tower's σ, a
        dependent task's conditional on its condition) per task, and `value` = Σ value_weight ·
        score when some task has a value weight."""
        if not self.tasks:
            return {"score": self.finish(raw), "raw_score": np.asarray(raw, dtype=np.float64)}
        final, out = self.finish(raw, slices), {}  # final [n, T]
        for t, task in enumerate(self.tasks):
            out[f"score_{task.name}"] = final[:, t]
        for t, task in enumerate(self.tasks):
            out[f"raw_score_{task.name}"] = np.asarray(raw[:, t], dtype=np.float64)
        if any(task.value_weight is not None for task in self.tasks):
            weights = np.array([task.value_weight or 0.0 for task in self.tasks])
            out["value"] = final @ weights
        return out

    @property
    def score_names(self) -> list[str]:
        """The score columns parity compares: `score`, or `score_<task>` per task."""
        return [f"score_{task.name}" for task in self.tasks] or ["score"]

    def save(self, folder: Path) -> None:
        """Write into `folder` (callers write into a temporary folder and rename it into place)."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "snn_version": __version__,
            "recipe_sha256": self.recipe.sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sampling": {"negative_rate": self.negative_rate, "positive_rate": 1.0},
            "calibrated": self.calibrator is not None or bool(self.calibrators),
            "metrics": self.metrics,
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=2))
        (folder / "recipe.json").write_text(self.recipe.model_dump_json(indent=2))
        (folder / "feature_map.json").write_text(json.dumps(self.feature_map.to_json()))
        (folder / "plan.json").write_text(json.dumps(self.plan.to_json(), indent=1))
        stored = {name: array for name, array in self.weights.items() if name not in self.packed}
        for name, parts in self.packed.items():
            stored.update({name + suffix: part for suffix, part in zip(SUFFIXES, parts)})
        np.savez(folder / "weights.npz", **stored)  # type: ignore[arg-type]  # names are plan names
        if self.calibrator is not None:
            (folder / "calibrator.json").write_text(json.dumps(self.calibrator.to_json()))
        if self.calibrators:
            stored_calibrators = {name: c.to_json() for name, c in self.calibrators.items()}
            (folder / "calibrators.json").write_text(json.dumps(stored_calibrators))
        if self.breakdown:
            stored_slices = {t: {v: c.to_json() for v, c in by.items()} for t, by in self.breakdown.items()}
            (folder / "breakdown.json").write_text(json.dumps(stored_slices))

    @classmethod
    def load(cls, folder: str | Path) -> Bundle:
        """Read and check a bundle folder: every file parses, the weights are finite and have the names
        and shapes the plan declares over the feature map's id space, the calibrator is a monotone map
        into [0, 1]. A damaged bundle is an ArtifactError naming what is wrong."""
        folder = Path(folder)
        if not (folder / "bundle.json").is_file():
            raise ArtifactError(
                f"no bundle at {folder} (bundle.json missing); pass a folder written by `snn fit` or `snn calibrate`"
            )
        try:
            meta = json.loads((folder / "bundle.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ArtifactError(
                    f"bundle {folder} has format version {meta.get('format_version')}, this snn reads "
                    f"{FORMAT_VERSION}; rebuild it with this snn version (`snn fit --force`)"
                )
            recipe = Recipe.model_validate_json((folder / "recipe.json").read_text())
            feature_map = FeatureMap.from_json(json.loads((folder / "feature_map.json").read_text()))
            plan = Plan.from_json(json.loads((folder / "plan.json").read_text()))
            with np.load(folder / "weights.npz", allow_pickle=False) as npz:
                weights = {k: npz[k] for k in npz.files}
            packed = unpacked(weights)
            calibrator = None
            if (folder / "calibrator.json").is_file():
                calibrator = calibrator_from_json(json.loads((folder / "calibrator.json").read_text()))
            calibrators = {}
            if (folder / "calibrators.json").is_file():
                stored = json.loads((folder / "calibrators.json").read_text())
                calibrators = {str(name): calibrator_from_json(c) for name, c in stored.items()}
            breakdown = {}
            if (folder / "breakdown.json").is_file():
                stored = json.loads((folder / "breakdown.json").read_text())
                breakdown = {
                    str(t): {str(v): calibrator_from_json(c) for v, c in by.items()} for t, by in stored.items()
                }
            bundle = cls(
                recipe, feature_map, plan, weights, calibrator, meta.get("metrics", {}), packed, calibrators, breakdown
            )
            problem = bundle.problem()
        except ArtifactError:
            raise
        except Exception as exc:  # any parse failure means a damaged artifact
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        if problem is not None:
            raise ArtifactError(
                f"bundle {folder} is corrupted ({problem}); rebuild it with `snn fit --force` / `snn calibrate --force`"
            )
        return bundle

    def problem(self) -> str | None:
        """What is inconsistent in this bundle, or None."""
        for name, array in self.weights.items():
            if array.dtype.kind not in "fiu":
                return f"weight {name} is {array.dtype}, not numbers"
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return f"weight {name} holds {int((~np.isfinite(array)).sum())} NaN or infinite values"
        space = self.plan.space
        if (space.num_ids, space.num_fields) != (self.feature_map.num_ids, len(self.feature_map.encoders)):
            return (
                f"the plan is laid over {space.num_ids:,} ids and {space.num_fields} features but the feature "
                f"map declares {self.feature_map.num_ids:,} ids and {len(self.feature_map.encoders)} features"
            )
        if space.to_json() != [list(field) for field in self.feature_map.layout()]:
            return "the plan's features (names, ids, entry kinds) are not the feature map's"
        if [f.name for f in self.recipe.features] != self.feature_map.names:
            return "the recipe's features are not the feature map's"
        declared_weights = self.plan.weights
        for name in self.packed:
            weight = declared_weights.get(name)
            if self.recipe.model.tables != "int8" or weight is None or not (weight.per_id and weight.trainable):
                return f"weight {name} is stored in 8 bits, which only model.tables: int8 does to per-id tables"
        declared = {name: weight.shape for name, weight in declared_weights.items()}
        found = {name: array.shape for name, array in self.weights.items()}
        if declared != found:
            name = sorted(n for n in declared.keys() | found.keys() if declared.get(n) != found.get(n))[0]
            return f"weight {name} is {found.get(name)}, the plan declares {declared.get(name)}"
        if len(self.plan.outputs) != max(len(self.tasks), 1):
            return f"the plan has {len(self.plan.outputs)} outputs for {max(len(self.tasks), 1)} task(s)"
        unknown = sorted(set(self.calibrators) - {task.name for task in self.tasks})
        if unknown:
            return f"calibrators for {unknown}, which are not the bundle's tasks"
        sliced = {task.name for task in self.tasks if task.breakdown is not None}
        if set(self.breakdown) - sliced:
            return f"slice calibrators for {sorted(set(self.breakdown) - sliced)}, which are not calibrated by slice"
        by_slice = [c for by in self.breakdown.values() for c in by.values()]
        for calibrator in [self.calibrator, *self.calibrators.values(), *by_slice]:
            problem = calibrator.problem() if calibrator is not None else None
            if problem is not None:
                return problem
        return None

    def calibrated(
        self,
        calibration: Calibration,
        calibrator: Calibrator | None,
        metrics: dict,
        calibrators: dict[str, Calibrator] | None = None,
        breakdown: dict[str, dict[str, Calibrator]] | None = None,
    ) -> Bundle:
        """This bundle with a calibrator (or, with several tasks, one per task and per slice), its
        calibration spec in the recipe and its metrics added."""
        recipe = self.recipe.model_copy(update={"calibration": calibration})
        merged = {**self.metrics, **metrics}
        return Bundle(
            recipe,
            self.feature_map,
            self.plan,
            self.weights,
            calibrator,
            merged,
            self.packed,
            calibrators or {},
            breakdown or {},
        )


def slice_text(values: pl.Series) -> np.ndarray:
    """A slice column's values as text, a missing value 'null' (object [n])."""
    return values.cast(pl.String).fill_null("null").to_numpy().astype(object)


def unpacked(weights: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Replace, in place, each packed table of a loaded weights.npz ("<name>.q8", ".scale", ".low")
    by its dequantized table under its plan name -> the packed parts by name. A part missing, of
    the wrong type or shape is a ValueError."""
    packed: dict[str, tuple[np.ndarray, ...]] = {}
    for key in [k for k in weights if k.endswith(SUFFIXES[0])]:
        name = key[: -len(SUFFIXES[0])]
        codes, scale, low = (weights.pop(name + suffix) for suffix in SUFFIXES)
        if (
            codes.dtype != np.uint8
            or codes.ndim != 2
            or scale.dtype != np.float32
            or low.dtype != np.float32
            or scale.shape != low.shape
            or scale.shape != codes.shape[:1]
        ):
            raise ValueError(
                f"the 8-bit table {name} has codes {codes.dtype} {codes.shape}, scales {scale.dtype} {scale.shape} "
                f"and lows {low.dtype} {low.shape}"
            )
        if name in weights:
            raise ValueError(f"the table {name} is stored both as 8-bit codes and as numbers")
        packed[name] = (codes, scale, low)
        weights[name] = dequantize_rows(codes, scale, low)
    return packed


def replace_folder(tmp: Path, final: Path, scratch: Scratch) -> None:
    """Move a finished temporary folder into place; the folder it replaces is moved into the
    scratch first (one rename), then removed, so `final` is never half deleted."""
    if final.exists():
        final.rename(scratch.folder("replaced") / final.name)
    tmp.rename(final)
