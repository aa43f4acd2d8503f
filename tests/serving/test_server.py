"""`snn serve` as a real HTTP server in a child process: scores equal to the online scorer, MLflow's
/invocations protocol, 4xx for bad requests (the server keeps serving), graceful SIGTERM, reload of
a moved alias, and three scorers (`snn predict`, `snn serve`, `mlflow models serve`) in agreement."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import snn
from snn.pipeline.serving.mlflow_model import promote, register
from snn.pipeline.steps.served import ServerProcess, free_port
from snn.pipeline.store.bundle import Bundle

from ..conftest import ADULT_DIR, invoke


@pytest.fixture(scope="module")
def bundle_folder(small_run) -> Path:
    return small_run.parent / ".snn" / "bundles" / "adult-income"


@pytest.fixture(scope="module")
def records(bundle_folder) -> list[dict]:
    return Bundle.load(bundle_folder).reader.read(ADULT_DIR / "adult.test", (0, 100)).to_dicts()


@pytest.fixture(scope="module")
def server(bundle_folder):
    with ServerProcess(str(bundle_folder), "--strict") as running:
        yield running


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_json(url: str, payload) -> tuple[int, dict]:
    return post(url, json.dumps(payload).encode())


def test_score_and_invocations_equal_the_online_scorer(server, bundle_folder, records):
    expected = snn.load(bundle_folder).predict(records)
    status, scored = post_json(server.url + "/score", {"records": records})
    assert status == 200 and list(scored) == ["score", "raw_score"]
    np.testing.assert_array_equal(scored["score"], expected["score"].to_numpy())  # JSON keeps every digit
    np.testing.assert_array_equal(scored["raw_score"], expected["raw_score"].to_numpy())
    columns = list(records[0])
    bodies = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {c: [r[c] for r in records] for c in columns}},
    ]
    for body in bodies:
        status, answer = post_json(server.url + "/invocations", body)
        assert status == 200, answer
        np.testing.assert_array_equal([p["score"] for p in answer["predictions"]], expected["score"].to_numpy())
    status, one = post_json(server.url + "/score", records[3])  # one record, no wrapper
    assert status == 200 and one["score"] == [expected["score"][3]]


def test_health_ready_and_metadata(server, bundle_folder):
    for path in ("/health", "/ready"):
        with urllib.request.urlopen(server.url + path) as response:
            assert response.status == 200
    with urllib.request.urlopen(server.url + "/metadata") as response:
        meta = json.loads(response.read())
    assert meta["spec_sha256"] == Bundle.load(bundle_folder).recipe.sha256
    assert meta["schema"]["age"] == "continuous" and meta["outputs"] == ["score", "raw_score"]


JSON = "application/json"


@pytest.mark.parametrize(
    "path, body, content_type, status, message",
    [
        ("/score", b"", JSON, 400, "empty body"),
        ("/score", b"{not json", JSON, 400, "not JSON"),
        ("/score", b"age=39", "application/x-www-form-urlencoded", 415, "send application/json"),
        ("/score", b'{"records": 5}', JSON, 400, "expected a list of objects"),
        ("/score", {"age": "old"}, JSON, 400, "feature 'age': value 'old' is not a number"),
        ("/score", {"age": [1, 2]}, JSON, 400, "feature 'age': a record holds list"),
        ("/score", {"workclass": {"a": 1}}, JSON, 400, "feature 'workclass': a record holds dict"),
        ("/score", b'{"records": [{"age": 39}]}', JSON, 400, "missing feature(s) ['capital_gain'"),  # --strict
        ("/invocations", b"", JSON, 400, "empty body"),
        ("/invocations", b"[1, 2]", JSON, 400, "expected a JSON object with dataframe_split"),
        ("/invocations", b'{"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}', JSON, 400, "rows of 1"),
        ("/invocations", b'{"tensor": [1]}', JSON, 400, "unknown keys ['tensor']"),
        ("/invocations", b"a,b", "text/csv", 415, "send application/json"),
        ("/invocations", b'{"inputs": {"age": [1, 2], "sex": ["Male"]}}', JSON, 400, "columns of different lengths"),
        ("/score", b"[" * 100_000, JSON, 400, "nested too deeply"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(server, records, path, body, content_type, status, message):
    if isinstance(body, dict):  # a whole record with these values (the server is strict: nothing missing)
        body = json.dumps({"records": [records[0], records[1] | body]}).encode()
    got, answer = post(server.url + path, body, content_type)
    assert got == status and message in answer["error"], answer
    status_after, scored = post_json(server.url + "/score", {"records": records[:2]})
    assert status_after == 200 and len(scored["score"]) == 2  # the server keeps serving


def test_no_records_get_no_scores(server):
    assert post_json(server.url + "/score", {"records": []}) == (200, {"score": [], "raw_score": []})
    assert post_json(server.url + "/invocations", {"dataframe_records": []}) == (200, {"predictions": []})


def test_a_ten_megabyte_body_is_refused_with_413(server, records):
    one = len(json.dumps(records))
    body = json.dumps({"records": records * (10 * 1024 * 1024 // one + 1)}).encode()  # 10 MB: over the 5 MB default
    assert 10 * 1024 * 1024 < len(body) < 11 * 1024 * 1024
    status, answer = post(server.url + "/score", body)
    assert status == 413 and "over the limit" in answer["error"]
    assert post_json(server.url + "/score", {"records": records[:1]})[0] == 200


def test_sigterm_finishes_every_accepted_request(bundle_folder, records):
    """Clients keep sending while SIGTERM arrives: every request the server answered is a 200 with every
    score, none fails with a 5xx or a cut response; the server exits 0."""
    body = json.dumps({"records": records}).encode()
    answered, failures, stop = [], [], threading.Event()
    with ServerProcess(str(bundle_folder), "--workers", "2") as running:
        status, answer = post_json(running.url + "/reload", {})  # it would reach one of the two workers
        assert status == 409 and "--poll" in answer["error"]

        def client():
            while not stop.is_set():
                connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
                try:
                    connection.request("POST", "/score", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = response.read()
                except (ConnectionError, OSError, http.client.HTTPException):
                    continue  # not accepted: the listening socket is closed
                finally:
                    connection.close()
                if response.status != 200 or len(json.loads(payload)["score"]) != len(records):
                    failures.append((response.status, payload[:200]))
                else:
                    answered.append(time.time())

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [] and len(answered) > 10
    assert code == 0


def test_reload_serves_the_version_an_alias_moved_to(tmp_path, bundle_folder, records):
    """models:/NAME@champion: version 1 (the calibrated bundle), then the alias moves to version 2 (the
    raw bundle); POST /reload swaps it in while requests keep being answered."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    mlflow.set_tracking_uri(uri)
    example = pl.DataFrame(records[:5])
    from snn.pipeline.serving.mlflow_model import log_model

    try:
        mlflow.set_experiment("reload")
        with mlflow.start_run():
            first = log_model(bundle_folder, example)
            second = log_model(Path(str(bundle_folder) + ".raw"), example)
    finally:
        mlflow.set_tracking_uri(None)
    promote("adult", register(first, "adult", uri), "champion", uri)
    old = snn.load(bundle_folder).score(records)
    new = snn.load(str(bundle_folder) + ".raw").score(records)
    env = {"MLFLOW_TRACKING_URI": uri}
    with patched_environment(env), ServerProcess("models:/adult@champion") as running:
        status, scored = post_json(running.url + "/score", {"records": records})
        np.testing.assert_array_equal(scored["score"], old)
        answers, stop = [], threading.Event()

        def client():  # requests keep coming while the new version loads: each is answered, by one version
            while not stop.is_set():
                answers.append(post_json(running.url + "/score", {"records": records}))

        thread = threading.Thread(target=client)
        thread.start()
        promote("adult", register(second, "adult", uri), "champion", uri)
        status, answer = post_json(running.url + "/reload", {})
        time.sleep(0.3)
        stop.set()
        thread.join(timeout=30)
        assert status == 200 and answer == {"reloaded": True, "version": "2"}
        assert len(answers) > 3 and all(code == 200 for code, _ in answers)
        assert all(np.array_equal(a["score"], old) or np.array_equal(a["score"], new) for _, a in answers)
        status, scored = post_json(running.url + "/score", {"records": records})
        np.testing.assert_array_equal(scored["score"], new)
        assert post_json(running.url + "/reload", {})[1] == {"reloaded": False, "version": "2"}
    with patched_environment(env), ServerProcess("models:/adult@champion", "--poll", "0.5") as running:
        promote("adult", "1", "champion", uri)  # moved back: the server sees it on its own
        deadline = time.time() + 30
        while json.loads(urllib.request.urlopen(running.url + "/metadata").read())["registry_version"] != "1":
            assert time.time() < deadline, "--poll never picked up the moved alias"
            time.sleep(0.2)
        np.testing.assert_array_equal(post_json(running.url + "/score", {"records": records})[1]["score"], old)


class patched_environment:
    def __init__(self, values: dict):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_three_scorers_agree(runner, tmp_path, small_run, bundle_folder):
    """`snn predict` (torch reference), `snn serve` (through `predict --via`) and `mlflow models serve`
    of the logged pyfunc model score the same rows equal within the spec's parity tolerance."""
    out = json.loads(invoke(runner, "calibrate", small_run, "--force-step", "calibrate", "--json").stdout)
    data = ADULT_DIR / "adult.test"
    reference = tmp_path / "reference.parquet"
    assert invoke(runner, "predict", bundle_folder, data, "-o", reference, "--rows", "0:500").exit_code == 0
    expected = pl.read_parquet(reference)
    with ServerProcess(str(bundle_folder)) as running:
        via = tmp_path / "via.parquet"
        result = invoke(runner, "predict", bundle_folder, data, "-o", via, "--rows", "0:500", "--via", running.url)
        assert result.exit_code == 0, result.stderr
    served = pl.read_parquet(via)
    assert served.columns == expected.columns and served["row_id"].to_list() == expected["row_id"].to_list()
    np.testing.assert_allclose(served["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    path = f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # it runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": out["tracking_uri"], "PATH": path}
    process = subprocess.Popen(
        [str(mlflow_bin), "models", "serve", "-m", out["model_uri"], "--env-manager", "local", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2):
                    break
            except OSError:
                assert process.poll() is None and time.time() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        schema = snn.load(bundle_folder).schema
        numbers = [name for name, kind in schema.items() if kind == "continuous"]  # the signature's doubles
        rows = Bundle.load(bundle_folder).reader.read(data, (0, 500)).with_columns(pl.col(numbers).cast(pl.Float64))
        columns = list(schema)
        split = {"columns": columns, "data": rows.select(columns).rows()}
        status, answer = post_json(url + "/invocations", {"dataframe_split": split})
        assert status == 200, answer
        mlflow_scores = np.array([p["score"] for p in answer["predictions"]])
        np.testing.assert_allclose(mlflow_scores, expected["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_parity_command_passes_and_fails_on_a_swapped_model(runner, small_run, bundle_folder):
    """`snn parity` (what `make parity` runs on the demo): exit 0 serving the spec's own bundle, exit 3 naming
    parity when the server serves another bundle."""
    passed = invoke(runner, "parity", small_run, "--json")
    assert passed.exit_code == 0, passed.stderr
    out = json.loads(passed.stdout)
    assert out["parity"]["passed"] and out["served"]["rows"] == 1500
    swapped = invoke(runner, "parity", small_run, "--served", str(bundle_folder) + ".raw")
    assert swapped.exit_code == 3
    assert "parity:" in swapped.stderr and "rows differ" in swapped.stderr
