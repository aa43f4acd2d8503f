"""The `snn` command: parse, call a step, print. Human output on stderr, `--json` on stdout.

Exit codes: 0 ok · 1 runtime failure · 2 invalid spec, usage or input data · 3 a gate failed.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="snn",
    help="Sparse neural networks for ranking: YAML spec -> fit -> calibrate -> validate, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(shown: bool) -> None:
    if shown:
        from snn.pipeline import __version__

        sys.stdout.write(f"snn {__version__}\n")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", help="Print snn's version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Sparse neural networks for ranking: YAML spec -> fit -> calibrate -> validate, tracked in MLflow."""


SpecArg = Annotated[Path, typer.Argument(help="Path of the YAML spec.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun every step even when its cached output is current.")]


class StepName(StrEnum):
    prepare = "prepare"
    train = "train"
    calibrate = "calibrate"
    validate = "validate"


ForceStepOpt = Annotated[
    StepName | None,
    typer.Option("--force-step", help="Rerun this step and the ones after it, reusing the cached steps before it."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
RegisterOpt = Annotated[
    str | None,
    typer.Option("--register", help="Register the bundle's MLflow model as a new version of this registered model."),
]
PromoteOpt = Annotated[
    str | None,
    typer.Option(
        "--promote",
        help="With --register: point this alias (e.g. champion) at the new version when the verdict passes; "
        "a failing verdict leaves the alias where it was.",
    ),
]
UriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (overrides MLFLOW_TRACKING_URI and the spec).")
]
ProcsOpt = Annotated[
    int,
    typer.Option(
        "--procs",
        help="Train with this many processes on this machine (torchrun, gloo on CPU, NCCL on GPUs); "
        "several machines: torchrun --nnodes ... -m snn.cli.app fit SPEC.",
        min=1,
        max=1024,
    ),
]
NoTrackingOpt = Annotated[
    bool, typer.Option("--no-tracking", help="Log nothing to MLflow (as the spec's `tracking: {enabled: false}`).")
]


def err(message: str) -> None:
    sys.stderr.write(message + "\n")


def handled(command):
    """Turn SnnError into its message + exit code, and anything else into exit 1 without a traceback.
    With `--json`, the error is also one JSON object on stdout: {"error": message, "exit_code": code}."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from snn.pipeline.errors import SnnError, Terminated

        def fail(message: str, code: int):
            err(message if code in (130, 143) else f"error: {message}")
            if kwargs.get("json_out") and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0's
                sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
            raise typer.Exit(code) from None

        try:
            return command(*args, **kwargs)
        except SnnError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted (SIGINT); finished steps and epochs are kept: rerun to resume", 130)
        except Terminated:
            fail("terminated (SIGTERM); finished steps and epochs are kept: rerun to resume", 143)
        except (typer.Exit, typer.Abort):
            raise
        except MemoryError:
            fail("out of memory; use a machine with more memory, or a smaller model or chunk of data", 1)
        except OSError as exc:  # the machine's fault (disk full, permissions, limits), not snn's
            fail(system_error(exc), 1)
        except Exception as exc:  # a fault in snn itself, unless a library wrapped an OSError
            wrapped = _wrapped_os_error(exc)
            if wrapped is not None:
                fail(system_error(wrapped), 1)
            if os.environ.get("SNN_DEBUG"):
                raise
            fail(
                f"unexpected {type(exc).__name__}: {exc}. This is a bug in snn or its environment; "
                "rerun with SNN_DEBUG=1 for the traceback and report it.",
                1,
            )

    return wrapper


def system_error(exc: OSError) -> str:
    """An OSError as the machine's problem, with the path it concerns and what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}; free space or move the work directory (spec.workdir)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}; make the path writable or choose another one"
    if exc.errno == errno.EFBIG:
        return f"a file would grow past the size limit{where} (ulimit -f, or the file system's); raise it"
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return f"too many open files{where}; raise the limit (ulimit -n)"
    return f"{exc.strerror or exc}{where}: a problem of the machine or the file system, not of the spec"


def _wrapped_os_error(exc: Exception) -> OSError | None:
    """The OSError inside a library's error (polars says "... (os error 28)"), or None."""
    match = re.search(r"(.*?)\(os error (\d+)\)", str(exc))
    if match is None:
        return None
    code = int(match.group(2))
    return OSError(code, os.strerror(code))


def _run_pipeline(
    command: str,
    spec_path: Path,
    force: bool,
    tracking_uri: str | None,
    force_step: StepName | None = None,
    tracking: bool = True,
    **validate_kw,
) -> dict:
    from snn.pipeline.spec import load_spec

    loaded = load_spec(spec_path)  # before the steps' imports (torch, mlflow): a spec error in well under 1 s
    from snn.pipeline.steps.run import run

    step = force_step.value if force_step else None
    return run(command, loaded, tracking_uri, force, step, tracking=tracking, **validate_kw)


def _launched(procs: int, spec: Path) -> bool:
    """With --procs N > 1 (and not already under torchrun): check the spec, run this same command under
    `torchrun --standalone --nproc-per-node N` and exit with its outcome (True); otherwise False. A
    rank that fails stops the others (torchrun); the exit code is then that rank's when it is snn's
    own (2, 3), else 1, with a message naming the rank. Ctrl-C and SIGTERM stop torchrun and its ranks."""
    if procs <= 1 or "WORLD_SIZE" in os.environ:
        return False
    import subprocess

    from snn.pipeline.errors import SnnError, Terminated
    from snn.pipeline.spec import load_spec

    load_spec(spec)  # a spec error: once, at once
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--procs":
            skip = True
        elif not arg.startswith("--procs="):
            argv.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    command += ["-m", "snn.cli.app", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        failures = _relay(process)
    except (KeyboardInterrupt, Terminated):
        process.send_signal(signal.SIGTERM)  # torchrun stops its ranks, which clean up as for Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    returncode = process.wait()
    if returncode == 0:
        raise typer.Exit(0)
    if failures and failures[0][1] in (2, 3):
        raise typer.Exit(failures[0][1])  # the rank said why (rank 0's message is above)
    if failures:
        rank, code = failures[0]
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        message = f"rank {rank} of {procs} failed ({how}); the other ranks were stopped"
    else:
        message = f"torchrun exited with {returncode}"
    raise SnnError(message + ". Finished steps and epochs are kept: rerun to resume")


def _relay(process) -> list[tuple[int, int]]:
    """Copy torchrun's stderr to ours (its warnings, and its own report of a failure, left out) and
    read that report: [(rank, exit code)], the root cause (the first failure) first."""
    failures: list[tuple[int, int]] = []
    rank, launcher_failed, root = None, False, False
    for line in process.stderr:
        found = re.search(r"\brank\s*:\s*(\d+)\s*\(local_rank", line)
        code = re.search(r"\bexitcode\s*:\s*(-?\d+)", line)
        root = root or "Root Cause" in line
        if found:
            rank = int(found.group(1))
        elif code and rank is not None:
            failures.insert(0 if root else len(failures), (rank, int(code.group(1))))
            rank, root = None, False
        launcher_failed = launcher_failed or line.startswith("Traceback (most recent call last)")
        quiet = launcher_failed and not os.environ.get("SNN_DEBUG")
        if not quiet and not line.startswith(("[W", "W1", "W0", "E1", "E0", "[E")):
            sys.stderr.write(line)
    return failures


def _finish(result: dict, as_json: bool, summarize) -> None:
    """Print the result (JSON on stdout, or `summarize(result)` and paths on stderr); exit 3 on a failed gate.
    Under torchrun, rank 0 alone prints."""
    if result.get("rank"):
        return
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        summarize(result)
        err(f"bundle: {result.get('bundle')}")
        run_id, built_by, uri = result["mlflow_run_id"], result.get("mlflow_built_by"), result["tracking_uri"]
        if run_id:
            err(f"mlflow: run {run_id} at {uri}")
        elif uri and built_by:
            err(f"mlflow: every step was cached, no new run; these results are run {built_by}'s at {uri}")
        else:
            err("mlflow: not tracked" + (" (--no-tracking)" if not uri else ""))
        registered = result.get("registered")
        if registered:
            alias = registered.get("alias")
            err(
                f"registered: {registered['name']} version {registered['version']}"
                + (f", alias {alias!r} points at it" if alias else f" ({registered.get('alias_refused', 'no alias')})")
            )
    verdict = result.get("verdict")
    if verdict is not None and not verdict["passed"]:
        err("gate failed:\n  " + "\n  ".join(verdict["failures"]))
        raise typer.Exit(3)


def _print_fit(result: dict) -> None:
    m = result["metrics"]
    err(f"validation: auc {m['best_val_auc']:.4f}  logloss {m['best_val_logloss']:.4f}  (best epoch {m['best_epoch']})")


def _print_calibrate(result: dict) -> None:
    m, kinds, evidence = result["metrics"], result.get("calibrator", "unknown"), result.get("evidence", {})
    several = isinstance(kinds, dict)  # several tasks: the kinds and the evidence by task name
    for task in list(kinds) if several else [""]:
        kind, losses = (kinds[task], evidence.get(task, {})) if several else (kinds, evidence)
        compared = ", ".join(f"{k} {v:.4f}" for k, v in losses.get("cv_logloss", {}).items()) or "not compared"
        end, name = (f"_{task}", f"{task}: ") if several else ("", "")
        err(f"{name}calibrator: {kind}  (cross-validated log loss: {compared})")
        err(
            f"{name}validation logloss {m[f'val_logloss_raw{end}']:.4f} -> {m[f'val_logloss_calibrated{end}']:.4f}, "
            f"calibration ratio {m[f'val_calibration_ratio_raw{end}']:.4f} -> "
            f"{m[f'val_calibration_ratio_calibrated{end}']:.4f}"
        )


def _print_metrics(result: dict) -> None:
    for split, by_kind in result["metrics"].items():
        one_task = "raw" in by_kind
        for task, kinds in ({"": by_kind} if one_task else by_kind).items():
            where = split if one_task else f"{split}/{task}"
            for kind in ("uncorrected", "raw", "calibrated", "baseline", "oracle"):
                if kind in kinds:
                    m = kinds[kind]
                    err(
                        f"{where:>10} {kind:>10}: auc {m['auc']:.4f}  logloss {m['logloss']:.4f}  "
                        f"rce {m['rce']:6.2f}  calib {m['calibration_ratio']:.4f}  ece {m['ece']:.4f}  "
                        f"brier {m['brier']:.4f}  rows {int(m['rows'])}"
                    )
    parity = result.get("parity")
    if parity:
        reports = {"": parity} if "rows_compared" in parity else {k: v for k, v in parity.items() if k != "passed"}
        for name, report in reports.items():
            err(
                f"parity{' ' + name if name else ''}: {report['rows_compared']} rows compared, "
                f"{report['missing_online']} missing online, {report['missing_offline']} missing offline, max abs "
                f"diff {report['max_abs_diff']:.3g}, max rel diff {report['max_rel_diff']:.3g}: "
                f"{'PASS' if report['passed'] else 'FAIL'}"
            )
    verdict = result["verdict"]
    graded = f"graded on {verdict['split']}" + (", IN-SAMPLE" if verdict.get("in_sample") else "")
    err(f"verdict: {'PASS' if verdict['passed'] else 'FAIL'} ({graded}; {result['report']}/verdict.json)")


def _pipeline_command(command: str, doc: str, printer: Callable[[dict], None]) -> None:
    """Register `snn <command> SPEC`, which runs its steps (steps.run) and prints with `printer`."""

    def run_command(
        spec: SpecArg,
        force: ForceOpt = False,
        force_step: ForceStepOpt = None,
        json_out: JsonOpt = False,
        tracking_uri: UriOpt = None,
        no_tracking: NoTrackingOpt = False,
        register: RegisterOpt = None,
        procs: ProcsOpt = 1,
    ):
        if _launched(procs, spec):
            return
        result = _run_pipeline(command, spec, force, tracking_uri, force_step, not no_tracking, register=register)
        _finish(result, json_out, printer)

    run_command.__doc__ = doc
    app.command(name=command)(handled(run_command))


_pipeline_command(
    "fit",
    "Fit discretizers and vocabularies, encode, and train the net; writes the raw bundle.\n\n"
    "Example: snn fit specs/adult.yaml",
    _print_fit,
)
_pipeline_command(
    "calibrate",
    "Fit the calibrator on held-out predictions; writes a new, calibrated bundle.\n\n"
    "Example: snn calibrate specs/adult.yaml --json",
    _print_calibrate,
)


@app.command()
@handled
def validate(
    spec: SpecArg,
    compare: Annotated[
        Path | None, typer.Option("--compare", help="Online predictions (parquet: key, score) to check parity against.")
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Baseline bundle for *_vs_baseline gates.")
    ] = None,
    force: ForceOpt = False,
    force_step: ForceStepOpt = None,
    json_out: JsonOpt = False,
    tracking_uri: UriOpt = None,
    no_tracking: NoTrackingOpt = False,
    register: RegisterOpt = None,
    promote: PromoteOpt = None,
    procs: ProcsOpt = 1,
):
    """Offline metrics (raw and calibrated), slices, plots, gates and parity; exit 3 when a gate fails.

    Example: snn validate specs/adult.yaml --compare online.parquet
    """
    if _launched(procs, spec):
        return
    _validate_command(
        "validate", spec, force, force_step, json_out, tracking_uri, no_tracking, register, promote, compare, baseline
    )


def _validate_command(
    command: str, spec, force, force_step, json_out, tracking_uri, no_tracking, register, promote, *compared
):
    from snn.pipeline.errors import InputError

    if promote is not None and register is None:
        raise InputError("--promote sets an alias on the version --register makes; give --register NAME too")
    compare, baseline = compared or (None, None)
    result = _run_pipeline(
        command,
        spec,
        force,
        tracking_uri,
        force_step,
        not no_tracking,
        compare=compare,
        baseline=baseline,
        register=register,
        promote=promote,
    )
    _finish(result, json_out, _print_metrics)


@app.command(name="run")
@handled
def run_all(
    spec: SpecArg,
    force: ForceOpt = False,
    force_step: ForceStepOpt = None,
    json_out: JsonOpt = False,
    tracking_uri: UriOpt = None,
    no_tracking: NoTrackingOpt = False,
    register: RegisterOpt = None,
    promote: PromoteOpt = None,
    procs: ProcsOpt = 1,
):
    """Every step in order (prepare, train, calibrate, validate), reusing cached steps.

    Example: snn run specs/adult.yaml --register adult-income --promote champion
    """
    if _launched(procs, spec):
        return
    _validate_command("run", spec, force, force_step, json_out, tracking_uri, no_tracking, register, promote)


@app.command()
@handled
def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (from fit or calibrate).")],
    data: Annotated[Path, typer.Argument(help="Rows to score, in the bundle's data format.")],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="key, score, raw_score: .parquet (or .pq), .csv, or - for CSV on stdout."),
    ],
    online: Annotated[
        bool, typer.Option("--online", help="Score one record at a time with the online scorer.")
    ] = False,
    rows: Annotated[str | None, typer.Option("--rows", help="Half-open data row range START:STOP.")] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header", help="CSV: whether the first line is a header (default: as the bundle's data spec)."
        ),
    ] = None,
    via: Annotated[
        str | None,
        typer.Option("--via", help="Score through a running `snn serve` at this URL (the bundle reads the rows)."),
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="The data's format: csv, parquet, criteo, libsvm or libffm (default: the bundle's, or parquet "
            "for a .parquet file and CSV for a .csv file when the bundle read the other).",
        ),
    ] = None,
    json_out: JsonOpt = False,
):
    """Score a data file with a bundle and write predictions with the row key.

    Example: snn predict specs/.snn/bundles/adult-income data/adult/adult.test -o preds.csv
    """
    from snn.pipeline.errors import InputError
    from snn.pipeline.serving.predict import predict_file

    row_range = None
    if rows is not None:
        try:
            start, stop = (int(x) for x in rows.split(":"))
            if not 0 <= start < stop < 2**63:
                raise ValueError(rows)
            row_range = (start, stop)
        except ValueError:
            raise InputError(f"--rows {rows!r} is not START:STOP with 0 <= START < STOP") from None
    if json_out and str(output) == "-":
        raise InputError("`-o -` writes the predictions on stdout, where --json would mix with them; drop one")
    count = predict_file(
        bundle, data, output, online=online, rows=row_range, header=header, via=via, data_format=data_format
    )
    scorer = f"server {via}" if via else "online scorer" if online else "batch scorer"
    err(f"wrote {count} predictions to {output} ({scorer})")
    if json_out:
        sys.stdout.write(json.dumps({"rows": count, "output": str(output), "scorer": scorer}) + "\n")


@app.command()
@handled
def parity(
    spec: SpecArg,
    served: Annotated[
        str | None,
        typer.Option("--served", help="Serve this bundle or models:/NAME@ALIAS instead of the spec's own bundle."),
    ] = None,
    json_out: JsonOpt = False,
    tracking_uri: UriOpt = None,
    no_tracking: NoTrackingOpt = False,
):
    """Calibrate, start `snn serve`, score the test rows through HTTP, stop it, and validate --compare.

    Exit 0 when the served scores equal the reference scorer's within the spec's parity tolerance, 3 when not.
    Example: snn parity specs/adult.yaml
    """
    from snn.pipeline.steps.served import parity as run_parity

    result = run_parity(spec, served, tracking_uri, tracking=not no_tracking)
    if not json_out:
        served_info = result["served"]
        err(f"served: {served_info['source']} ({served_info['rows']} test rows scored through HTTP)")
    _finish(result, json_out, _print_metrics)


@app.command()
@handled
def serve(
    source: Annotated[str, typer.Argument(help="Bundle folder, MLflow model folder, or models:/NAME@ALIAS.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.", min=1, max=256)] = 1,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse records with unknown or missing features (400).")
    ] = False,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes (413 above).", min=1)] = 5
    * 1024
    * 1024,
    poll: Annotated[
        float, typer.Option("--poll", help="Seconds between checks of a models:/NAME@ALIAS source (0: never).", min=0)
    ] = 0.0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Say where it serves as one JSON object on stdout (errors too).")
    ] = False,
):
    """Serve a model over HTTP: POST /score, MLflow's POST /invocations, /health, /ready, /metadata, POST /reload.

    Example: snn serve specs/.snn/bundles/adult-income --port 8080
    """
    from snn.pipeline.serving.server import ServeConfig
    from snn.pipeline.serving.server import serve as run_server

    err(f"serving {source} on http://{host}:{port} ({workers} worker(s)); SIGTERM or Ctrl-C stops it")
    if json_out:
        sys.stdout.write(json.dumps({"serving": source, "url": f"http://{host}:{port}", "workers": workers}) + "\n")
        sys.stdout.flush()
    run_server(ServeConfig(source, strict, max_body, poll, workers), host, port, workers)


@app.command()
@handled
def init(
    data: Annotated[Path, typer.Argument(help="A data file: .csv, .tsv, .parquet, .libsvm (or --format).")],
    label: Annotated[
        str | None, typer.Option("--label", help="The label column (default: guessed from names and values).")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the spec.")] = Path("spec.yaml"),
    data_format: Annotated[
        str | None,
        typer.Option("--format", help="csv, parquet, criteo, libsvm or libffm (default: from the extension)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The model's name (default: the file's name).")] = None,
    json_out: JsonOpt = False,
):
    """Write a complete, commented spec for a data file: kinds inferred, the label guessed, a test split.

    The label is --label, or a column named like one (label, target, clicked, ...), or the last
    two-valued column; the last 20% of the rows are the test split.

    Example: snn init clicks.csv --label clicked && snn run spec.yaml
    """
    from snn.pipeline.init import init_spec

    result = init_spec(data, output, label, data_format, name)
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    kinds: dict[str, list[str]] = {}
    for column, kind in result["features"].items():
        kinds.setdefault(kind, []).append(column)
    err(f"wrote {result['spec']}: label {result['label']!r}, {result['rows']:,} rows ({result['format']})")
    for kind, columns in kinds.items():
        err(f"  {kind}: {', '.join(columns)}")
    for column, why in result["skipped"].items():
        err(f"  {column}: {why}")
    err(f"next: snn run {result['spec']}")


@app.command(name="spec")
@handled
def show_spec(spec: SpecArg, json_out: JsonOpt = False):
    """Print the spec as snn reads it: shorthand expanded and every default written out.

    Example: snn spec specs/adult.yaml
    """
    import yaml

    from snn.pipeline.spec import load_spec

    resolved = load_spec(spec).spec.model_dump(mode="json")
    if json_out:
        sys.stdout.write(json.dumps(resolved) + "\n")
    else:
        sys.stdout.write(f"# {spec}, resolved: every default written out\n")
        sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False, width=120))


@app.command()
@handled
def schema(json_out: JsonOpt = False):
    """Print the spec's JSON schema (always JSON; `--json` prints it on one line).

    Example: snn schema > snn.schema.json   (then `# yaml-language-server: $schema=snn.schema.json` in a spec)
    """
    from snn.pipeline.spec import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=None if json_out else 2) + "\n")


@app.command()
@handled
def inspect(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")], json_out: JsonOpt = False):
    """Show a bundle's features (bins, vocabulary sizes), blocks, weights, calibrator and metrics.

    Example: snn inspect specs/.snn/bundles/adult-income --json
    """
    from snn.pipeline.serving.describe import describe, summary

    sys.stdout.write((json.dumps(summary(bundle), default=str) if json_out else describe(bundle)) + "\n")


@app.command()
@handled
def bench(
    size: Annotated[
        str, typer.Option("--size", help="full (the figures in the README) or tiny (a smoke run).")
    ] = "full",
    workdir: Annotated[Path, typer.Option("--workdir", help="Where synthetic data and runs are cached.")] = Path(
        ".snn/bench"
    ),
    json_out: JsonOpt = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also write the JSON here.")] = None,
):
    """Speed and quality benchmarks (B1-B13, Q), snn beside its competitors: a table, or --json.

    Example: snn bench --size tiny
    """
    from snn.pipeline.bench import suite as benchmarks
    from snn.pipeline.bench.figures import table
    from snn.pipeline.errors import InputError

    if size not in benchmarks.SIZES:
        raise InputError(f"--size {size!r} is not one of: {', '.join(benchmarks.SIZES)}")
    result = benchmarks.run(size, workdir)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2))
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(table(result) + "\n")


data_app = typer.Typer(help="Data utilities: synthetic data with known true probabilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
@handled
def data_synth(
    output: Annotated[Path, typer.Argument(help="Parquet file to write.")],
    rows: Annotated[int, typer.Option("--rows", help="Number of rows.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the planted model and the rows.")] = 0,
    row_group: Annotated[
        int, typer.Option("--row-group", help="Rows per parquet row group (and per generated block).")
    ] = 262_144,
    spec_out: Annotated[Path | None, typer.Option("--spec", help="Also write a ready spec for the file here.")] = None,
    lists: Annotated[
        bool,
        typer.Option(
            "--lists",
            help="Add id-list columns with planted effects: L1 (int list), L2 (text), L3 (ints of L1's items).",
        ),
    ] = False,
    positions: Annotated[
        bool,
        typer.Option(
            "--positions", help="Add the slot each row was shown in (position, 1-10, with a planted bias) and p_top."
        ),
    ] = False,
    weighted: Annotated[
        bool,
        typer.Option(
            "--weighted", help='Add W, weighted tags with a planted effect (text "w12:0.73|w7:1.9": sparse continuous).'
        ),
    ] = False,
    tasks: Annotated[
        bool,
        typer.Option(
            "--tasks",
            help="Two events per row: click (5% of rows) and convert (10% of clicks), with p_click, "
            "p_convert_given_click and p_convert, in place of label and p_true.",
        ),
    ] = False,
    json_out: JsonOpt = False,
):
    """Criteo-shaped rows from a planted model (13 continuous, 26 categorical, p_true), streamed to parquet.

    Example: snn data synth clicks.parquet --rows 100000 --spec clicks.yaml && snn run clicks.yaml
    """
    import yaml

    from snn.pipeline.data.synth import SynthConfig, synth_spec, write
    from snn.pipeline.errors import InputError
    from snn.pipeline.files import output_file

    if not 0 <= seed <= 2**63 - 1:
        raise InputError(f"--seed {seed} must be an integer in [0, 2^63 - 1]")
    output_file(output, "output")
    if spec_out is not None and tasks:
        raise InputError("--spec writes a one-label spec; with --tasks, start from specs/synthetic_tasks.yaml")
    if spec_out is not None:
        output_file(spec_out, "--spec", inputs=(output,))
    config = SynthConfig(
        rows=rows,
        seed=seed,
        row_group=row_group,
        lists=lists,
        positions=positions,
        weighted=weighted,
        tasks=tasks,
        positive_rate=0.05 if tasks else 0.25,  # clicks: a realistic rate
    )
    summary = write(output, config)
    if spec_out is not None:
        spec_out.parent.mkdir(parents=True, exist_ok=True)
        data_path = os.path.relpath(output.resolve(), spec_out.resolve().parent)
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", output.stem).lstrip("._-")[:100] or "synth"
        spec_out.write_text(yaml.safe_dump(synth_spec(data_path, rows, name=name), sort_keys=False))
        summary["spec"] = str(spec_out)
    if json_out:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        err(
            f"wrote {summary['rows']:,} rows to {output} (label rate {summary['label_rate']:.3f}; "
            f"planted model in {output}.json)" + (f"; spec: {spec_out}" if spec_out else "")
        )


def _terminate(signum, frame):
    """SIGTERM: raise Terminated in the main thread (once), so clean-up runs as for Ctrl-C."""
    from snn.pipeline.errors import Terminated

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def main():
    signal.signal(signal.SIGTERM, _terminate)
    if "--json" not in sys.argv[1:]:
        app()
        return
    from typer.exceptions import TyperException

    try:  # with --json, a usage error (an unknown option, a missing argument) is a JSON object too
        code = app(standalone_mode=False)  # a command's typer.Exit(code) comes back as its code
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Abort:
        sys.exit(130)
    except TyperException as exc:  # typer's click: UsageError and its kind carry a message and a code
        if not hasattr(exc, "format_message"):
            raise
        exc.show()  # type: ignore[attr-defined]
        code = getattr(exc, "exit_code", 2)
        sys.stdout.write(json.dumps({"error": exc.format_message(), "exit_code": code}) + "\n")
        sys.exit(code)


if __name__ == "__main__":
    main()
