"""The staged steps and their cache: prepare -> train -> calibrate, and validate.

Each cached step reads named spec fields, writes a content-addressed folder (see cache.py) and
logs a nested MLflow run. Commands call the last step they need; upstream steps are cache hits
when nothing they read changed.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from ..evaluation import metrics
from ..store.bundle import Bundle, replace_folder
from ..store.cache import StepDir, link_latest, step_key
from ..evaluation.calibrate import Isotonic, downsampling_correction
from ..data.readers import Reader, input_fingerprints, key_column
from ..store.encoded import EncodedSplit
from ..errors import ArtifactError
from ..store.files import Scratch, input_file, locked
from ..evaluation.gates import evaluate_gates, slice_metrics
from ..features.encoders import FeatureMap
from ..model.blocks.base import IdSpace
from ..model.plan import plan_for
from ..evaluation.parity import compare, read_predictions
from .prepare import prepare
from ..evaluation.plots import reliability_png, roc_png
from ..evaluation.scoring import load_model, raw_probabilities, score_splits
from ..evaluation.spec import IsotonicCalibration
from ..spec import LoadedSpec
from .tracking import Tracker
from ..train.loop import train_model


STEPS = ("prepare", "train", "calibrate", "validate")


def log(message: str) -> None:
    sys.stderr.write(message + "\n")


@dataclass
class Context:
    """One command's run: the spec, its tracker, this process's scratch folder, and what to rerun:
    `force` every step, `force_step` that step and the ones after it."""

    loaded: LoadedSpec
    tracker: Tracker
    scratch: Scratch
    force: bool = False
    force_step: str | None = None
    steps: dict = field(default_factory=dict)

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def workdir(self) -> Path:
        return self.loaded.workdir

    def forced(self, name: str) -> bool:
        return self.force or (self.force_step is not None and STEPS.index(name) >= STEPS.index(self.force_step))

    def record(self, name: str, step: StepDir, cached: bool) -> None:
        self.steps[name] = {"path": str(step.path), "cached": cached, "key": step.key}
        if (step.path / "bundle").is_dir():
            suffix = {"train": ".raw", "calibrate": ""}[name]
            self.steps[name]["bundle"] = str(link_latest(self.workdir, self.spec.name + suffix, step.path / "bundle"))
        log(f"[{name}] {'cache hit' if cached else 'done'}: {step.path}")


def _dump(model) -> dict:
    return model.model_dump(mode="json") if model is not None else None


def cache_hit(ctx: Context, step: StepDir, logged: Callable[[dict], dict]) -> bool:
    """Called holding the step's lock: True, after logging a short cached run of `logged(info)`
    metrics, when the step's folder is current and not forced."""
    if not step.done or ctx.forced(step.name):
        return False
    info = step.info()
    with ctx.tracker.step(step.name, cached=True):
        ctx.tracker.metrics(logged(info))
    ctx.record(step.name, step, True)
    return True


# ----------------------------------------------------------------------------- prepare


def prepare_step(ctx: Context) -> StepDir:
    """Fit discretizers and vocabularies on train, encode every split to CSR arrays (prepare.py)."""
    spec = ctx.spec
    fields = {"data": _dump(spec.data), "features": [_dump(f) for f in spec.features],
              "negative_downsampling": _dump(spec.train.negative_downsampling)}
    step = StepDir(ctx.workdir, "prepare", step_key("prepare", fields, inputs=input_fingerprints(ctx.loaded)))
    with locked(step.lock):
        if cache_hit(ctx, step, lambda info: {f"rows_{k}": v for k, v in info["rows"].items()}):
            return step
        with ctx.tracker.step("prepare"), step.build(ctx.scratch) as tmp:
            info = prepare(ctx.loaded, tmp)
            ctx.tracker.params({"num_ids": info["num_ids"], **{f"rows.{k}": v for k, v in info["rows"].items()}})
            ctx.tracker.metrics({f"rows_{k}": v for k, v in info["rows"].items()} |
                                {f"{k}_seconds": v for k, v in info["seconds"].items()})
            rows = info["rows"]
            log(f"[prepare] fit on {rows['train']:,} train rows in {info['seconds']['fit']:.1f}s; encoded "
                + ", ".join(f"{n:,} {name}" for name, n in rows.items()) + f" rows in {info['seconds']['encode']:.1f}s")
            step.finish(tmp, info)
    ctx.record("prepare", step, False)
    return step


def load_split(step: StepDir, name: str, num_ids: int) -> EncodedSplit:
    """A cached split, checked against the id space (a damaged cache is an ArtifactError)."""
    split = EncodedSplit.load(step.path / "splits" / name)
    problem = split.problem(num_ids)
    if problem is not None:
        raise step.corrupted(ValueError(f"split {name}: {problem}"))
    return split


def load_feature_map(step: StepDir) -> FeatureMap:
    try:
        return FeatureMap.from_json(json.loads((step.path / "feature_map.json").read_text()))
    except (OSError, ValueError, ArtifactError) as exc:
        raise step.corrupted(exc) from None


# ----------------------------------------------------------------------------- train


def train_step(ctx: Context) -> StepDir:
    """Train the net on the encoded train split, early-stopping on validation; write the raw bundle.
    Each finished epoch is checkpointed (train.py): a killed run resumes at its last finished epoch."""
    prepared = prepare_step(ctx)
    spec = ctx.spec
    fields = {"model": _dump(spec.model), "train": _dump(spec.train)}
    step = StepDir(ctx.workdir, "train", step_key("train", fields, {"prepare": prepared.key}))
    checkpoints = ctx.workdir / "checkpoints" / step.path.name
    with locked(step.lock):
        if cache_hit(ctx, step, lambda info: info["metrics"]):
            return step
        if ctx.forced("train"):
            shutil.rmtree(checkpoints, ignore_errors=True)
        feature_map = load_feature_map(prepared)
        train = load_split(prepared, "train", feature_map.num_ids)
        validation = load_split(prepared, "validation", feature_map.num_ids)
        with ctx.tracker.step("train"), step.build(ctx.scratch) as tmp:
            ctx.tracker.params({f"train.{k}": v for k, v in fields["train"].items()})
            log(f"[train] {train.rows:,} rows, {feature_map.num_ids:,} ids, device {spec.train.device}")
            plan = plan_for(spec.model, IdSpace(feature_map.num_ids, len(feature_map.encoders)))
            result = train_model(
                plan, spec.train, train, validation,
                on_epoch=lambda epoch, row: ctx.tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch),
                checkpoints=checkpoints,
            )
            best = result.history[result.best_epoch - 1]
            summary = {"best_val_auc": best["val_auc"], "best_val_logloss": best["val_logloss"],
                       "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                       "resumed_at_epoch": result.resumed_at, "train_seconds": result.seconds}
            down = spec.train.negative_downsampling
            bundle = Bundle(spec, feature_map, plan, result.state, Reader.from_spec(spec.data), key_column(spec.data),
                            ctx.loaded.spec_hash, negative_rate=down.rate if down else 1.0, metrics={"train": summary})
            bundle.save(tmp / "bundle")
            (tmp / "history.json").write_text(json.dumps(result.history, indent=2))
            ctx.tracker.metrics(summary)
            ctx.tracker.artifact(tmp / "bundle", "bundle")
            step.finish(tmp, {"metrics": summary, "device": result.device})
        shutil.rmtree(checkpoints, ignore_errors=True)
    ctx.record("train", step, False)
    return step


# ----------------------------------------------------------------------------- calibrate


def calibrate_step(ctx: Context) -> StepDir:
    """Fit the calibrator on held-out (validation) raw scores; write a new, calibrated bundle."""
    trained = train_step(ctx)
    prepared = prepare_step_cached(ctx)
    spec = ctx.spec
    step = StepDir(ctx.workdir, "calibrate",
                   step_key("calibrate", {"calibration": _dump(spec.calibration)}, {"train": trained.key}))
    with locked(step.lock):
        if cache_hit(ctx, step, lambda info: info["metrics"]):
            return step
        raw_bundle = Bundle.load(trained.path / "bundle")
        validation = load_split(prepared, "validation", raw_bundle.feature_map.num_ids)
        with ctx.tracker.step("calibrate"), step.build(ctx.scratch) as tmp:
            raw = raw_probabilities(load_model(raw_bundle), validation)
            corrected = downsampling_correction(raw, raw_bundle.negative_rate) if raw_bundle.negative_rate != 1 else raw
            calibrator = None
            if isinstance(spec.calibration, IsotonicCalibration):
                calibrator = Isotonic.fit(corrected, validation.labels, validation.weights, spec.calibration)
            bundle = raw_bundle.with_calibrator(calibrator, {})
            calibrated = bundle.finish(raw)
            y, w = validation.labels, validation.weights
            summary = {
                "val_logloss_raw": metrics.logloss(y, raw, w), "val_logloss_calibrated": metrics.logloss(y, calibrated, w),
                "val_calibration_ratio_raw": metrics.calibration_ratio(y, raw, w),
                "val_calibration_ratio_calibrated": metrics.calibration_ratio(y, calibrated, w),
                "knots": float(len(calibrator.xs)) if calibrator else 0.0,
            }
            bundle.metrics["calibrate"] = summary
            bundle.save(tmp / "bundle")
            ctx.tracker.metrics(summary)
            ctx.tracker.artifact(tmp / "bundle", "bundle")
            step.finish(tmp, {"metrics": summary})
    ctx.record("calibrate", step, False)
    return step


def prepare_step_cached(ctx: Context) -> StepDir:
    """The prepare step already run in this command (no second log line or tracking run)."""
    info = ctx.steps["prepare"]
    return StepDir(ctx.workdir, "prepare", info["key"])


# ----------------------------------------------------------------------------- validate


def validate_step(ctx: Context, compare_path: Path | None = None, baseline: Path | None = None) -> dict:
    """Metrics (raw and calibrated) per split, slices, plots, gates, parity -> a report folder."""
    calibrated_step = calibrate_step(ctx)
    spec = ctx.spec
    bundle = Bundle.load(calibrated_step.path / "bundle")
    baseline = baseline or (ctx.loaded.resolve(spec.validation.baseline) if spec.validation.baseline else None)
    baseline_bundle = Bundle.load(baseline) if baseline else None
    report_dir = ctx.workdir / "reports" / spec.name
    if compare_path is not None:
        input_file(compare_path, "--compare file",
                   f"write it with `snn predict --online BUNDLE DATA -o {compare_path}`")
    tmp = ctx.scratch.folder("validate")
    result: dict = {"metrics": {}, "bundle": str(calibrated_step.path / "bundle")}
    with ctx.tracker.step("validate"):
        evaluated = score_splits(ctx.loaded, bundle, load_model(bundle), baseline_bundle)
        for name, split in evaluated.items():
            scored, y, w = split.scored, split.labels, split.weights
            raw, final = scored["raw_score"].to_numpy(), scored["score"].to_numpy()
            kw = {"eps": spec.validation.logloss_eps, "ece_bins": spec.validation.ece_bins}
            split_metrics = {"raw": metrics.all_metrics(y, raw, w, **kw), "calibrated": metrics.all_metrics(y, final, w, **kw)}
            if split.oracle is not None:
                split_metrics["oracle"] = metrics.all_metrics(y, split.oracle, w, **kw)
            if split.baseline is not None:
                split_metrics["baseline"] = metrics.all_metrics(y, split.baseline, w, **kw)
            if spec.validation.slices:
                split_metrics["slices"] = slice_metrics(split.slices, spec.validation.slices, y, final, w, **kw)
            result["metrics"][name] = split_metrics
            scored.with_columns(pl.Series("label", y)).write_parquet(tmp / f"predictions_{name}.parquet")
            for kind in [k for k in ("raw", "calibrated", "oracle") if k in split_metrics]:
                ctx.tracker.metrics({f"{name}_{kind}_{k}": v for k, v in split_metrics[kind].items()})
            if name == list(evaluated)[-1]:
                curves = {"raw": raw, "calibrated": final}
                reliability_png(tmp / "reliability.png", y, curves, w, spec.validation.ece_bins)
                roc_png(tmp / "roc.png", y, curves, w)
                result["gated_split"] = name
                gated_scores = scored
        gated = result["metrics"][result["gated_split"]]
        verdict = evaluate_gates(spec.validation.gates, gated["calibrated"], gated.get("baseline"),
                                 result["gated_split"], bundle_path=result["bundle"],
                                 baseline_path=str(baseline) if baseline else None)
        if compare_path is not None:
            online = read_predictions(compare_path, bundle.key, gated_scores.schema[bundle.key])
            parity = compare(gated_scores, online, bundle.key, spec.parity)
            (tmp / "parity.json").write_text(json.dumps(parity, indent=2, default=str))
            result["parity"] = parity
            ctx.tracker.metrics({f"parity_{k}": v for k, v in parity.items() if isinstance(v, (int, float))})
            if not parity["passed"]:
                verdict["passed"] = False
                verdict["failures"].append(
                    f"parity: {parity['rows_failing']} rows differ beyond atol={spec.parity.atol} rtol={spec.parity.rtol} "
                    f"({parity['nan_rows']} of them NaN; max abs diff {parity['max_abs_diff']:.3g}; rows "
                    f"{parity['failing_keys']}), {parity['missing_online']} offline rows missing online"
                )
        (tmp / "metrics.json").write_text(json.dumps(result["metrics"], indent=2))
        (tmp / "verdict.json").write_text(json.dumps(verdict, indent=2))
        report_dir.parent.mkdir(parents=True, exist_ok=True)
        with locked(ctx.workdir / "locks" / f"report-{spec.name}.lock"):
            replace_folder(tmp, report_dir, ctx.scratch)
        ctx.tracker.artifact(report_dir, "report")
        ctx.tracker.metrics({"verdict_passed": float(verdict["passed"])})
    result["verdict"] = verdict
    result["report"] = str(report_dir)
    log(f"[validate] report: {report_dir}")
    return result

