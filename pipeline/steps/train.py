"""Step `train`: train the network on the prepared train split, validating each epoch; write the raw
bundle. Each finished epoch is checkpointed (train/checkpoints.py) under
`<workdir>/checkpoints/<step folder>/`: a killed run resumes at its last finished epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..model.plan import plan_for, space_of
from ..spec import Spec
from ..store.bundle import Bundle, Recipe
from ..store.cache import StepDir
from ..train.loop import train_model
from .context import Context, StepResult, cached_step, key_of, log, read
from .prepare import feature_map_of, split_of

READS = {"data": "data", "features": "features", "model": "model", "train": "train"}


def run(ctx: Context, spec: Spec, prepared: StepResult) -> StepResult:
    values = read(spec, READS)
    checkpoints = (
        ctx.workdir / "checkpoints" / StepDir(ctx.workdir, "train", key_of("train", values, (prepared,))).path.name
    )

    def build(folder: Path) -> dict:
        if ctx.forced("train"):
            shutil.rmtree(checkpoints, ignore_errors=True)
        model, train = values["model"], values["train"]
        feature_map = feature_map_of(prepared)
        train_split = split_of(prepared, "train", feature_map.num_ids)
        validation = split_of(prepared, "validation", feature_map.num_ids)
        ctx.tracker.params({f"train.{k}": v for k, v in train.model_dump(mode="json").items()})
        log(f"[train] {train_split.rows:,} rows, {feature_map.num_ids:,} ids, device {train.device}")
        plan = plan_for(model, space_of(feature_map.num_ids, feature_map.layout()))
        result = train_model(
            plan,
            train,
            train_split,
            validation,
            on_epoch=lambda epoch, row: ctx.tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch),
            checkpoints=checkpoints,
        )
        best = result.history[result.best_epoch - 1]
        summary = {
            "best_val_auc": best["val_auc"],
            "best_val_logloss": best["val_logloss"],
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "resumed_at_epoch": result.resumed_at,
            "train_seconds": result.seconds,
        }
        recipe = Recipe(data=values["data"], features=list(values["features"]), model=model, train=train)
        bundle = Bundle(recipe, feature_map, plan, result.state, metrics={"train": summary})
        bundle.save(folder / "bundle")
        (folder / "history.json").write_text(json.dumps(result.history, indent=2))
        ctx.tracker.metrics(summary)
        ctx.tracker.artifact(folder / "bundle", "bundle")
        shutil.rmtree(checkpoints, ignore_errors=True)  # the step is done: a rerun finds its folder
        return {"metrics": summary, "device": result.device}

    return cached_step(ctx, "train", values, build, (prepared,))
