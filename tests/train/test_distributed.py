"""Training on two processes (torchrun, gloo), real processes: the model equals the one-process
model trained on the same global batches (test AUC within 1e-3), every rank ends with the same
tables, and `snn fit --procs 2` survives a rank killed mid-epoch (exit 1 naming the rank; a rerun
resumes and finishes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.data.spec import DataFiles
from snn.pipeline.evaluation import metrics
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.inference import raw_probabilities
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.train.loop import train_model
from snn.pipeline.train.spec import TrainSpec
from snn.pipeline.train.tasks import TaskSpec, towers_of
from tests.conftest import adult_spec_dict, write_spec

FEATURES, IDS_PER_FEATURE = 6, 40
# the sparse linear layer (its running max |v| exercised by raw values), DLRM's per-feature
# embeddings (a second per-id table) and an MLP: every kind of exchanged state
MODEL = plan_for(ModelSpec(interactions={"dim": 4}), IdSpace(FEATURES * IDS_PER_FEATURE, FEATURES))
SPEC = TrainSpec(epochs=3, batch_size=250, seed=5, device="cpu", lr=0.01)
# two tasks, the second given the first (its rows: the first's positives): the per-task loss
# denominators of a global batch
TASKS = [TaskSpec(name="click"), TaskSpec(name="buy", given="click", weight=0.5)]
TASK_MODEL = plan_for(ModelSpec(), IdSpace(FEATURES * IDS_PER_FEATURE, FEATURES), towers=towers_of(TASKS))
WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _split(n: int, seed: int) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(99).normal(0, 1, FEATURES * IDS_PER_FEATURE)
    ids = rng.integers(0, IDS_PER_FEATURE, size=(n, FEATURES)) + np.arange(FEATURES) * IDS_PER_FEATURE
    values = rng.uniform(0.1, 3.0, size=(n, FEATURES)).astype(np.float32)  # not one-hot: max |v| matters
    logit = (truth[ids] * values).sum(1) / 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return EncodedSplit.from_dense(ids, values, y, rng.uniform(0.5, 1.5, n).astype(np.float32))


def splits() -> tuple[EncodedSplit, EncodedSplit, EncodedSplit]:
    """train (3,001 rows: the last global batch is not a multiple of two), validation, test."""
    return _split(3001, 0), _split(800, 1), _split(2000, 2)


def task_splits() -> tuple[EncodedSplit, EncodedSplit]:
    """splits()'s train and validation with a second label: a buy, drawn on the clicks only."""

    def with_buys(split: EncodedSplit, seed: int) -> EncodedSplit:
        rng = np.random.default_rng(seed)
        click = split.labels
        buy = click * (rng.random(len(click)) < 0.3)
        labels = np.stack([click, buy], 1).astype(np.float32)
        weights = np.stack([split.weights, split.weights], 1)
        return EncodedSplit(split.offsets, split.ids, split.values, labels, weights, width=split.width)

    train, validation, _ = splits()
    return with_buys(train, 10), with_buys(validation, 11)


def _test_auc(state: dict[str, np.ndarray]) -> float:
    network = Network(MODEL)
    network.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    test = splits()[2]
    return metrics.auc(test.labels, raw_probabilities(network, test), test.weights)


def _two_ranks(out: Path, device: str, what: str = "one-task"):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER)]
    done = subprocess.run(
        [*command, str(out), device, what], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)], [
        json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)
    ]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _two_ranks(tmp_path_factory.mktemp("ranks"), "cpu")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across two ranks needs two CUDA GPUs")
def test_two_gpus_with_nccl_keep_equal_tables(tmp_path):
    states, _ = _two_ranks(tmp_path, "cuda")
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name], err_msg=name)


def test_every_rank_ends_with_the_same_model(two_ranks):
    states, summaries = two_ranks
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name], err_msg=name)
    assert summaries[0]["history"] == summaries[1]["history"]  # one validation, one best epoch
    assert summaries[0]["best"] == summaries[1]["best"]


def test_two_ranks_train_the_one_process_model(two_ranks):
    states, summaries = two_ranks
    train, validation, _ = splits()
    one = train_model(MODEL, SPEC, train, validation)
    assert abs(_test_auc(states[0]) - _test_auc(one.state)) < 1e-3
    assert _test_auc(one.state) > 0.75  # a model that learned something
    for name in one.state:  # the same updates, up to the order of float sums
        np.testing.assert_allclose(states[0][name], one.state[name], rtol=0, atol=2e-4, err_msg=name)
    assert summaries[0]["bytes"] > 0


def test_two_ranks_train_the_one_process_model_of_two_tasks(tmp_path):
    states, _ = _two_ranks(tmp_path, "cpu", "tasks")
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name], err_msg=name)
    train, validation = task_splits()
    one = train_model(TASK_MODEL, SPEC, train, validation, tasks=TASKS)
    for name in one.state:
        np.testing.assert_allclose(states[0][name], one.state[name], rtol=0, atol=2e-4, err_msg=name)


def adult_feature_map(group=None):
    """The feature map of UCI Adult's spec (the whole train file, a hashed holdout), fitted by one
    process or, with `group`, by the ranks' shards."""
    from snn.pipeline.spec import parse_spec
    from snn.pipeline.steps.prepare import fit_feature_map

    spec = parse_spec(yaml.safe_dump(adult_spec_dict()))
    files = DataFiles(spec.data, ROOT)
    return fit_feature_map(files, list(spec.features), None, chunk_rows=5000, group=group)


def test_two_ranks_fit_the_one_process_feature_map(tmp_path):
    out = tmp_path
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER)]
    done = subprocess.run(
        [*command, str(out), "cpu", "fit"], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = adult_feature_map().to_json()
    for rank in (0, 1):  # chunks of 5,000 rows: each rank's shard spans several
        assert json.loads((out / f"rank{rank}.json").read_text()) == json.loads(json.dumps(one))


def _rank_pids(spec: Path) -> dict[int, int]:
    """{rank: pid} of the torchrun workers running `snn.cli.app` on `spec` (RANK in /proc/<pid>/environ;
    the spec's path tells them from another test's ranks running at the same time)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            command = (entry / "cmdline").read_bytes()
            if b"snn.cli.app" not in command or str(spec).encode() not in command:
                continue
            environ = dict(
                item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item
            )
        except OSError:
            continue
        if b"TORCHELASTIC_RUN_ID" in environ and b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_a_rank_killed_mid_epoch_stops_the_run_and_a_rerun_resumes(tmp_path):
    spec = adult_spec_dict()
    spec["train"].update(epochs=6, early_stopping=None, batch_size=64)
    spec["validation"]["gates"] = {}
    path = write_spec(tmp_path, spec)
    snn = [sys.executable, "-m", "snn.cli.app", "fit", str(path), "--procs", "2", "--no-tracking"]
    process = subprocess.Popen(snn, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    checkpoints = tmp_path / ".snn" / "checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("*/checkpoint.pt")):  # epoch 1 finished: kill during epoch 2
        assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.2)
    ranks = _rank_pids(path)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "rank 1 of 2 failed (killed by signal 9)" in stderr and "Traceback" not in stderr
    assert not list((tmp_path / ".snn" / "steps").glob("train-*"))  # no half-written step folder
    rerun = subprocess.run(snn, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"resuming at epoch [2-6] ", rerun.stderr), rerun.stderr
