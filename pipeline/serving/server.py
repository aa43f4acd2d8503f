"""`snn serve`: the online scorer behind HTTP (FastAPI on uvicorn).

    POST /score        {"records": [{column: value, ...}, ...]} (or one record, or a bare list)
                       -> {"score": [...], "raw_score": [...]} (Bundle.score_columns: per task with tasks)
    POST /invocations  MLflow's scoring protocol: {"dataframe_split": {"columns", "data"}},
                       {"dataframe_records": [...]}, {"instances": [...]} or {"inputs": [...]}
                       -> {"predictions": [{"score": s, "raw_score": r}, ...]}
    GET  /health       200 while the process serves
    GET  /ready        200 once a model is loaded, else 503
    GET  /metadata     the model (Model.metadata) and where it came from (the registry version)
    POST /reload       resolve the source again (models:/NAME@ALIAS) and swap in a new version

A bad request gets a 4xx and {"error": message} naming the field: 400 (not JSON, empty, a value a
feature cannot take, schema drift under --strict), 413 (a body over --max-body bytes), 415 (not
JSON). Scoring runs in the request's worker process; `--workers N` starts N processes. SIGTERM
stops accepting connections and finishes the accepted requests first (uvicorn's graceful
shutdown). With `--poll SECONDS` each worker checks the alias that often and swaps in a new
version when it moves, serving the old one until the new one is loaded: no downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import InputError, SnnError
from .model import Model, load

CONFIG_ENV = "SNN_SERVE_CONFIG"  # the worker processes' settings (JSON), set by `serve`
MAX_BODY = 5 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024  # an over-limit body is read and dropped up to here, then the connection cut


@dataclass(frozen=True)
class ServeConfig:
    source: str  # a bundle folder, an MLflow model folder or URI
    strict: bool = False
    max_body: int = MAX_BODY
    poll_seconds: float = 0.0  # 0: never re-resolve the source on a timer
    workers: int = 1  # /reload reaches one worker: with several, only --poll reloads them all


class Served:
    """The model being served and what it was resolved to; `reload` swaps in a new one atomically."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.lock = threading.Lock()
        self.version: str | None = None
        self.model: Model | None = None
        self.loaded_at = 0.0

    def resolved_version(self) -> str | None:
        """The registry version the source names now (models:/NAME@ALIAS or /NAME/VERSION), else None."""
        source = self.config.source
        if not source.startswith("models:/"):
            return None
        from mlflow.tracking import MlflowClient

        name, _, rest = source[len("models:/") :].partition("@")
        client = MlflowClient()
        if rest:
            return str(client.get_model_version_by_alias(name, rest).version)
        name, _, version = source[len("models:/") :].partition("/")
        return version or None

    def reload(self) -> bool:
        """Load the source again when it names another version (or nothing is loaded); True if swapped.
        The version resolved is the one loaded (models:/NAME/VERSION), even if the alias moves meanwhile."""
        with self.lock:
            version = self.resolved_version()
            if self.model is not None and version == self.version:
                return False
            source = self.config.source
            if version is not None:
                source = f"models:/{source[len('models:/') :].split('@')[0].split('/')[0]}/{version}"
            model = load(source, self.config.strict)  # the old model serves meanwhile
            model.source = self.config.source
            self.model, self.version, self.loaded_at = model, version, time.time()
            return True


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _json_body(request: Request, limit: int) -> Any:
    """The request's JSON, or BadRequest: 415 not JSON, 413 over `limit` bytes, 400 empty or unparsable."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise BadRequest(415, f"content-type {kind!r}: send application/json")
    chunks, size = [], 0
    async for chunk in request.stream():  # read on past the limit (discarding) so the client hears the 413
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break  # a client this far over is cut off
    if size > limit:
        raise BadRequest(413, f"body of {size:,}+ bytes is over the limit of {limit:,} (--max-body)")
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest(400, 'empty body; send JSON such as {"records": [{"feature": value, ...}]}')
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body is not JSON ({exc})") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply; send records of column: value") from None


def score_records(payload: Any) -> list:
    """/score's body -> its records: {"records": [...]} or {"records": {...}}, a bare list, or one record."""
    if isinstance(payload, dict) and "records" in payload:
        payload = payload["records"]
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise BadRequest(400, f"records: expected a list of objects, got {type(payload).__name__}")
    return payload


def invocation_records(payload: Any) -> list:
    """MLflow's /invocations body -> its records (dataframe_split, dataframe_records, instances, inputs)."""
    if not isinstance(payload, dict):
        raise BadRequest(400, "expected a JSON object with dataframe_split, dataframe_records, instances or inputs")
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
            raise BadRequest(400, "dataframe_split: expected {columns: [...], data: [[...], ...]}")
        columns, data = split["columns"], split.get("data", [])
        if not isinstance(data, list) or any(not isinstance(r, list) or len(r) != len(columns) for r in data):
            raise BadRequest(400, f"dataframe_split.data: expected rows of {len(columns)} values (one per column)")
        return [dict(zip(columns, row)) for row in data]
    for key in ("dataframe_records", "instances", "inputs"):
        if key in payload:
            records = payload[key]
            if isinstance(records, dict) and all(isinstance(v, list) for v in records.values()):
                lengths = {len(v) for v in records.values()}
                if len(lengths) > 1:
                    raise BadRequest(400, f"{key}: columns of different lengths {sorted(lengths)}")
                n = lengths.pop() if lengths else 0
                return [{k: v[i] for k, v in records.items()} for i in range(n)]  # columns -> records
            if not isinstance(records, list):
                raise BadRequest(400, f"{key}: expected a list of objects")
            return records
    raise BadRequest(
        400, f"unknown keys {sorted(payload)}: use dataframe_split, dataframe_records, instances or inputs"
    )


def create_app(config: ServeConfig):
    """The FastAPI app serving `config.source`."""
    served = Served(config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        served.reload()
        poller = asyncio.create_task(_poll(served)) if config.poll_seconds > 0 else None
        yield
        if poller is not None:
            poller.cancel()

    app = FastAPI(title="snn serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    def scored(records: list) -> dict:
        model = served.model
        if model is None:
            raise BadRequest(503, "no model loaded yet")
        try:
            columns = model.outputs(records)
        except InputError as exc:
            raise BadRequest(400, str(exc)) from None
        return {name: values.tolist() for name, values in columns.items()}

    @app.exception_handler(BadRequest)
    async def bad_request(request, exc: BadRequest):
        return _error(exc.status, str(exc))

    @app.post("/score")
    async def score(request: Request):
        return JSONResponse(scored(score_records(await _json_body(request, config.max_body))))

    @app.post("/invocations")
    async def invocations(request: Request):
        columns = scored(invocation_records(await _json_body(request, config.max_body)))
        names = list(columns)
        rows = [dict(zip(names, values)) for values in zip(*columns.values())]
        return JSONResponse({"predictions": rows})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if served.model is None:
            return _error(503, "no model loaded yet")
        return {"status": "ready", "version": served.version}

    @app.get("/metadata")
    async def metadata():
        if served.model is None:
            return _error(503, "no model loaded yet")
        return {**served.model.metadata(), "registry_version": served.version, "loaded_at": served.loaded_at}

    @app.post("/reload")
    async def reload():
        if config.workers > 1:
            return _error(
                409,
                f"POST /reload reaches one of {config.workers} workers; start the server with --poll SECONDS "
                "to have every worker pick up a moved alias",
            )
        try:
            swapped = await asyncio.to_thread(served.reload)
        except Exception as exc:  # the registry refused or is down: keep serving what is loaded
            message = str(exc) if isinstance(exc, SnnError) else f"{type(exc).__name__}: {str(exc)[:300]}"
            return _error(502, f"reload failed, still serving version {served.version}: {message}")
        return {"reloaded": swapped, "version": served.version}

    return app


async def _poll(served: Served) -> None:
    while True:
        await asyncio.sleep(served.config.poll_seconds)
        with contextlib.suppress(Exception):  # a registry hiccup: keep serving, try again next time
            await asyncio.to_thread(served.reload)


def app_from_environment():
    """The uvicorn factory of each worker process: the app for the config `serve` put in the environment.
    A worker scores one request at a time, so BLAS runs on one thread: more would only contend with
    the other workers (and cost a 100-candidate request several times its time on a busy machine)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Run the server until SIGTERM or SIGINT (the model is checked here first: a bad source fails fast)."""
    import uvicorn

    load(config.source, config.strict)
    os.environ[CONFIG_ENV] = json.dumps(config.__dict__)
    uvicorn.run(
        "snn.pipeline.serving.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
