"""snn.cli: the thin typer front end of snn.pipeline."""
