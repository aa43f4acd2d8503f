"""Synthetic data, streaming prepare (chunk-size invariant), batched online scoring, oracle metrics, bench JSON."""

import functools
import json
import operator
from contextlib import nullcontext

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.data.synth import CATEGORICAL, CONTINUOUS, SynthConfig, synth_spec, train_rows, write
from snn.pipeline.serving.online import OnlineScorer
from snn.pipeline.spec import load_spec
from snn.pipeline.steps.prepare import prepare
from snn.pipeline.store.bundle import Bundle

from ..conftest import invoke as invoke_with
from ..conftest import native_off


def invoke(args):
    return invoke_with(CliRunner(), *args)


ROWS = 6000


def _prepared(loaded, downsampling, folder, chunk_rows: int):
    """prepare into `folder`: (its feature map's JSON, rows per split, the splits)."""
    folder.mkdir()
    info = prepare(loaded.data_files, loaded.spec.features, downsampling, folder, chunk_rows=chunk_rows)
    splits = {name: EncodedSplit.load(folder / "splits" / name) for name in info["rows"]}
    return json.loads((folder / "feature_map.json").read_text()), info["rows"], splits


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    write(folder / "s.parquet", SynthConfig(rows=ROWS, seed=3, row_group=1000))
    spec = synth_spec("s.parquet", ROWS, name="s", width=8, batch_size=256)
    (folder / "s.yaml").write_text(yaml.safe_dump(spec))
    return folder


def test_synth_is_deterministic_criteo_shaped_and_written_in_row_groups(synth, tmp_path):
    write(tmp_path / "again.parquet", SynthConfig(rows=ROWS, seed=3, row_group=1000))
    a, b = pl.read_parquet(synth / "s.parquet"), pl.read_parquet(tmp_path / "again.parquet")
    assert a.equals(b)
    assert a.columns == ["label"] + CONTINUOUS + CATEGORICAL + ["p_true"]
    assert a["I1"].null_count() > 0 and a["I1"].max() > 50 * a["I1"].median()  # missing values, skewed
    top = a["C26"].value_counts().sort("count", descending=True)["count"]
    assert top[0] > 20 * top[len(top) // 2]  # Zipf: a heavy head, a long tail
    assert a["p_true"].min() > 0 and a["p_true"].max() < 1
    assert abs(a["label"].mean() - a["p_true"].mean()) < 0.03  # labels drawn from p_true
    import pyarrow.parquet as pq

    assert pq.ParquetFile(synth / "s.parquet").metadata.num_row_groups == ROWS // 1000


def test_streaming_prepare_does_not_depend_on_the_chunk_size(synth, tmp_path):
    loaded = load_spec(synth / "s.yaml")
    outputs = []
    for chunk in (700, 100_000):
        outputs.append(_prepared(loaded, None, tmp_path / str(chunk), chunk))
    (map_a, rows_a, splits_a), (map_b, rows_b, splits_b) = outputs
    assert map_a == map_b and rows_a == rows_b
    for name in rows_a:
        for array in ("ids", "values", "offsets", "labels", "weights"):
            np.testing.assert_array_equal(getattr(splits_a[name], array), getattr(splits_b[name], array))
        assert splits_a[name].width == len(CONTINUOUS) + len(CATEGORICAL)
    cut = train_rows(ROWS)  # synth_spec: train rows [0, cut) with a key-hash holdout, test rows [cut, ROWS)
    assert set(rows_a) == {"train", "validation"}  # test rows are scored raw by validate, not encoded here
    assert rows_a["train"] + rows_a["validation"] == cut


def test_validate_reports_the_oracle_and_batched_online_scores_equal_single_ones(synth):
    result = invoke(["validate", str(synth / "s.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    test = report["metrics"]["test"]
    frame = pl.read_parquet(synth / "s.parquet").slice(train_rows(ROWS))
    from sklearn.metrics import roc_auc_score

    assert test["oracle"]["auc"] == pytest.approx(roc_auc_score(frame["label"], frame["p_true"]), abs=1e-12)
    assert 0.5 < test["raw"]["auc"] <= test["oracle"]["auc"] + 0.02
    scorer = OnlineScorer(Bundle.load(report["bundle"]))
    records = frame.drop("label", "p_true").head(300).to_dicts()
    records[0]["C3"] = "a string id"  # mixed types fall back to the per-value path
    np.testing.assert_allclose(scorer.score_many(records), [scorer.score(r) for r in records], rtol=0, atol=1e-12)


def test_data_synth_command_writes_data_and_a_spec(tmp_path):
    result = invoke(
        [
            "data",
            "synth",
            str(tmp_path / "d.parquet"),
            "--rows",
            "500",
            "--row-group",
            "200",
            "--spec",
            str(tmp_path / "d.yaml"),
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 500 and pl.read_parquet(tmp_path / "d.parquet").height == 500
    assert load_spec(tmp_path / "d.yaml").spec.data.oracle == "p_true"
    bad = invoke(["data", "synth", str(tmp_path / "e.parquet"), "--rows", "0"])
    assert bad.exit_code == 2 and "--rows" in bad.stderr


def test_bench_tiny_reports_every_figure(tmp_path):
    result = invoke(["bench", "--size", "tiny", "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    figures = {f["id"]: f for f in report["figures"]}
    forward = [f"B2.forward_{setting}_batch_{batch}" for setting in ("hot", "cold") for batch in (1, 16, 64, 256)]
    expected = [
        "B1.train_vs_embeddingbag",
        "B1.train_vs_sparse_mm",
        *forward,
        "B3.fit_encode_20k",
        "B3.peak_rss_20k",
        "B3.fit_encode_40k",
        "B3.peak_rss_40k",
        *[f"Q.seed{seed}.auc" for seed in (0, 1, 2)],
        "Q.gap_mean",
        "Q.train_rows_per_s",
        "B4.predict_rows_per_s",
        "B4.online_p50_ms",
        "B4.online_p99_ms",
        "B5.logistic_vs_vw",
        "B6.dlrm_train_vs_plain",
        "B6.dlrm_online_p50_ms",
        "B6.dlrm_online_p99_ms",
        *[f"Q.tasks.{task}.{what}" for task in ("click", "convert") for what in ("auc", "calibration")],
        "B10.tasks.train",
        *[f"B11.serve.{c}x{k}.{what}" for c in (1, 100) for k in (8, 64) for what in ("rps", "p99")],
        *[f"B11.floor.{c}x{k}.p99" for c in (1, 100) for k in (8, 64)],
        "B11.serve.soak",
        *[f"B12.{what}" for what in ("help", "spec_error", "init", "cached_run", "cached_run_untracked")],
        "B13.prepare_2_vs_1_processes",
        "B13.train_2_vs_1_processes",
        "B13.exchanged_bytes_per_step",
    ]
    assert sorted(figures) == sorted(expected)
    soak = figures.pop("B11.serve.soak")
    assert soak["snn"] == 0 and "failed: mlflow 0, floor 0" in soak["note"]  # no request lost or failed
    for name, f in figures.items():
        assert f["snn"] is not None and f["snn"] > 0, name
        if f["competitor_value"] is not None:
            assert f["ratio"] == pytest.approx(
                f["snn"] / f["competitor_value"] if f["higher_is_better"] else f["competitor_value"] / f["snn"]
            )
    for name in (
        "B1.train_vs_embeddingbag",
        "B2.forward_hot_batch_1",
        "B2.forward_cold_batch_256",
        "B3.fit_encode_20k",
        "B6.dlrm_train_vs_plain",
    ):
        assert figures[name]["competitor_value"] > 0
    assert (
        figures["B5.logistic_vs_vw"]["competitor_value"] is not None
        or "skipped" in figures["B5.logistic_vs_vw"]["note"]
    )
    written = tmp_path / "bench.json"
    shown = invoke(["bench", "--size", "tiny", "--workdir", str(tmp_path), "-o", str(written)])  # the table
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:4] == ["figure", "snn", "competitor", "ratio"]
    assert {line.split()[0] for line in lines[1:] if not line.startswith("note:")} == set(expected)
    assert {f["id"] for f in json.loads(written.read_text())["figures"]} == set(expected)


def test_prepare_routes_rows_like_a_direct_split_with_and_without_native_kernels(synth, tmp_path):
    from snn.pipeline.data.chunks import needed_columns, stream_chunks
    from snn.pipeline.data.rows import holdout_mask, unit_hash
    from snn.pipeline.features.feature_map import FeatureMap

    spec = synth_spec(str(synth / "s.parquet"), ROWS, name="s", width=8, batch_size=256)
    spec["train"]["negative_downsampling"] = {"rate": 0.4, "seed": 3}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    loaded = load_spec(tmp_path / "s.yaml")
    outputs = []
    for mode in ("native", "fallback"):
        with native_off() if mode == "fallback" else nullcontext():
            outputs.append(_prepared(loaded, loaded.spec.train.negative_downsampling, tmp_path / mode, 700))
    (map_a, rows_a, splits_a), (map_b, rows_b, splits_b) = outputs
    assert map_a == map_b and rows_a == rows_b
    for name in rows_a:
        for array in ("ids", "offsets", "labels", "weights"):
            np.testing.assert_array_equal(getattr(splits_a[name], array), getattr(splits_b[name], array))

    # the same split made directly on the whole frame: held-out rows by key hash, never downsampled;
    # train rows: positives and the negatives whose key hash falls under the rate
    frame = (
        pl.read_parquet(synth / "s.parquet")
        .head(train_rows(ROWS))
        .with_row_index("row_id")
        .with_columns(pl.col("row_id").cast(pl.Int64))
    )
    held = holdout_mask(frame["row_id"], loaded.spec.data.holdout)
    kept = ~held & ((frame["label"].to_numpy() > 0) | (unit_hash(frame["row_id"], 3) < 0.4))
    feature_map = FeatureMap.from_json(map_a)
    for split, rows in (("validation", held), ("train", kept)):  # each split holds exactly those rows, in order
        expected_ids, _ = feature_map.encode_frame(frame.filter(pl.Series(rows)))
        np.testing.assert_array_equal(splits_a[split].ids.reshape(expected_ids.shape), expected_ids)
    scored = []  # scoring reads the held-out rows without downsampling the train rows it skips
    columns = needed_columns(loaded.spec.data, loaded.spec.features)
    for chunk in stream_chunks(loaded.data_files, columns, ("train",), chunk_rows=700):
        scored += [chunk.part(rows)[0]["row_id"].to_list() for split, rows in chunk.routes if split == "validation"]
    assert functools.reduce(operator.iadd, scored, []) == np.flatnonzero(held).tolist()
    train = frame.filter(pl.Series(kept))
    direct = FeatureMap.fit(loaded.spec.features, train, np.ones(train.height))
    assert direct.to_json() == map_a
    ids, _ = direct.encode_frame(train)
    np.testing.assert_array_equal(splits_a["train"].ids.reshape(train.height, -1), ids)


def test_read_ahead_keeps_the_order_and_raises_where_the_reader_does():
    from snn.pipeline.data.chunks import read_ahead
    from snn.pipeline.errors import InputError

    def chunks():
        yield from range(3)
        raise InputError("chunk 3 is unreadable")

    seen = []
    with pytest.raises(InputError, match="chunk 3"):
        for item in read_ahead(chunks()):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert list(read_ahead(iter([]))) == []
