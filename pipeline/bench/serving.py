"""B11: `snn serve` under load, beside `mlflow models serve` of the same logged pyfunc model.

Both servers run at once on 127.0.0.1 with 2 worker processes each and take the same request bytes
on MLflow's protocol (POST /invocations, {"dataframe_records": [...]}); the load client is one
asyncio process holding one keep-alive connection per simulated client, each sending its next
request when the last answer arrived (closed loop). For 1 and 100 candidates per request at 8 and
64 clients: requests/s and the p50 / p99 latency, the servers' runs interleaved, medians over the
repeats. A third server, the floor, is FastAPI on uvicorn (2 workers) that parses the same request
and answers constant scores without a model: what HTTP and JSON alone cost on this machine. Then a
soak: `soak_requests` requests to `snn serve` at 8 clients, each answer checked (status 200, one
score per candidate): the figure is the count of lost or failed requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request  # at module level: FastAPI reads the handler's annotations by name
from fastapi.responses import JSONResponse

from .figures import Figure

CONFIGS = [(1, 8), (100, 8), (1, 64), (100, 64)]  # (candidates per request, concurrent clients)
WORKERS = 2


def request_bytes(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, request: bytes, deadline: float, count: list[int], latencies: list[float], check):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while count[0] > 0:
            count[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            check(status_line, body)
            if time.perf_counter() >= deadline:
                break
    finally:
        writer.close()


def load(port: int, body: bytes, clients: int, seconds: float, requests: int, check) -> tuple[float, list[float]]:
    """Closed-loop load: `clients` connections until `seconds` pass or `requests` are sent, each
    client sending one request at least while requests remain (a loaded machine may connect
    after the deadline) -> (requests/s, latencies in seconds: never empty)."""
    request = request_bytes("127.0.0.1", port, body)
    latencies: list[float] = []
    count = [requests]

    async def main():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, deadline, count, latencies, check) for _ in range(clients)))

    start = time.perf_counter()
    asyncio.run(main())
    return len(latencies) / (time.perf_counter() - start), latencies


def floor_app():
    """The floor server's app (a uvicorn factory): /invocations parses the request, scores nothing."""
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request):
        records = json.loads(await request.body())["dataframe_records"]
        return JSONResponse({"predictions": [{"score": 0.5, "raw_score": 0.5} for _ in records]})

    @app.get("/ping")
    async def ping():
        return {}

    return app


def _wait(url: str, process: subprocess.Popen, what: str, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.3)


def bench_serving(size: dict, bundle: Path, records: list[dict], folder: Path) -> list[Figure]:
    """B11 (see the module docstring) for `bundle`, requests cut from `records`; `size` gives the
    repeats, the seconds of each timed run (serve_seconds) and the soak's request count."""
    import mlflow
    import polars as pl

    from ..serving.mlflow_model import log_model
    from ..steps.served import ServerProcess, free_port

    uri = f"sqlite:///{(folder / 'serving-mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("bench-serving")
        with mlflow.start_run():
            model_uri = log_model(bundle, pl.DataFrame(records[:5]))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default
    mlflow_port = free_port()
    bin_dir = Path(sys.executable).parent  # `mlflow models serve` runs `uvicorn` from PATH: this environment's
    mlflow_server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["-p", str(mlflow_port), "--workers", str(WORKERS)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    floor_port = free_port()
    floor_server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "snn.pipeline.bench.serving:floor_app", "--factory", "--port"]
        + [str(floor_port), "--workers", str(WORKERS), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bodies = {n: json.dumps({"dataframe_records": records[:n]}, default=str).encode() for n, _ in CONFIGS}
    failures: dict[str, list[str]] = {"snn": [], "mlflow": [], "floor": []}
    repeats, seconds, soak_requests = size["repeats"], size["serve_seconds"], size["soak_requests"]

    def checker(candidates: int, server: str):
        def check(status: bytes, body: bytes) -> None:
            if b" 200 " not in status or len(json.loads(body).get("predictions", ())) != candidates:
                failures[server].append(status.decode(errors="replace").strip())

        return check

    try:
        _wait(f"http://127.0.0.1:{mlflow_port}/ping", mlflow_server, "mlflow models serve")
        _wait(f"http://127.0.0.1:{floor_port}/ping", floor_server, "the floor server")
        with ServerProcess(str(bundle), "--workers", str(WORKERS)) as snn_server:
            ports = {"snn": snn_server.port, "mlflow": mlflow_port, "floor": floor_port}
            for name, port in ports.items():  # warm each: imports, first requests
                load(port, bodies[100], 8, 1.0, 10**9, checker(100, name))
            results: dict[tuple, dict[str, list]] = {c: {name: [] for name in ports} for c in CONFIGS}
            for _ in range(repeats):
                for candidates, clients in CONFIGS:
                    for name, port in ports.items():
                        check = checker(candidates, name)
                        rate, latencies = load(port, bodies[candidates], clients, seconds, 10**9, check)
                        results[(candidates, clients)][name].append((rate, latencies))
            soak_rate, soak = load(snn_server.port, bodies[100], 8, 3600.0, soak_requests, checker(100, "snn"))
            failed = len(failures["snn"]) + (soak_requests - len(soak))  # under the timed load and the soak
    finally:
        for server in (mlflow_server, floor_server):
            server.terminate()
        for server in (mlflow_server, floor_server):
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    figures = []
    for (candidates, clients), by_server in results.items():
        summary = {}
        for name, runs in by_server.items():
            p50 = statistics.median(float(np.percentile(lat, 50)) * 1e3 for _, lat in runs)
            p99 = statistics.median(float(np.percentile(lat, 99)) * 1e3 for _, lat in runs)
            summary[name] = (statistics.median(rate for rate, _ in runs), p50, p99)
        (snn_rate, snn_p50, snn_p99), (ml_rate, ml_p50, ml_p99) = summary["snn"], summary["mlflow"]
        floor_rate, floor_p50, floor_p99 = summary["floor"]
        tag = f"{candidates}x{clients}"
        figures += [
            Figure(
                f"B11.serve.{tag}.rps",
                f"snn serve requests/s, {candidates} candidate(s) per request, {clients} clients",
                "req/s",
                snn_rate,
                "mlflow models serve",
                ml_rate,
                target=">= 2x mlflow models serve" if (candidates, clients) == (100, 64) else "",
                note=f"{WORKERS} workers each; medians of {repeats} interleaved runs of {seconds} s",
            ),
            Figure(
                f"B11.serve.{tag}.p99",
                f"snn serve p99 latency, {candidates} candidate(s) per request, {clients} clients",
                "ms",
                snn_p99,
                "mlflow models serve",
                ml_p99,
                higher_is_better=False,
                target="<= 15 ms" if (candidates, clients) == (100, 8) else "",
                note=f"p50 {snn_p50:.2f} ms (mlflow {ml_p50:.2f} ms)",
            ),
            Figure(
                f"B11.floor.{tag}.p99",
                f"HTTP + JSON floor p99 (FastAPI on uvicorn, no model), {candidates} candidate(s), {clients} clients",
                "ms",
                floor_p99,
                higher_is_better=False,
                note=f"p50 {floor_p50:.2f} ms, {floor_rate:,.0f} req/s",
            ),
        ]
    figures.append(
        Figure(
            "B11.serve.soak",
            f"snn serve: requests lost or failed, in the timed runs and a soak of {soak_requests:,} (100 candidates, "
            "8 clients)",
            "requests",
            float(failed),
            higher_is_better=False,
            target="0",
            note=f"soak {soak_rate:,.0f} req/s; failed: mlflow {len(failures['mlflow'])}, "
            f"floor {len(failures['floor'])}",
        )
    )
    return figures
