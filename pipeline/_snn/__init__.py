"""snn: sparse neural networks for ranking and click prediction.

The `snn` package itself (this folder is installed as `snn`; the library is `snn.pipeline`, the
command line `snn.cli`):

    import snn
    model = snn.load("specs/.snn/bundles/adult-income")   # or "models:/NAME@ALIAS"
    model.score({"age": 39, "workclass": "State-gov", ...})
"""

from snn.pipeline import __version__
from snn.pipeline.serving.model import Model, load

__all__ = ["Model", "__version__", "load"]
