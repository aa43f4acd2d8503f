"""The MLflow model's code ("models from code"): MLflow runs this file when it loads the model, so
the logged model holds this code and the bundle, never a pickle of snn objects.

predict: a pandas DataFrame of raw columns -> a DataFrame of Bundle.score_columns (the online scorer).
"""

import mlflow
from mlflow.pyfunc import PythonModel

BUNDLE_ARTIFACT = "bundle"  # mlflow_model.BUNDLE_ARTIFACT: this file is run on its own


class SnnModel(PythonModel):
    def load_context(self, context) -> None:
        from snn.pipeline.serving.model import load

        self.model = load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):  # no type hints: the signature is logged
        return self.model.predict(model_input).to_pandas()


mlflow.models.set_model(SnnModel())
