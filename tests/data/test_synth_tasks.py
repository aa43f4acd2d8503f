"""`snn data synth --tasks`: a click and, given a click, a conversion, with their true probabilities."""

import numpy as np
import polars as pl

from snn.pipeline.data.synth import SynthConfig, write


def test_two_dependent_events_at_realistic_rates(tmp_path):
    summary = write(tmp_path / "t.parquet", SynthConfig(rows=60_000, seed=2, positive_rate=0.05, tasks=True))
    frame = pl.read_parquet(tmp_path / "t.parquet")
    assert frame.columns[:2] == ["click", "convert"] and "label" not in frame.columns
    click, convert = frame["click"].to_numpy(), frame["convert"].to_numpy()
    assert not convert[click == 0].any()  # no conversion without a click
    assert abs(click.mean() - 0.05) < 0.005 and abs(convert[click == 1].mean() - 0.10) < 0.02
    np.testing.assert_allclose(frame["p_convert"], frame["p_click"] * frame["p_convert_given_click"], rtol=1e-12)
    assert abs(summary["conversions_per_click"] - convert[click == 1].mean()) < 1e-12
    # the features are the same rows as without tasks (the events are drawn after them)
    write(tmp_path / "one.parquet", SynthConfig(rows=60_000, seed=2, positive_rate=0.05))
    single = pl.read_parquet(tmp_path / "one.parquet")
    assert frame.select("I1", "C1").equals(single.select("I1", "C1"))
    np.testing.assert_array_equal(single["label"].to_numpy(), click)
