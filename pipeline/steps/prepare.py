"""Step `prepare`: fit discretizers and vocabularies on train, encode the train and validation splits.

Two passes over the train source (one over a separate validation source), each holding one chunk
at a time (data/chunks.py):

1. fit: every train chunk updates the streaming fitters (exact weighted per-value totals for
   percentile bins, counts for vocabularies; features/);
2. encode: every chunk is encoded once, then its rows are routed to their splits (holdout by key
   hash; negative downsampling by key hash drops rows first) and appended to each split's CSR files
   (store/encoded.py). The test split is not encoded here: validate scores raw rows, keys and all.

Memory is one chunk plus the fitters' tables (distinct values), never the row count.

On several ranks (torchrun), each rank does both passes on its contiguous share of the train and
validation rows: the fit's exact totals are merged over the ranks (fit_feature_map), and each rank's
encoded part is written into its place in the joined split files (encode_in_parts): the feature map
and the splits' arrays are the one-process files, byte for byte (the slices the same rows).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..data.chunks import CHUNK_ROWS, Chunk, needed_columns, stream_chunks
from ..data.encoded import EncodedSplit, SplitJoin, SplitWriter, ids_dtype, take_positions
from ..data.readers import Reader
from ..data.sources import check_inputs, check_unique_keys, input_fingerprints
from ..data.spec import DataFiles, DataSpec, NegativeDownsampling, TaskSampling
from ..errors import ArtifactError, InputError
from ..features.categorical import VOCABULARY_METHOD
from ..features.feature_map import FeatureMap, finish_fitters, fitters, update_fitters
from ..features.quantiles import QUANTILE_METHOD
from ..features.shards import merge_totals, mergeable, partial_totals
from ..features.spec import Feature
from ..spec import Spec
from ..store.cache import corrupted_cache
from .context import Context, StepResult, cached_step, log, read

if TYPE_CHECKING:
    from ..train.distributed import Group

READS = {
    "data": "data",
    "features": "features",
    "downsampling": "train.negative_downsampling",
    "task_downsampling": "task_downsampling",
    "breakdown_columns": "breakdown_columns",
}
SLICES = "slices.parquet"  # in splits/validation/: the raw values of the break-down columns, in row order
EXAMPLE = "example.parquet"  # the train source's first EXAMPLE_ROWS raw rows: the MLflow model's input example
EXAMPLE_ROWS = 5
SPLITS = ("train", "validation")
Downsampling = NegativeDownsampling | list[TaskSampling] | None  # one, or one per task
SELECTION = "selection"  # the validation rows as trained, when position features serve another value


def fit_feature_map(
    files: DataFiles,
    features: list[Feature],
    downsampling: Downsampling,
    chunk_rows: int = CHUNK_ROWS,
    group: Group | None = None,
) -> FeatureMap:
    """Pass 1: stream the train split through the fitters -> the feature map. With several tasks,
    the fitters see each kept row once at its row weight, and the first task's label (what tree
    features fit on); every task needs both label values. With `group` (several ranks, features
    whose fit merges: features/shards.py), `files` is this rank's share of the rows (`shard_of`),
    and the ranks' totals are merged: every rank returns the one-process feature map."""
    running = fitters(features)
    rows, weight = 0, 0.0
    low, high = np.full(len(files.data.label_list), np.inf), np.full(len(files.data.label_list), -np.inf)
    columns = needed_columns(files.data, features)
    for chunk in stream_chunks(files, columns, ("train",), downsampling, chunk_rows):
        for split, selected in chunk.routes:
            if split != "train":
                continue
            labels = chunk.labels if selected is None else chunk.labels[selected]
            if len(labels) == 0:
                continue
            row_weights = chunk.weights if chunk.weights.ndim == 1 else chunk.weights.max(1)
            first_labels = chunk.labels if chunk.labels.ndim == 1 else chunk.labels[:, 0]
            update_fitters(features, running, chunk.frame, row_weights, selected, first_labels)
            rows += len(labels)
            weight += float(row_weights.sum() if selected is None else row_weights[selected].sum())
            per_task = labels.reshape(len(labels), -1)
            low, high = np.minimum(low, per_task.min(0)), np.maximum(high, per_task.max(0))
    if group is not None:  # the ranks' shards as one
        gathered = group.gather((partial_totals(running), rows, weight, low, high))
        merge_totals(running, [totals for totals, *_ in gathered])
        rows, weight = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
        low, high = np.min([g[3] for g in gathered], 0), np.max([g[4] for g in gathered], 0)
    if rows == 0:
        raise InputError("the train split is empty after holdout and downsampling; change holdout.fraction or the rows")
    for column, single in zip(files.data.label_columns, low == high):
        if single:
            raise InputError(
                f"the train split has a single label value (column {column!r}); a classifier needs both positives "
                "and negatives"
            )
    if weight <= 0:
        raise InputError(
            f"the train split's weights (column {files.data.weight!r}) sum to 0; give some rows a positive weight"
        )
    return FeatureMap(finish_fitters(running))


def shard_of(files: DataFiles, group: Group) -> DataFiles:
    """The data section with its train and validation sources cut to this rank's contiguous share
    of their rows (the holdout and downsampling are decided per row by key hash, so the shares route
    as the whole; concatenated in rank order, the shares are the sources). A range reaching past
    the file's end is cut at the end first, so no share lies wholly past it; a share may be empty
    (fewer rows than ranks), and streams no chunk; so may one of blank or comment lines only."""
    data, reader = files.data, Reader.from_spec(files.data)
    cut = {}
    for name in SPLITS:
        source = getattr(data, name)
        if source is None:
            continue
        count = reader.row_count(files.path(source), source.header)
        first, stop = source.rows or (0, count)
        stop = min(stop, count)
        first = min(first, stop)
        start, end = group.span(stop - first)
        cut[name] = source.model_copy(update={"rows": (first + start, first + end)})
    return DataFiles(data.model_copy(update=cut), files.base_dir, share=True)


def encode_splits(
    files: DataFiles,
    features: list[Feature],
    downsampling: Downsampling,
    feature_map: FeatureMap,
    folder: Path,
    chunk_rows: int = CHUNK_ROWS,
    slice_columns: list[str] | None = None,
) -> dict[str, tuple[int, float]]:
    """Pass 2: encode the train and validation splits' chunks into `folder/<split>/` CSR files ->
    (rows, weight sum) per split, unchecked (`check_splits`). With position features, the
    validation rows are written twice: served (`validation`: what calibration fits) and as trained
    (`selection`: what the train step's early stopping and best epoch judge, so learning the
    position effect is not held against a model).
    With `slice_columns` (break-down calibration), the validation rows' raw values of those columns
    are kept as text in `folder/validation/slices.parquet`, in row order."""
    data = files.data
    slice_columns = slice_columns or []
    kept: list[pl.DataFrame] = []

    def chunks() -> Iterator[Chunk]:
        columns = needed_columns(data, features, slice_columns)
        for chunk in stream_chunks(files, columns, SPLITS, downsampling, chunk_rows):
            for split, selected in chunk.routes if slice_columns else ():
                if split == "validation":
                    rows = chunk.frame if selected is None else chunk.frame.filter(pl.Series(selected))
                    kept.append(rows.select(pl.col(c).cast(pl.String) for c in slice_columns))
            yield chunk

    def finish() -> dict[str, tuple[int, float]]:
        if slice_columns:
            empty = pl.DataFrame(schema=dict.fromkeys(slice_columns, pl.String))
            pl.concat([empty, *kept], rechunk=True).write_parquet(folder / "validation" / SLICES)
        return {name: (writer.rows, writer.weight_sum) for name, writer in writers.items()}

    width, id_dtype = len(feature_map.encoders), ids_dtype(feature_map.num_ids)
    # the train split reads position features' columns; validation takes their served position
    training, served = feature_map.for_training(), feature_map.served_ids()
    names = SPLITS + ((SELECTION,) if served else ())
    with ExitStack() as stack:
        writers = {
            name: stack.enter_context(SplitWriter(folder / name, id_dtype, feature_map.one_hot)) for name in names
        }

        def routes(chunk: Chunk) -> list[tuple[str, np.ndarray | None]]:
            """The chunk's routes, with the validation rows' also to `selection` (as trained)."""
            extra = [(SELECTION, selected) for split, selected in chunk.routes if served and split == "validation"]
            return chunk.routes + extra

        def write(chunk: Chunk, ids: np.ndarray, values: np.ndarray | None) -> None:
            for split, selected in routes(chunk):
                rows = None if selected is None else np.flatnonzero(selected)
                count = chunk.frame.height if rows is None else len(rows)
                split_ids, split_values = ids, values
                if served and split == "validation":
                    split_ids = ids.copy()
                    split_values = None if values is None else values.copy()
                    for feature, served_id, served_value in served:
                        split_ids[feature] = served_id
                        if split_values is not None:
                            split_values[feature] = served_value
                writers[split].append(
                    split_ids.T,
                    None if split_values is None else split_values.T,
                    np.full(count, width),
                    chunk.labels,
                    chunk.weights,
                    rows,
                )

        def write_rows(chunk: Chunk) -> None:
            encoded = {"train": training.encode_rows(chunk.frame)}
            encoded["validation"] = feature_map.encode_rows(chunk.frame) if served else encoded["train"]
            encoded[SELECTION] = encoded["train"]
            for split, selected in routes(chunk):
                ids, values, lengths = encoded[split]
                offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=offsets[1:])
                rows = np.arange(len(lengths)) if selected is None else np.flatnonzero(selected)
                positions, _ = take_positions(offsets, rows)
                writers[split].append(
                    ids[positions],
                    None if feature_map.one_hot else values[positions],
                    lengths[rows],
                    chunk.labels[rows],
                    chunk.weights[rows],
                )

        if feature_map.ragged:  # id lists: each chunk's row-major CSR, its routed rows gathered
            for chunk in chunks():
                if chunk.frame.height:
                    write_rows(chunk)
            return finish()

        # a chunk is written on a background thread while the next one is encoded, so two chunks'
        # feature-major arrays take turns (each at most chunk_rows rows; one-hot maps store no values)
        buffers: list[tuple[np.ndarray, np.ndarray | None]] = [
            (
                np.empty((width, chunk_rows), id_dtype),
                None if feature_map.one_hot else np.empty((width, chunk_rows), np.float32),
            )
            for _ in range(2)
        ]
        writing = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        pending, turn = None, 0
        for chunk in chunks():
            if chunk.frame.height == 0:
                continue
            ids, values = training.encode_columns(chunk.frame, buffers[turn])  # every row once, then routed
            turn = 1 - turn
            if pending is not None:
                pending.result()  # the previous chunk is written: its buffers are free for the next one
            pending = writing.submit(write, chunk, ids, values)
        if pending is not None:
            pending.result()
        return finish()


def check_splits(data: DataSpec, totals: dict[str, tuple[int, float]]) -> dict[str, int]:
    """Rows per split from (rows, weight sum) per split, once every chunk is written; an empty
    validation split or a split whose weights sum to 0 is an InputError."""
    if totals["validation"][0] == 0:
        raise InputError("the validation split is empty; change data.holdout.fraction or data.validation")
    for name, (rows, weight) in totals.items():
        if rows and weight <= 0:
            raise InputError(
                f"the {name} split's weights (column {data.weight!r}) sum to 0; its metrics would be "
                "undefined: give some rows a positive weight"
            )
    return {name: rows for name, (rows, _) in totals.items()}


def encode_in_parts(
    share: DataFiles,
    features: list[Feature],
    downsampling: Downsampling,
    feature_map: FeatureMap,
    folder: Path | None,
    group: Group,
    chunk_rows: int = CHUNK_ROWS,
    slice_columns: list[str] | None = None,
) -> dict[str, int]:
    """Pass 2 on every rank: rank r encodes its share of the train and validation rows (`share`,
    from `shard_of`) into `folder/parts/<r>/`; once the ranks' totals have passed `check_splits`
    (checked on every rank: a failure is the same error everywhere, no rank left waiting), rank 0
    reserves the joined files in `folder/splits/`, every rank writes its part into its place in
    them (data/encoded.SplitJoin: the arrays and meta.json one process writes, byte for byte), and
    rank 0 writes the meta.json files and the slices (the parts' rows in rank order), and removes
    the parts. `folder` is rank 0's (the others pass None); the ranks must share it (one machine,
    or a shared file system), which holds the parts and the joined files at once until the parts
    are removed (twice the splits' size). Returns the rows per split, on every rank."""
    if folder is not None:  # rank 0 makes every rank's part folder: none is made after it is gone
        for rank in range(group.world):
            (folder / "parts" / str(rank)).mkdir(parents=True)
    parts = Path(group.broadcast(None if folder is None else str(folder))) / "parts"
    splits, own = parts.parent / "splits", parts / str(group.rank)
    if not own.is_dir():
        raise ArtifactError(f"rank 0's folder {parts} is gone: rank 0 stopped; rerun the command")
    mine = encode_splits(share, features, downsampling, feature_map, own, chunk_rows, slice_columns)
    metas = {name: json.loads((own / name / "meta.json").read_text()) for name in mine}
    every = group.gather((mine, metas))
    totals = {name: (sum(t[name][0] for t, _ in every), sum(t[name][1] for t, _ in every)) for name in mine}
    rows = check_splits(share.data, totals)
    joins = {name: SplitJoin([m[name] for _, m in every]) for name in mine}
    if group.leader:
        for name, join in joins.items():
            join.reserve(splits / name)
    group.barrier()
    for name, join in joins.items():
        join.place(group.rank, own / name, splits / name)
    group.barrier()
    if group.leader:
        for name, join in joins.items():
            join.finish(splits / name)
        if slice_columns:
            ranks = [parts / str(rank) / "validation" / SLICES for rank in range(group.world)]
            pl.concat([pl.read_parquet(path) for path in ranks], rechunk=True).write_parquet(
                splits / "validation" / SLICES
            )
        shutil.rmtree(parts)
    return rows


def prepare(
    files: DataFiles,
    features: list[Feature],
    downsampling: Downsampling,
    folder: Path | None,
    chunk_rows: int = CHUNK_ROWS,
    slice_columns: list[str] | None = None,
    group: Group | None = None,
) -> dict:
    """Fit and encode into `folder` (feature_map.json, splits/<name>/); returns the step's info.
    With `group` every rank calls this, rank 0 with the folder and the others with None: the fit
    is sharded over the ranks when it merges (fit_feature_map; else rank 0 fits and sends the
    map), and each rank encodes its share of the rows (encode_in_parts); rank 0 writes."""
    leader = group is None or group.leader
    if leader:
        check_inputs(files, features, slice_columns or [])
        check_unique_keys(files)
    start = time.perf_counter()
    share = files if group is None else shard_of(files, group)
    if group is None or mergeable(fitters(features)):
        feature_map = fit_feature_map(share, features, downsampling, chunk_rows, group)
    else:  # tree leaves: rank 0 fits on all the rows, the others take its map
        fitted_map = fit_feature_map(files, features, downsampling, chunk_rows) if leader else None
        feature_map = FeatureMap.from_json(group.broadcast(None if fitted_map is None else fitted_map.to_json()))
    if folder is not None:
        (folder / "feature_map.json").write_text(json.dumps(feature_map.to_json()))
    fitted = time.perf_counter()
    if group is None:
        assert folder is not None
        totals = encode_splits(files, features, downsampling, feature_map, folder / "splits", chunk_rows, slice_columns)
        rows = check_splits(files.data, totals)
    else:
        rows = encode_in_parts(share, features, downsampling, feature_map, folder, group, chunk_rows, slice_columns)
    done = time.perf_counter()
    return {
        "rows": rows,
        "num_ids": feature_map.num_ids,
        "bins": {e.name: e.size for e in feature_map.encoders},
        "method": {"continuous": QUANTILE_METHOD, "categorical": VOCABULARY_METHOD, "chunk_rows": chunk_rows},
        "seconds": {"fit": fitted - start, "encode": done - fitted},
    }


def run(ctx: Context, spec: Spec) -> StepResult:
    values = read(spec, READS)
    files = DataFiles(values["data"], ctx.base_dir)

    features = list(values["features"])

    def build(folder: Path) -> dict:
        downsampling = values["task_downsampling"] or values["downsampling"]  # one per task, or the one
        slices = values["breakdown_columns"]
        if not ctx.leader:  # its shares of the fit and of the encoding; rank 0 writes the step
            prepare(files, features, downsampling, None, slice_columns=slices, group=ctx.group)
            return {}
        info = prepare(files, features, downsampling, folder, slice_columns=slices, group=ctx.group)
        train = files.data.train
        first = train.rows[0] if train.rows else 0
        example = Reader.from_spec(files.data).read(files.path(train), (first, first + EXAMPLE_ROWS), train.header)
        example.write_parquet(folder / EXAMPLE)
        rows = info["rows"]
        ctx.tracker.params({"num_ids": info["num_ids"], **{f"rows.{k}": v for k, v in rows.items()}})
        ctx.tracker.metrics(
            {f"rows_{k}": v for k, v in rows.items()} | {f"{k}_seconds": v for k, v in info["seconds"].items()}
        )
        log(
            f"[prepare] fit on {rows['train']:,} train rows in {info['seconds']['fit']:.1f}s; encoded "
            + ", ".join(f"{n:,} {name}" for name, n in rows.items())
            + f" rows in {info['seconds']['encode']:.1f}s"
        )
        return info

    return cached_step(
        ctx,
        "prepare",
        values,
        build,
        inputs=input_fingerprints(files),
        together=ctx.group is not None,
    )


def feature_map_of(prepared: StepResult) -> FeatureMap:
    """The prepared feature map (a damaged cache is an ArtifactError naming it)."""
    try:
        return FeatureMap.from_json(json.loads((prepared.path / "feature_map.json").read_text()))
    except (OSError, ValueError, ArtifactError) as exc:
        raise corrupted_cache("prepare", prepared.path, exc) from None


def example_of(prepared: StepResult) -> pl.DataFrame:
    """A few raw train rows (the MLflow model's input example and the types of its signature)."""
    try:
        return pl.read_parquet(prepared.path / EXAMPLE)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise corrupted_cache("prepare", prepared.path, exc) from None


def split_of(prepared: StepResult, name: str, num_ids: int) -> EncodedSplit:
    """A prepared split, checked against the id space (a damaged cache is an ArtifactError)."""
    split = EncodedSplit.load(prepared.path / "splits" / name)
    problem = split.problem(num_ids)
    if problem is not None:
        raise corrupted_cache("prepare", prepared.path, ValueError(f"split {name}: {problem}"))
    return split
