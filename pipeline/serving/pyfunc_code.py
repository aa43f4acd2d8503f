"""The MLflow model's code ("models from code"): MLflow runs this file when it loads the model, so
the logged model holds this code and the bundle, never a pickle of snn objects.

predict: a pandas DataFrame of raw columns -> a DataFrame of Bundle.score_columns (the online scorer).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

BUNDLE_ARTIFACT = "bundle"  # mlflow_model.BUNDLE_ARTIFACT: this file is run on its own


class SnnModel(PythonModel):
    def load_context(self, context) -> None:
        from snn.pipeline.serving.model import load

        self.model = load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # a DataFrame hint: MLflow infers nothing from it; the logged signature states the columns
        return self.model.predict(model_input).to_pandas()


mlflow.models.set_model(SnnModel())
