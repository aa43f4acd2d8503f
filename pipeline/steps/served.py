"""`snn parity SPEC`: the served model held equal to the reference scorer, end to end.

1. `calibrate` (cached steps reused) -> the spec's calibrated bundle
2. `snn serve SOURCE` in a child process on a free local port (SOURCE: that bundle, or
   `served`: another bundle or a models:/NAME@ALIAS URI, the model a deployment serves)
3. the spec's test rows scored through HTTP (`predict_file(via=...)`) into the work directory
4. the server stopped (SIGTERM), then `validate --compare` on those scores: exit 0 when every
   row matches within the spec's parity tolerance, 3 when a gate or parity fails
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..data.spec import DataFiles
from ..errors import InputError, ServingError
from ..files import ensure_folder
from ..serving.predict import predict_file
from ..spec import load_spec
from .run import run

READY_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`snn serve SOURCE` in a child process on 127.0.0.1; a context manager that waits for /ready
    and stops the server with SIGTERM (graceful) on exit."""

    def __init__(self, source: str, *options: str, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "snn.cli.app", "serve", source, "--port", str(self.port), *options]
        self.log = log

    def __enter__(self) -> ServerProcess:
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # closed in __exit__
        self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        self._out = out
        deadline = time.time() + READY_SECONDS
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                self.__exit__(None, None, None)
                tail = self.log.read_text(errors="replace")[-1500:] if self.log else ""
                raise ServingError(f"`snn serve` did not become ready ({' '.join(self.command[3:])}): {tail}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log:
            self._out.close()  # type: ignore[union-attr]


def parity(spec_path: Path, served: str | None = None, tracking_uri: str | None = None, tracking: bool = True) -> dict:
    """Steps 1-4 of the module docstring; returns validate's result with the served source and URL."""
    loaded = load_spec(spec_path)
    test = loaded.spec.data.test
    if test is None:
        raise InputError(
            f"{spec_path} has no data.test: `snn parity` scores the test rows through the server; add a test source"
        )
    calibrated = run("calibrate", loaded, tracking_uri, tracking=tracking)
    source = served or calibrated["bundle"]
    workdir = ensure_folder(loaded.workdir, "workdir")
    scores = workdir / "parity" / "served_test.parquet"
    scores.parent.mkdir(parents=True, exist_ok=True)
    data = DataFiles(loaded.spec.data, loaded.base_dir).path(test)
    rows = (test.rows[0], test.rows[1]) if test.rows else None
    with ServerProcess(source, log=scores.with_name("serve.log")) as server:
        count = predict_file(Path(calibrated["bundle"]), data, scores, rows=rows, header=test.header, via=server.url)
        with urllib.request.urlopen(server.url + "/metadata", timeout=10) as response:
            metadata = json.loads(response.read())
    result = run("validate", loaded, tracking_uri, compare=scores, tracking=tracking)
    result["served"] = {"source": source, "rows": count, "scores": str(scores), "metadata": metadata}
    return result
