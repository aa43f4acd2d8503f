"""snn: sparse neural networks for ranking and click prediction.

The `snn` package itself (this folder is installed as `snn`; the library is `snn.pipeline`, the
command line `snn.cli`):

    import snn
    model = snn.load("specs/.snn/bundles/adult-income")   # or "models:/NAME@ALIAS"
    model.score({"age": 39, "workclass": "State-gov", ...})

`load` and `Model` are imported on first use, so `import snn.cli` (the command line) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from snn.pipeline import __version__

if TYPE_CHECKING:
    from snn.pipeline.serving.model import Model, load

__all__ = ["Model", "__version__", "load"]


def __getattr__(name: str):
    if name in ("Model", "load"):
        from snn.pipeline.serving import model

        return getattr(model, name)
    raise AttributeError(f"module 'snn' has no attribute {name!r}")
