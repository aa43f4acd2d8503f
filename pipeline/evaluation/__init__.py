"""Judging scores: metrics, calibrators, gates and slices, offline/online parity, plots."""
