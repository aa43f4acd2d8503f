"""The package ships every module: each folder of pipeline/ with Python files (and the C sources)
is a package that pyproject.toml lists, so a wheel holds the same code as the checkout."""

import tomllib

from .conftest import ROOT


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"snn", "snn.cli"} | {
        "snn.pipeline" + "".join(f".{part}" for part in folder.relative_to(ROOT / "pipeline").parts)
        for folder in [ROOT / "pipeline", *(ROOT / "pipeline").rglob("*")]
        if folder.is_dir()
        and (any(folder.glob("*.py")) or any(folder.glob("*.c")))
        and "__pycache__" not in folder.parts
        and folder != ROOT / "pipeline" / "_snn"  # the `snn` package itself (package-dir)
    }
    assert listed == found
