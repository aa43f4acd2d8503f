"""Figures of the model family's options, each through the real pipeline and judged on test rows:

B7  mixed-dimension tables against uniform dim-16 tables, the rest of the model equal, on the
    Criteo sample (specs/criteo_mixed.yaml) and on synthetic Zipf rows, 2 seeds each: test AUC and
    the tables' parameter counts (target: within 0.002 AUC at half the parameters or fewer)
B8  8-bit tables (specs/adult_trees.yaml): the tables' bytes and the validation AUC change, as the
    train step measures them (target: >= 3.5x smaller, |change| <= 0.001)
B9  the tree-leaf library: scikit-learn's histogram GBDT (what tree_leaves uses) vs LightGBM (the
    bench extra), the same trees on the same coded inputs of Adult and Criteo: fit seconds and the
    GBDT's own test AUC
Q.lists  specs/synthetic_lists.yaml on 1M rows with planted id-list effects, one epoch (as Q):
    test AUC against the oracle's (target: within 0.01)
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from unittest.mock import patch

import numpy as np
import yaml

from ..spec import load_spec
from .figures import Figure
from .quality import SHIPPED, test_figures, validate_json

MIXED_SEEDS = (11, 12)
EMBEDDINGS = "embeddings"  # the block B7 compares (mixed_embedding, or embedding_bag of the same base dim)
SYNTHETIC_ROWS = 100_000


def run_spec(spec_path: Path, folder: Path, edit, env: dict | None = None) -> tuple[dict, dict]:
    """The spec with absolute data paths, changed by `edit(spec dict)`, validated in `folder` ->
    (test_figures, the train step's metrics and the parameter counts of the block named EMBEDDINGS:
    its tables and its projections)."""
    folder.mkdir(parents=True, exist_ok=True)
    with patch.dict(os.environ, env or {}):
        loaded = load_spec(spec_path)
    spec = loaded.spec.model_dump(mode="json", exclude_none=True)
    for split in ("train", "validation", "test"):
        if split in spec["data"]:
            spec["data"][split]["path"] = str(loaded.resolve(spec["data"][split]["path"]))
    edit(spec)
    spec["workdir"] = str(folder)
    spec.pop("tracking", None)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = validate_json(path, folder)
    train = Path(result["steps"]["train"]["path"])
    plan = json.loads((train / "bundle" / "plan.json").read_text())
    embedding = {n: int(np.prod(w["shape"])) for n, w in plan["weights"].items() if n.startswith(EMBEDDINGS + ".")}
    counts = {
        "table_parameters": sum(size for n, size in embedding.items() if ".projection_" not in n),
        "projection_parameters": sum(size for n, size in embedding.items() if ".projection_" in n),
    }
    return test_figures(result), {**json.loads((train / "step.json").read_text())["metrics"], **counts}


def _uniform(block: dict) -> dict:
    """A mixed_embedding block as uniform tables of its base dim (embedding_bag), else unchanged."""
    if block.get("kind") != "mixed_embedding":
        return block
    return {k: block[k] for k in ("name", "inputs", "dim", "pooling", "features") if k in block} | {
        "kind": "embedding_bag"
    }


def _synthetic_model(edit_spec: dict) -> None:
    """synthetic.yaml's features, tables of dim 16 (mixed) pooled into an MLP, no downsampling."""
    edit_spec["model"] = {
        "blocks": [
            {"name": "embeddings", "kind": "mixed_embedding", "inputs": {"entries": "features"}, "dim": 16,
             "alpha": 0.5, "blocks": 4},
            {"name": "flat", "kind": "concat", "inputs": {"e": "embeddings.out"}},
            {"name": "top", "kind": "mlp", "inputs": {"x": "flat.out"}, "layers": [64, 32]},
            {"name": "head", "kind": "logit", "inputs": {"x": "top.out"}},
        ]
    }  # fmt: skip
    edit_spec["data"]["train"]["rows"] = [0, SYNTHETIC_ROWS * 9 // 10]
    edit_spec["data"]["test"]["rows"] = [SYNTHETIC_ROWS * 9 // 10, SYNTHETIC_ROWS]
    edit_spec["train"].pop("negative_downsampling", None)
    edit_spec["validation"]["gates"] = {}


def bench_mixed_dims(folder: Path) -> list[Figure]:
    """B7 (see the module docstring)."""
    from ..data.synth import SynthConfig, write

    synthetic = folder / f"family-synthetic-{SYNTHETIC_ROWS}.parquet"
    if not synthetic.exists():
        write(synthetic, SynthConfig(rows=SYNTHETIC_ROWS, seed=0))
    env = {"SNN_SYNTH_DATA": str(synthetic.resolve())}
    cases = {
        "criteo": (SHIPPED / "criteo_mixed.yaml", lambda spec: None),
        "synthetic": (SHIPPED / "synthetic.yaml", _synthetic_model),
    }
    figures = []
    for name, (spec_path, base_edit) in cases.items():
        runs: dict[str, list[tuple[dict, dict]]] = {"mixed": [], "uniform": []}
        for seed in MIXED_SEEDS:
            for variant in runs:

                def edit(spec: dict, variant=variant, seed=seed, base_edit=base_edit) -> None:
                    base_edit(spec)
                    spec["train"]["seed"] = seed
                    if variant == "uniform":
                        spec["model"]["blocks"] = [_uniform(b) for b in spec["model"]["blocks"]]

                runs[variant].append(run_spec(spec_path, folder / f"family-{name}-{variant}-{seed}", edit, env))
        auc = {v: statistics.mean(q["auc"] for q, _ in r) for v, r in runs.items()}
        params = {v: r[0][1]["table_parameters"] + r[0][1]["projection_parameters"] for v, r in runs.items()}
        figures.append(
            Figure(
                f"B7.{name}.auc",
                f"{name}: test AUC, mixed-dimension tables vs uniform dim 16, mean of seeds {MIXED_SEEDS}",
                "auc",
                auc["mixed"],
                "uniform dims",
                auc["uniform"],
                target="within 0.002 at <= half the parameters",
                note=f"embedding parameters (tables + projections) {params['mixed']:,} vs {params['uniform']:,} "
                f"({params['mixed'] / params['uniform']:.1%}); per seed mixed "
                + ", ".join(f"{q['auc']:.4f}" for q, _ in runs["mixed"])
                + " uniform "
                + ", ".join(f"{q['auc']:.4f}" for q, _ in runs["uniform"]),
            )
        )
    return figures


def bench_int8_tables(folder: Path) -> list[Figure]:
    """B8 (see the module docstring)."""
    quality, train = run_spec(SHIPPED / "adult_trees.yaml", folder / "family-adult-trees", lambda spec: None)
    return [
        Figure(
            "B8.int8.size",
            "adult_trees: per-id tables' bytes, float32 / row-wise 8-bit",
            "x",
            train["int8_table_compression"],
            target=">= 3.5x",
            note=f"{train['int8_table_bytes_float32']:,} -> {train['int8_table_bytes']:,} bytes",
        ),
        Figure(
            "B8.int8.auc_change",
            "adult_trees: validation AUC change of the 8-bit tables",
            "auc",
            train["int8_val_auc_change"],
            target="|change| <= 0.001",
            note=f"float32 {train['int8_val_auc_float32']:.5f}, 8-bit {train['int8_val_auc']:.5f}; "
            f"test AUC {quality['auc']:.4f}",
            higher_is_better=False,
        ),
    ]


LIST_ROWS = 1_000_000


def bench_id_lists(folder: Path) -> list[Figure]:
    """Q.lists (see the module docstring)."""
    from ..data.synth import SynthConfig, write

    data = folder / f"family-lists-{LIST_ROWS}.parquet"
    if not data.exists():
        write(data, SynthConfig(rows=LIST_ROWS, seed=0, lists=True))

    def edit(spec: dict) -> None:
        spec["data"]["train"]["rows"] = [0, LIST_ROWS * 9 // 10]
        spec["data"]["test"]["rows"] = [LIST_ROWS * 9 // 10, LIST_ROWS]
        spec["train"]["epochs"] = 1

    env = {"SNN_SYNTH_LISTS_DATA": str(data.resolve())}
    quality, _ = run_spec(SHIPPED / "synthetic_lists.yaml", folder / "family-lists", edit, env)
    return [
        Figure(
            "Q.lists.auc",
            f"synthetic_lists: test AUC after 1 epoch, {LIST_ROWS:,} rows with planted id-list effects",
            "auc",
            quality["auc"],
            "oracle (true p)",
            quality["oracle_auc"],
            target="within 0.01 of oracle",
            note=f"gap {quality['oracle_auc'] - quality['auc']:.4f}; logloss raw {quality['logloss_raw']:.4f} "
            f"oracle {quality['oracle_logloss']:.4f}",
        )
    ]


def _tree_inputs(spec_name: str):
    """A shipped spec's train and test rows coded for trees as tree_leaves codes them (x for the
    fit: out-of-fold codes; x for scoring: the stored codes) and their labels."""
    from ..data.readers import Reader
    from ..data.rows import labels_of
    from ..features.spec import columns_of
    from ..features.tree_leaves import CODING_FOLDS, fit_inputs, frame_inputs

    loaded = load_spec(SHIPPED / spec_name)
    spec = loaded.spec
    reader = Reader.from_spec(spec.data)
    frames = {}
    for split in ("train", "test"):
        source = getattr(spec.data, split)
        frame = reader.read(loaded.resolve(source.path), tuple(source.rows) if source.rows else None)
        frames[split] = (frame, labels_of(frame, spec.data, split))
    inputs = [c for f in spec.features if f.kind != "tree_leaves" for c in columns_of(f)]
    (train, y), (test, y_test) = frames["train"], frames["test"]
    folds = np.random.default_rng(0).permutation(train.height) % CODING_FOLDS
    fit_x, codes = fit_inputs(train, inputs, y, np.ones(train.height), folds, "trees")
    return fit_x, y, frame_inputs(test, inputs, codes, "trees"), y_test


def bench_tree_library() -> list[Figure]:
    """B9 (see the module docstring); none when LightGBM is not installed."""
    import time

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    try:
        import lightgbm
    except ImportError:
        return []
    figures = []
    for name in ("adult.yaml", "criteo.yaml"):
        x, y, x_test, y_test = _tree_inputs(name)
        results = {}
        for library in ("sklearn", "lightgbm"):
            start = time.perf_counter()
            if library == "sklearn":
                model = HistGradientBoostingClassifier(
                    max_iter=64, max_leaf_nodes=16, early_stopping=False, random_state=0
                )
                score = model.fit(x, y).decision_function(x_test)
            else:
                model = lightgbm.LGBMClassifier(n_estimators=64, num_leaves=16, random_state=0, verbose=-1)
                score = model.fit(x, y).predict_proba(x_test, raw_score=True)
            results[library] = (time.perf_counter() - start, roc_auc_score(y_test, score))
        figures.append(
            Figure(
                f"B9.{name.removesuffix('.yaml')}.tree_auc",
                f"{name}: GBDT test AUC (64 trees x 16 leaves), scikit-learn (used) vs LightGBM",
                "auc",
                results["sklearn"][1],
                "LightGBM",
                results["lightgbm"][1],
                note=f"fit seconds {results['sklearn'][0]:.2f} vs {results['lightgbm'][0]:.2f}",
            )
        )
    return figures
