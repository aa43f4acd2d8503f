"""Raw rows: the `data:` spec, readers (CSV, parquet, Criteo TSV), checks of the sources, per-row
keys, labels and weights, chunked streaming routed to splits, encoded CSR splits on disk, synthetic data."""
