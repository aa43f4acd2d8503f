"""`snn predict`: score a data file with a bundle, batch (torch), online (the serving scorer, in
requests), or through a running `snn serve` (`via`: its /score endpoint, in requests)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from ..data.readers import EXTENSION_FORMATS, Reader, format_of
from ..data.sources import check_schema
from ..errors import InputError, ServingError
from ..files import output_file, owned_temp
from ..store.bundle import Bundle
from .batch import score_frame
from .online import OnlineScorer

REQUEST_ROWS = 1000
STDOUT = "-"  # `-o -`: CSV on standard output
OUTPUT_SUFFIXES = (".parquet", ".pq", ".csv")


def reader_for(trained: Reader, data: Path, data_format: str | None = None) -> Reader:
    """How to read `data` for a bundle trained on `trained`'s files: that reader, unless `data_format`
    (--format) names another format, or the file's extension says parquet where the bundle read text
    (or text where it read parquet); then that format's reader (a CSV's header names its columns, its
    separator is a comma, a tab for .tsv)."""
    wanted = data_format
    if wanted is None:
        named = EXTENSION_FORMATS.get(data.suffix.lower())
        wanted = named if named is not None and (named == "parquet") != (trained.format == "parquet") else None
    if wanted is None or wanted == trained.format:
        return trained
    separator = "\t" if data.suffix.lower() == ".tsv" else ","
    return replace(trained, format=format_of(data, wanted), columns=None, separator=separator, comment_prefix=None)


def read_rows(
    bundle: Bundle, data: Path, rows: tuple[int, int] | None, header: bool | None = None, reader: Reader | None = None
) -> pl.DataFrame:
    """The rows to score, checked like training data: every feature column present with a usable type
    (the label need not be there, nor the column of a position feature, which is served fixed).
    `reader`: how to read the file (default: as the bundle's data was read)."""
    reader = reader or bundle.reader
    check_schema(
        reader.schema(data, header),
        bundle.recipe.data,
        list(bundle.recipe.features),
        data,
        bundle.slice_columns,  # read by the calibrators of tasks calibrated by slice
        with_label=False,
        served=True,
    )
    frame = reader.read(data, rows, header)
    if bundle.key not in frame.columns:
        raise InputError(f"{data} lacks the row key column {bundle.key!r} the bundle was trained with")
    return frame


def predict_file(
    bundle_path: Path,
    data: Path,
    output: Path,
    online: bool = False,
    rows: tuple[int, int] | None = None,
    header: bool | None = None,
    via: str | None = None,
    data_format: str | None = None,
) -> int:
    """Write (key, score, raw_score) for every row of `data` to `output` (its format from its name:
    `write_predictions`), or a score and a
    raw score per task (Bundle.score_columns); returns the row count. The bundle reads the rows
    (key; format as its data, or `data_format`, or the file's extension: `reader_for`); `via` (a
    server's URL) scores them instead of this process.
    The output is written to a temporary file and renamed into place; it may not be an input."""
    if str(output) != STDOUT:
        output_file(output, "output", inputs=(data, *Path(bundle_path).glob("*")))
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(
                f"output {output}: name it .parquet (or .pq) or .csv, or give - for CSV on stdout; "
                "the format follows the name"
            )
    bundle = Bundle.load(bundle_path)
    frame = read_rows(bundle, data, rows, header, reader_for(bundle.reader, data, data_format))
    if via is not None:
        out = pl.concat(
            [
                pl.DataFrame(served_scores(via, frame.slice(start, REQUEST_ROWS).to_dicts()))
                for start in range(0, frame.height, REQUEST_ROWS)
            ]
        )
        out = pl.DataFrame({bundle.key: frame[bundle.key]}).hstack(out)
    elif online:  # the serving scorer, fed requests of REQUEST_ROWS candidates as a server would
        scorer = OnlineScorer(bundle)
        raws = np.concatenate(
            [
                scorer.raw_many(frame.slice(start, REQUEST_ROWS).to_dicts())
                for start in range(0, frame.height, REQUEST_ROWS)
            ]
            or [np.empty(0)]
        )
        out = pl.DataFrame({bundle.key: frame[bundle.key], **bundle.score_columns(raws, bundle.slice_values(frame))})
    else:
        out = score_frame(bundle, frame)
    write_predictions(out, output)
    return out.height


def write_predictions(frame: pl.DataFrame, output: Path) -> None:
    """Write by the output's name: `-` CSV on stdout, `.csv` CSV, `.parquet` or `.pq` parquet (to a
    temporary file renamed into place)."""
    if str(output) == STDOUT:
        sys.stdout.write(frame.write_csv())
        sys.stdout.flush()
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with owned_temp(output) as tmp:
        if output.suffix.lower() == ".csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp)


def served_scores(url: str, records: list[dict]) -> dict[str, list[float]]:
    """POST one request of records to a server's /score -> its columns (score, raw_score, ...)."""
    import urllib.error
    import urllib.request

    body = json.dumps({"records": records}, default=str).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/score", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise ServingError(f"{url} answered {exc.code} to a request of {len(records)} rows: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServingError(f"cannot reach {url} ({exc}); start it with `snn serve BUNDLE --port ...`") from None
