"""The bundle as an MLflow model: a pyfunc "model from code" (pyfunc_code.py) whose artifact is the
bundle folder, so nothing of snn is pickled; `mlflow.pyfunc.load_model`, `mlflow models serve
--env-manager local` and the Model Registry all read it.

    <model>/MLmodel                     flavor python_function, the signature, the input example
    <model>/artifacts/bundle/...        the bundle folder as `snn fit` / `snn calibrate` wrote it
    <model>/requirements.txt            snn's runtime dependencies, pinned to the installed versions

The pyfunc's predict takes a pandas DataFrame of raw columns and returns a DataFrame of
Bundle.score_columns (score and raw_score, or per task), computed by the online scorer.

Registering (`register`) creates the registered model only when a version follows it: a failure
leaves the registry as it was. Promoting (`promote`) sets an alias on a version.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import polars as pl

from ..errors import ArtifactError, TrackingError

BUNDLE_ARTIFACT = "bundle"
REQUIREMENTS = ("numpy", "polars", "pydantic", "pyyaml", "pandas", "mlflow", "mlflow-skinny")
CODE = Path(__file__).with_name("pyfunc_code.py")
URI_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3:", "gs:", "dbfs:", "wasbs:", "http")


def requirements() -> list[str]:
    """The serving environment: snn's runtime dependencies pinned to this environment's versions."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


@contextlib.contextmanager
def local_bundle(source: str) -> Iterator[Path]:
    """A bundle folder, an MLflow model folder, or an MLflow model URI -> a local bundle folder for the
    block (a URI's model is downloaded to a temporary folder, removed after)."""
    path = Path(source).expanduser()
    if path.is_dir() or not source.startswith(URI_SCHEMES):
        yield bundle_in(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="snn-model-"))
    try:
        import mlflow

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp))
        except Exception as exc:
            raise ArtifactError(
                f"cannot fetch the MLflow model {source}: {str(exc)[:300]}; check the name, version or "
                "alias and the tracking URI (MLFLOW_TRACKING_URI)"
            ) from None
        yield bundle_in(Path(local))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bundle_in(folder: Path) -> Path:
    """The bundle folder itself, or the bundle inside an MLflow model folder."""
    if (folder / "bundle.json").is_file():
        return folder
    inside = folder / "artifacts" / BUNDLE_ARTIFACT
    if (folder / "MLmodel").is_file() and (inside / "bundle.json").is_file():
        return inside
    raise ArtifactError(
        f"no bundle at {folder}: pass a bundle folder (with bundle.json), an MLflow model logged by snn, "
        "or a models:/NAME@ALIAS URI"
    )


def signature_and_example(example: pl.DataFrame, columns: dict[str, str], outputs: pl.DataFrame):
    """The model's signature and input example: every schema column, by name, optional (a missing one
    is scored as a missing value) and of any type: MLflow's casts refuse what snn reads (an integer
    for a number, a float for an integer category pandas held with a missing value), and the Model
    checks every value itself, naming the feature; the outputs as doubles. Returns (signature,
    input example: `example`'s schema columns)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs: list = [ColSpec(AnyType(), name, required=False) for name in columns]
    output = Schema([ColSpec("double", name) for name in outputs.columns])
    typed = example.select([c for c in columns if c in example.columns])
    return ModelSignature(inputs=Schema(inputs), outputs=output), typed.to_pandas()


def log_model(bundle: Path, example: pl.DataFrame, name: str = "model") -> str:
    """Log `bundle` as an MLflow model in the active run; `example` holds a few raw rows (the input
    example, and the signature's types). Returns the model's URI (models:/<model id>)."""
    import mlflow

    from .model import load

    model = load(bundle)
    signature, frame = signature_and_example(example, model.schema, model.predict(example.head(2)))
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(CODE),
        artifacts={BUNDLE_ARTIFACT: str(bundle.resolve())},  # a bundle link: the folder it names
        signature=signature,
        input_example=frame.head(2),
        pip_requirements=requirements(),
    )
    return info.model_uri


def register(model_uri: str, name: str, tracking_uri: str) -> str:
    """Register `model_uri` (models:/<logged model id>) as a new version of `name` (created if absent);
    returns the version.
    When the version cannot be made, a registered model this call created is deleted again."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    created = False
    try:
        try:
            client.get_registered_model(name)
        except Exception:
            client.create_registered_model(name)
            created = True
        model_id = model_uri.removeprefix("models:/")
        logged = client.get_logged_model(model_id)  # this store's model, whatever the process-wide URI
        version = client.create_model_version(
            name, logged.artifact_location, run_id=logged.source_run_id, model_id=model_id
        )
        return str(version.version)
    except Exception as exc:
        if created:
            with contextlib.suppress(Exception):
                client.delete_registered_model(name)
        raise TrackingError(f"could not register {model_uri} as {name!r}: {str(exc)[:300]}") from None


def promote(name: str, version: str, alias: str, tracking_uri: str) -> None:
    """Point `name@alias` at `version`."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)
    except Exception as exc:
        raise TrackingError(f"could not set alias {alias!r} on {name} version {version}: {str(exc)[:300]}") from None
