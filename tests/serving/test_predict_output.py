"""`snn predict -o`: the format follows the output's name (.parquet, .csv, - for CSV on stdout); `snn --version`."""

import io

import polars as pl

from snn.pipeline import __version__

from ..conftest import ADULT_DIR, invoke


def test_the_output_format_follows_its_name(runner, tmp_path, small_run):
    bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
    data = ADULT_DIR / "adult.test"
    written = {}
    for name in ("p.parquet", "p.pq", "p.csv"):
        result = invoke(runner, "predict", bundle, data, "-o", tmp_path / name, "--rows", "0:50")
        assert result.exit_code == 0, result.stderr
        written[name] = (pl.read_csv if name.endswith(".csv") else pl.read_parquet)(tmp_path / name)
    to_stdout = invoke(runner, "predict", bundle, data, "-o", "-", "--rows", "0:50")
    assert to_stdout.exit_code == 0 and not (tmp_path / "-").exists()
    written["-"] = pl.read_csv(io.StringIO(to_stdout.stdout))
    expected = written["p.parquet"]
    assert expected.columns == ["row_id", "score", "raw_score"] and expected.height == 50
    for name, frame in written.items():
        assert frame.equals(expected), name  # CSV keeps every digit of a float64 (shortest round trip)
    unknown = invoke(runner, "predict", bundle, data, "-o", tmp_path / "p.txt")
    assert unknown.exit_code == 2 and ".csv" in unknown.stderr and not (tmp_path / "p.txt").exists()


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0 and result.stdout == f"snn {__version__}\n"
