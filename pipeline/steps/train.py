"""Step `train`: train the network on the prepared train split, validating each epoch; write the raw
bundle. Each finished epoch is checkpointed (train/checkpoints.py) under
`<workdir>/checkpoints/<step folder>/`: a killed run resumes at its last finished epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..data.encoded import EncodedSplit
from ..errors import SpecError
from ..model.plan import Plan, plan_for, space_of, uses_counts
from ..spec import Spec
from ..store.bundle import Bundle, Recipe
from ..store.cache import StepDir
from ..train.tasks import TaskSpec, towers_of
from .context import Context, StepResult, cached_step, key_of, log, read
from .prepare import SELECTION, example_of, feature_map_of, split_of

READS = {"data": "data", "features": "features", "model": "model", "train": "train", "tasks": "tasks"}


def run(ctx: Context, spec: Spec, prepared: StepResult) -> StepResult:
    values = read(spec, READS)
    checkpoints = (
        ctx.workdir / "checkpoints" / StepDir(ctx.workdir, "train", key_of("train", values, (prepared,))).path.name
    )

    if ctx.forced("train") and ctx.leader:  # before the ranks decide to build: none may resume from it
        shutil.rmtree(checkpoints, ignore_errors=True)

    def build(folder: Path) -> dict:
        model, train = values["model"], values["train"]
        feature_map = feature_map_of(prepared)
        train_split = split_of(prepared, "train", feature_map.num_ids)
        # early stopping and the best epoch judge the validation rows as trained (position features read)
        selection = SELECTION if (prepared.path / "splits" / SELECTION).is_dir() else "validation"
        validation = split_of(prepared, selection, feature_map.num_ids)
        ctx.tracker.params({f"train.{k}": v for k, v in train.model_dump(mode="json").items()})
        log(f"[train] {train_split.rows:,} rows, {feature_map.num_ids:,} ids, device {train.device}")
        counts = np.bincount(train_split.ids, minlength=feature_map.num_ids) if uses_counts(model) else None
        try:
            space = space_of(feature_map.num_ids, feature_map.layout())
            plan = plan_for(model, space, counts, towers_of(values["tasks"]))
        except ValueError as exc:  # what depends on the data: a mixed-dim budget below one parameter per id
            raise SpecError(f"model: {exc}") from None
        from ..train.loop import train_model  # torch: imported only when the step runs

        result = train_model(
            plan,
            train,
            train_split,
            validation,
            on_epoch=lambda epoch, row: ctx.tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch),
            checkpoints=checkpoints,
            tasks=values["tasks"],
            group=ctx.group,
        )
        if not ctx.leader:  # rank 0 writes the step
            return {}
        best = result.history[result.best_epoch - 1]
        summary = {
            **{f"best_{name}": value for name, value in best.items() if name.startswith("val_")},
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "resumed_at_epoch": result.resumed_at,
            "train_seconds": result.seconds,
            "rows_per_s": float(np.median([row["rows_per_s"] for row in result.history])),
        }
        if ctx.group is not None:
            summary.update(processes=ctx.group.world, exchanged_bytes_per_step=result.exchanged_bytes_per_step)
        recipe = Recipe(
            data=values["data"], features=list(values["features"]), model=model, train=train, tasks=values["tasks"]
        )
        # the history rides in the bundle's metrics (kept by calibration) for validate's learning curve
        bundle_metrics = {"train": summary, "history": result.history}
        bundle = Bundle.quantized(recipe, feature_map, plan, result.state, metrics=bundle_metrics)
        if bundle.packed:
            summary.update(int8_report(plan, result.state, bundle, validation, values["tasks"]))
            log(
                f"[train] 8-bit tables: {summary['int8_table_compression']:.2f}x smaller, validation AUC "
                f"{summary['int8_val_auc_float32']:.5f} -> {summary['int8_val_auc']:.5f}"
            )
        bundle.save(folder / "bundle")
        (folder / "history.json").write_text(json.dumps(result.history, indent=2))
        ctx.tracker.metrics(summary)
        model_uri = ctx.tracker.model(folder / "bundle", example_of(prepared))
        shutil.rmtree(checkpoints, ignore_errors=True)  # the step is done: a rerun finds its folder
        return {"metrics": summary, "device": result.device, "model_uri": model_uri}

    return cached_step(ctx, "train", values, build, (prepared,), together=True)


def int8_report(
    plan: Plan,
    float_state: dict[str, np.ndarray],
    bundle: Bundle,
    validation: EncodedSplit,
    tasks: list[TaskSpec] | None = None,
) -> dict:
    """What packing the tables row-wise into 8 bits cost: the packed tables' bytes before and after,
    and the validation AUC (with tasks, their weighted average) of the float32 and the dequantized
    weights, scored the same way."""
    import torch

    from ..model.inference import raw_probabilities
    from ..model.network import Network
    from ..train.loop import validation_metrics

    aucs = []
    for state in (float_state, bundle.weights):
        network = Network(plan)
        network.load_state_dict({name: torch.from_numpy(np.asarray(array)) for name, array in state.items()})
        network.eval()
        p = raw_probabilities(network, validation, fast=True)
        aucs.append(validation_metrics(p, validation, bundle.recipe.train, tasks)["val_auc"])
    float_bytes = sum(float_state[name].size * 4 for name in bundle.packed)
    int8_bytes = sum(part.nbytes for parts in bundle.packed.values() for part in parts)
    return {
        "int8_tables": len(bundle.packed),
        "int8_table_bytes_float32": float_bytes,
        "int8_table_bytes": int8_bytes,
        "int8_table_compression": float_bytes / int8_bytes,
        "int8_val_auc_float32": aucs[0],
        "int8_val_auc": aucs[1],
        "int8_val_auc_change": aucs[1] - aucs[0],
    }
