"""snn.pipeline: the library behind the `snn` command (specs, features, model, steps)."""

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it
