"""Training on two processes (torchrun, gloo), real processes: the model equals the one-process
model trained on the same global batches (test AUC within 1e-3), every rank ends with the same
tables, the ranks' prepare (a sharded fit, each rank encoding its share, rank 0 joining the
parts) writes the one-process files byte for byte, and `snn fit --procs 2` survives a rank
killed mid-epoch (exit 1 naming the rank; a rerun resumes and finishes)."""

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
import polars as pl
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


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("batch_rows", [7, 2])  # shares of 2 and 3 rows; of 0 and 1 (a batch smaller than the ranks)
def test_a_ranks_share_of_a_global_batch_is_its_rows_and_folds_the_whole_batch(ragged, batch_rows):
    from snn.pipeline.train.distributed import Group, share_of_batch

    split = splits()[0]
    if ragged:  # drop every third entry: rows of 4 to 6 entries
        keep = np.arange(len(split.ids)) % 3 != 0
        lengths = np.add.reduceat(keep, split.offsets[:-1])
        split = EncodedSplit.from_rows(split.ids[keep], split.values[keep], lengths, split.labels, split.weights)
    rows = np.random.default_rng(0).permutation(split.rows)[:batch_rows]
    batch = split.take(rows)
    whole_batch_max = torch.zeros(FEATURES * IDS_PER_FEATURE).scatter_reduce_(
        0, torch.from_numpy(batch.ids.astype(np.int64)), torch.from_numpy(np.abs(batch.values)), reduce="amax"
    )
    for rank in range(3):
        group = Group(rank, 3, rank)
        start, stop = group.span(len(rows))
        expected = split.take(rows[start:stop])
        for folded in (False, True):
            running = [torch.zeros(FEATURES * IDS_PER_FEATURE)] if folded else []
            share = share_of_batch(split, rows, group, running)
            for name in ("ids", "values", "offsets", "labels", "weights"):
                np.testing.assert_array_equal(getattr(share, name), getattr(expected, name), err_msg=name)
            assert share.width == expected.width
            if folded:  # every rank folds the whole global batch, not its share
                torch.testing.assert_close(running[0], whole_batch_max, rtol=0, atol=0)


def test_a_ranks_share_of_blank_lines_streams_no_rows_and_no_error(tmp_path):
    """Shares are cut by line: a share may hold only blank lines (one process reads past them)."""
    from snn.pipeline.data.chunks import stream_chunks
    from snn.pipeline.errors import InputError
    from snn.pipeline.spec import parse_spec
    from snn.pipeline.steps.prepare import shard_of
    from snn.pipeline.train.distributed import Group

    (tmp_path / "d.csv").write_text("x,label\n1,0\n\n\n2,1\n")
    data = {"format": "csv", "train": "d.csv", "holdout": 0.5, "label": "label"}
    features = [{"name": "x", "kind": "continuous"}]
    spec = parse_spec(yaml.safe_dump({"version": 1, "name": "blank", "data": data, "features": features}))
    files = DataFiles(spec.data, tmp_path)
    streamed = []
    for rank in range(4):
        share = shard_of(files, Group(rank, 4, rank))
        streamed.append(sum(chunk.frame.height for chunk in stream_chunks(share, ["x", "label"], ("train",))))
    assert streamed == [1, 0, 0, 1]
    lines = files.data.model_copy(update={"train": files.data.train.model_copy(update={"rows": (1, 3)})})
    with pytest.raises(InputError, match="holds no data rows"):  # a spec's own range of blank lines
        list(stream_chunks(DataFiles(lines, tmp_path), ["x", "label"], ("train",)))


def test_more_processes_than_gpus_is_an_error_naming_the_fix(monkeypatch):
    from snn.pipeline.errors import InputError
    from snn.pipeline.train.distributed import Group

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert Group(3, 4, 1).device(torch.device("cuda")) == torch.device("cuda", 1)
    assert Group(3, 4, 1).device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(InputError, match=r"process 3 on its machine, which has 2 GPU\(s\).*--procs 2"):
        Group(2, 4, 2).device(torch.device("cuda"))
    with pytest.raises(InputError, match="--procs 2"):  # joining the group checks first (steps/run.ranks)
        Group(2, 4, 2).start("cuda")


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


CHUNK_ROWS = 1000  # each rank's share spans several chunks


def prepare_cases(folder: Path) -> dict[str, tuple]:
    """The prepare inputs the one-process and two-rank runs compare, as (files, features,
    downsampling, slice columns): UCI Adult (CSV, fixed width, a hashed holdout, negative
    downsampling, break-down columns); Adult with tree leaves (fitted by rank 0 alone); and
    synthetic rows in `folder/synth.parquet` with id lists (ragged rows), a position feature (the
    `selection` split), two tasks (one given the other, each downsampled its own way) and a
    validation source of its own (and of one row: one rank's share of it is empty)."""
    from snn.pipeline.data.spec import NegativeDownsampling, TaskSampling
    from snn.pipeline.spec import parse_spec

    adult_dict = adult_spec_dict()
    adult_dict["data"]["train"]["rows"] = [0, 10**8]  # past the file's end: read to the end
    adult = parse_spec(yaml.safe_dump(adult_dict))
    trees_dict = yaml.safe_load((ROOT / "specs" / "adult_trees.yaml").read_text())
    trees_dict["data"].update(adult_spec_dict()["data"] | {"holdout": trees_dict["data"]["holdout"]})
    trees = parse_spec(yaml.safe_dump(trees_dict))
    lists_dict = yaml.safe_load((ROOT / "specs" / "synthetic_tasks.yaml").read_text())
    lists_dict["features"] = yaml.safe_load((ROOT / "specs" / "synthetic_lists.yaml").read_text())["features"]
    path = str(folder / "synth.parquet")
    lists_dict["data"] = {
        "format": "parquet",
        "train": {"path": path, "rows": [0, 2400]},
        "validation": {"path": path, "rows": [2400, 3000]},
        "test": {"path": path, "rows": [3000, 3600]},
        "labels": {"click": {"column": "click"}, "convert": {"column": "convert"}},
    }
    lists_dict["features"].append({"name": "position", "kind": "position", "serve_as": 1})
    lists_dict["model"] = {"sparse_linear": {"width": 8, "activation": "relu"}}  # prepare reads no model
    lists = parse_spec(yaml.safe_dump(lists_dict))
    lists_dict["data"]["validation"]["rows"] = [2400, 2401]  # one row: rank 0's share is empty
    one_row = parse_spec(yaml.safe_dump(lists_dict))
    per_task = [
        TaskSampling(downsampling=NegativeDownsampling(rate=0.5, seed=3)),
        TaskSampling(downsampling=NegativeDownsampling(rate=0.7, seed=4), given=0),
    ]
    return {
        "adult": (DataFiles(adult.data, ROOT), list(adult.features), NegativeDownsampling(rate=0.5), ["sex"]),
        "trees": (DataFiles(trees.data, ROOT), list(trees.features), None, []),
        "lists": (DataFiles(lists.data, ROOT), list(lists.features), per_task, ["C1"]),
        "one-row-validation": (DataFiles(one_row.data, ROOT), list(one_row.features), per_task, ["C1"]),
    }


@pytest.fixture(scope="module")
def prepared_by_two_ranks(tmp_path_factory):
    """The prepare cases run by two ranks into `<out>/ranks/<case>/`, and the rows each rank encoded."""
    from snn.pipeline.data.synth import SynthConfig, write

    out = tmp_path_factory.mktemp("prepare")
    write(out / "synth.parquet", SynthConfig(rows=3600, seed=2, row_group=500, lists=True, positions=True, tasks=True))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER)]
    done = subprocess.run(
        [*command, str(out), "cpu", "prepare"], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", ["adult", "trees", "lists", "one-row-validation"])
def test_two_ranks_prepare_the_one_process_files(prepared_by_two_ranks, case, tmp_path):
    from snn.pipeline.steps.prepare import SLICES, prepare

    out = prepared_by_two_ranks
    files, features, downsampling, slices = prepare_cases(out)[case]
    one = prepare(files, features, downsampling, tmp_path, chunk_rows=CHUNK_ROWS, slice_columns=slices)
    ranks = out / "ranks" / case
    two = json.loads((ranks / "info.json").read_text())
    assert two["rows"] == one["rows"] and two["num_ids"] == one["num_ids"]
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(ranks) for p in ranks.rglob("*") if p.is_file() and p.name != "info.json")
    assert not (ranks / "parts").exists()  # the ranks' parts are joined and removed
    for name in written:  # the feature map and every split's arrays and meta.json, byte for byte
        if name.name == SLICES:
            assert pl.read_parquet(ranks / name).equals(pl.read_parquet(tmp_path / name)), name
        else:
            assert (ranks / name).read_bytes() == (tmp_path / name).read_bytes(), name
    if case == "lists":  # ragged rows (no width), the served and as-trained validation rows, two tasks
        meta = json.loads((ranks / "splits" / "train" / "meta.json").read_text())
        assert meta["width"] is None and meta["tasks"] == 2 and (ranks / "splits" / "selection").is_dir()
    # each rank encoded its own share of the train and validation rows (not rank 0 alone)
    shares = [json.loads((out / f"encoded-{case}-rank{r}.json").read_text()) for r in (0, 1)]
    for split in ("train", "validation"):
        assert sum(share[split] for share in shares) == one["rows"][split]
        assert all(share[split] > 0 for share in shares) or (case, split) == ("one-row-validation", "validation")


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
