"""libSVM and libFFM sources: lines split into label, qid and features; a weighted id list reads the
features; a planted logistic model is learned end to end; the wrong format and ±1 labels without
`positive` are refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from snn.pipeline.data.readers import Reader
from snn.pipeline.errors import InputError
from snn.pipeline.features.id_list import IdListEncoder
from snn.pipeline.spec import parse_spec

from ..conftest import invoke

TRAIN_ROWS, TEST_ROWS = 2000, 600


def write_planted(path: Path, fmt: str, rows: int, seed: int) -> None:
    """`rows` lines of a planted logistic model, labels -1/+1 (+1 written both as "+1" and "1").
    libsvm: 8 of 40 indices per row with values in (0, 2], a qid per 10 rows; libffm: one of 6
    indices in each of 5 fields, value 1. The weights are drawn from seed 0, the rows from `seed`."""
    weights = np.random.default_rng(0).normal(0, 1.5, size=40 if fmt == "libsvm" else (5, 6))
    rng = np.random.default_rng(seed)
    lines = []
    for row in range(rows):
        if fmt == "libsvm":
            indices = np.sort(rng.choice(40, size=8, replace=False))
            values = np.round(rng.uniform(0.1, 2.0, size=8), 3)
            logit = float(weights[indices] @ values) - 1.0
            items = " ".join(f"{i + 1}:{v:g}" for i, v in zip(indices, values, strict=True))
            items = f"qid:{row // 10} {items}"
        else:
            indices = rng.integers(0, 6, size=5)
            logit = float(weights[np.arange(5), indices].sum())
            items = " ".join(f"{field}:{index}:1" for field, index in enumerate(indices))
        positive = rng.random() < 1 / (1 + np.exp(-logit))
        label = ("+1" if row % 2 else "1") if positive else "-1"
        lines.append(f"{label} {items}")
    path.write_text("\n".join(lines) + "\n")


def spec_dict(fmt: str, **label) -> dict:
    return {
        "version": 1,
        "name": f"planted-{fmt}",
        "data": {
            "format": fmt,
            "train": {"path": f"train.{fmt}"},
            "test": {"path": f"test.{fmt}"},
            "holdout": {"fraction": 0.2},
            "label": {"column": "label", **label},
        },
        "features": [{"name": "features", "kind": "id_list", "separator": " ", "weighted": True}],
        "train": {"epochs": 2, "batch_size": 64},
        "validation": {"gates": {}},
    }


def planted_folder(folder: Path, fmt: str, **label) -> Path:
    """train and test files of the planted model and a spec reading them; the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_planted(folder / f"train.{fmt}", fmt, TRAIN_ROWS, seed=1)
    write_planted(folder / f"test.{fmt}", fmt, TEST_ROWS, seed=2)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict(fmt, **label), sort_keys=False))
    return path


# ----------------------------------------------------------------------------- the reader


def test_libsvm_lines_split_into_label_qid_and_features(tmp_path):
    path = tmp_path / "a.libsvm"
    path.write_text(
        "+1 qid:3 1:0.5 7:1\n"
        "\n"
        "# a comment line\n"
        "-1\tqid:4\t2:1  3:0.25   # a trailing comment\n"
        "   \n"
        "1 4:2\r\n"
        "0\n"
        "? 5:1\n"
    )
    reader = Reader("libsvm", null_values=("", "?"))
    assert reader.schema(path) == {"label": pl.String, "qid": pl.String, "features": pl.String}
    frame = reader.read(path)
    assert frame.to_dict(as_series=False) == {
        "row_id": [0, 3, 5, 6, 7],  # the line's index: blank and comment lines counted, then dropped
        "label": ["+1", "-1", "1", "0", None],
        "qid": ["3", "4", None, None, None],
        "features": ["1:0.5 7:1", "2:1 3:0.25", "4:2", None, "5:1"],
    }
    assert reader.read(path, rows=(1, 6))["row_id"].to_list() == [3, 5]


def test_a_libsvm_file_without_qids_has_no_qid_column(tmp_path):
    path = tmp_path / "a.libsvm"
    path.write_text("1 1:1 2:0.5\n0 3:1\n")
    frame = Reader("libsvm").read(path)
    assert frame.columns == ["row_id", "label", "features"]
    assert frame["features"].to_list() == ["1:1 2:0.5", "3:1"]


def test_libffm_lines_keep_their_field_index_value_items(tmp_path):
    path = tmp_path / "a.libffm"
    path.write_text("1 0:3:1 1:7:0.5 # comment\n\n0\t0:4:1\t\t2:9:2\n")
    frame = Reader("libffm").read(path)
    assert frame.to_dict(as_series=False) == {
        "row_id": [0, 2],
        "label": ["1", "0"],
        "features": ["0:3:1 1:7:0.5", "0:4:1 2:9:2"],
    }


def test_a_weighted_id_list_weights_each_item_by_the_number_after_its_last_colon():
    encoder = IdListEncoder("features", separator=" ", weighted=True, buckets=1000)
    items = encoder.split(pl.Series(["0:3:1 1:7:0.5", "4:2", None]))
    assert items.text.to_list() == ["0:3", "1:7", "4"]
    assert items.weights is not None and items.weights.tolist() == [1.0, 0.5, 2.0]
    assert items.lengths.tolist() == [2, 1, 0]
    ids, values, lengths = encoder.encode_values(["0:3:1 1:7:0.5"])  # the online path parses alike
    assert values.tolist() == [1.0, 0.5] and lengths.tolist() == [2]
    batch_ids, _, _ = encoder.encode_lists(pl.Series(["0:3:1 1:7:0.5"]))
    assert ids.tolist() == batch_ids.tolist()


@pytest.mark.parametrize("fmt", ["libsvm", "libffm"])
def test_the_reader_round_trips_through_json(fmt):
    reader = Reader(fmt, None, ",", ("", "?"), None)
    assert Reader.from_json(json.loads(json.dumps(reader.to_json()))) == reader


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("libsvm", "age,income\n39,1\n", "is not a libsvm file: its first data line 'age,income'"),
        ("libsvm", "age,income\n39,1\n", "set data.format: csv"),
        ("libsvm", "# header comment\nyes 1:1\n", "starts with 'yes', not a numeric label"),
        ("libsvm", "1\t5\t110\t\t16\n", "has item '5', not <index>:<value>"),
        ("libffm", "1 3:1 7:0.5\n", "its items are <index>:<value>: set data.format: libsvm"),
        ("libffm", "1 0:3:1 bad\n", "has item 'bad', not <field>:<index>:<value>"),
    ],
)
def test_a_file_that_is_not_in_the_declared_line_format_is_refused_with_the_fix(tmp_path, fmt, text, message):
    path = tmp_path / "data.txt"
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        Reader(fmt).check_file(path)
    assert message in str(raised.value)


def test_a_parquet_file_declared_libsvm_names_parquet_and_a_header_is_refused(tmp_path):
    parquet = tmp_path / "data.parquet"
    pl.DataFrame({"label": [1]}).write_parquet(parquet)
    with pytest.raises(InputError, match="set data.format: parquet"):
        Reader("libsvm").check_file(parquet)
    text = tmp_path / "data.libsvm"
    text.write_text("1 1:1\n")
    with pytest.raises(InputError, match="no header line"):
        Reader("libsvm").read(text, header=True)
    assert Reader("libsvm").read(text, header=False).height == 1


def test_only_the_head_of_a_long_first_line_is_checked(tmp_path):
    path = tmp_path / "wide.libsvm"
    path.write_text("1 " + " ".join(f"{i}:0.5" for i in range(20_000)) + "\n")  # longer than the 64 KiB read
    assert Reader("libsvm").read(path)["features"].str.count_matches(" ").item() == 19_999


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data.update(columns=["label", "features"]), "drop data.columns"),
        (lambda data: data["train"].update(header=True), "drop `header: true` from data.train"),
    ],
)
def test_the_spec_refuses_columns_and_headers_with_a_line_format(change, message):
    spec = spec_dict("libsvm", positive=["+1", "1"])
    change(spec["data"])
    with pytest.raises(Exception, match=message):
        parse_spec(yaml.safe_dump(spec))


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("fmt", ["libsvm", "libffm"])
def test_a_planted_model_is_learned_from_a_line_format_and_its_bundle_predicts(tmp_path, fmt):
    spec = planted_folder(tmp_path, fmt, positive=["+1", "1"])
    runner = CliRunner()
    result = invoke(runner, "validate", spec, "--json")
    assert result.exit_code == 0, result.stderr
    test = json.loads(result.stdout)["metrics"]["test"]
    assert test["raw"]["rows"] == TEST_ROWS
    assert test["raw"]["auc"] > 0.75, test["raw"]

    bundle = tmp_path / ".snn" / "bundles" / f"planted-{fmt}"
    predictions = tmp_path / "predictions.csv"
    result = invoke(runner, "predict", bundle, tmp_path / f"test.{fmt}", "-o", predictions)
    assert result.exit_code == 0, result.stderr
    scores = pl.read_csv(predictions)
    assert scores["row_id"].to_list() == list(range(TEST_ROWS))
    assert scores["score"].is_between(0, 1).all()
    online = tmp_path / "online.csv"
    result = invoke(runner, "predict", bundle, tmp_path / f"test.{fmt}", "-o", online, "--online")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(pl.read_csv(online)["score"].to_numpy(), scores["score"].to_numpy(), atol=1e-6)


def test_plus_minus_one_labels_without_positive_name_the_values_and_the_fix(tmp_path):
    spec = planted_folder(tmp_path, "libsvm")
    result = invoke(CliRunner(), "validate", spec, "--json")
    assert result.exit_code == 2, result.stderr
    assert "found -1, +1 and 1" in result.stderr
    assert 'set data.label.positive to the values that mean 1, e.g. positive: ["+1", "1"]' in result.stderr


def test_a_csv_file_declared_libsvm_exits_2_naming_the_format(tmp_path):
    spec = planted_folder(tmp_path, "libsvm", positive=["+1", "1"])
    pl.DataFrame({"label": [1, 0] * 50, "x": range(100)}).write_csv(tmp_path / "train.libsvm")
    result = invoke(CliRunner(), "validate", spec, "--json")
    assert result.exit_code == 2, result.stderr
    assert "is not a libsvm file" in result.stderr and "data.format: csv" in result.stderr
