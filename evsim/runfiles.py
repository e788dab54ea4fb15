"""A run folder's files belong together: ownership by run id, and repair after a kill.

**Run id.** A new run draws a random id, writes it in ``config.json`` and in every
checkpoint (and ``network.npz``) it saves. A checkpoint copied in from another run
folder carries that run's id, so resuming or evaluating it here is refused
(:func:`check_belongs`) instead of rewriting this folder's configuration, metrics and
network with another run's. Folders and files written before run ids existed have
none, and are taken as they are.

**Repair.** An epoch end writes, in order, ``checkpoint-latest.npz``, the hard link
``checkpoint-best.npz`` (when the epoch improved), ``network.npz`` and
``metrics.jsonl``; the last epoch then ``summary.json``. Each write is atomic, but a
kill between two leaves the later ones stale. Resuming rewrites the network, metrics
and summary from the checkpoint; :func:`repair_best` makes ``checkpoint-best.npz``
the state the metrics name as best again, when that state is the latest.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from pathlib import Path

import numpy as np

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, check_metric_rows, stored_config
from evsim.data.base import read_from
from evsim.data.cache import exact_fingerprint, fingerprint_change
from evsim.errors import CheckpointError, DataError
from evsim.files import link_atomic
from evsim.readers import CODE_ERRORS, check_regular, read_json, read_small_file, reason
from evsim.runlock import LOCK_FILE

CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
SUMMARY_JSON = "summary.json"
# One row per epoch and per development step; a long run with many steps is a few MiB.
MAX_METRICS_BYTES = 256 << 20
# What evsim train writes in config.json beside the options: facts of the run, not of its
# configuration (run_id differs in every run; network follows from the options and the data;
# data_fingerprint is the identity of the data files, None where the dataset has none;
# data_root the folder they were read from, None where the dataset has none; path_table
# the kind of machine whose crossovers chose the convolutions' paths).
BESIDE_OPTIONS = ("data_source", "data_fingerprint", "data_root", "run_id", "checkpoints", "network", "path_table")
# Every file evsim train writes in a run folder (evsim export and import-nir never overwrite one).
RUN_FILES = ("config.json", "config.toml", "metrics.jsonl", "summary.json", "training.png", "network.npz",
             "checkpoint-latest.npz", "checkpoint-best.npz")
# A sweep folder's own files (evsim sweep --out SWEEP_DIR): the state file that makes it
# one (every point's options and status), the file a stop writes for its points to read,
# the folder of the points' logs, and what evsim sweep report writes (by kind).
STATE_FILE = "sweep.json"
STOP_FILE = "stop-requested"
LOG_DIR = "logs"
REPORT_FILES = {"csv": "results.csv", "md": "report.md", "png": "report.png"}


def new_run_id() -> str:
    """A random 16-hex-digit id for a new run."""
    return secrets.token_hex(8)


def folder_run_id(run_dir: Path) -> str | None:
    """The run id in ``run_dir``'s ``config.json``; None without one (no file, or a
    folder written before run ids existed).

    Raises
    ------
    CheckpointError
        If ``config.json`` is unreadable, or its ``run_id`` is not a string.
    """
    path = Path(run_dir) / CONFIG_JSON
    if not os.path.lexists(path):
        return None
    values = read_json(path, "run configuration (config.json)", CheckpointError)
    run_id = values.get("run_id") if isinstance(values, dict) else None
    if run_id is not None and not isinstance(run_id, str):
        raise CheckpointError(f"{path}: run_id must be a string, got {run_id!r}; restore the file")
    return run_id


def folder_data_fingerprint(run_dir: Path) -> dict | None:
    """The fingerprint of the data the run in ``run_dir`` trained on
    (``{split: files_fingerprint}``, as its ``config.json`` records it); None without one
    (no file, a dataset without fingerprints, or a run saved before they were recorded).

    Raises
    ------
    CheckpointError
        If ``config.json`` is unreadable, or its ``data_fingerprint`` is not what training writes.
    """
    path = Path(run_dir) / CONFIG_JSON
    if not os.path.lexists(path):
        return None
    values = read_json(path, "run configuration (config.json)", CheckpointError)
    fingerprint = values.get("data_fingerprint") if isinstance(values, dict) else None
    fields = {"files": int, "bytes": int, "contents": str, "names": str, "sensor": list}
    if fingerprint is not None and not (
            isinstance(fingerprint, dict)
            and all(isinstance(split, dict) and split.keys() <= fields.keys()
                    and split.keys() >= fields.keys() - {"names", "sensor"}
                    and all(type(split[k]) is fields[k] for k in split) for split in fingerprint.values())):
        raise CheckpointError(f"{path}: data_fingerprint is {str(fingerprint)[:60]!r}, not what training writes; "
                              "restore the file")
    return fingerprint


def check_data_dir_exists(run_dir: Path, data_dir: Path | None, retry: str, source: str | None = None) -> None:
    """Refuse to go on with the run in ``run_dir`` where its data folder ``data_dir`` is
    gone: the loader would otherwise blame a --data-dir nobody typed, or fall back to
    other data. ``retry``: the command that names the folder's new place.

    Raises
    ------
    DataError
        Naming the folder, the run, and both fixes.
    """
    if data_dir is None or Path(data_dir).is_dir():
        return
    state = "is no longer a folder" if Path(data_dir).exists() else "no longer exists"
    raise DataError(f"{run_dir} trained on {source or 'the'} data in {data_dir}, which {state}; restore that folder, "
                    f"or give its new place: {retry}")


@contextlib.contextmanager
def without_evsim_data(hide: bool = True):
    """``$EVSIM_DATA`` unset meanwhile, with ``hide``: a run folded it into its own
    --data-dir when it trained, so the value now is not the run's data."""
    value = os.environ.pop("EVSIM_DATA", None) if hide else None
    try:
        yield
    finally:
        if value is not None:
            os.environ["EVSIM_DATA"] = value


def check_moved_data_dir(run_dir: Path, data_dir: Path) -> None:
    """Refuse ``data_dir``, given as the new place of ``run_dir``'s data, unless it is a
    folder and the run recorded the fingerprint that tells its files.

    Raises
    ------
    DataError
        Naming the folder and what to give instead.
    """
    if not Path(data_dir).is_dir():
        state = "is not a folder" if Path(data_dir).exists() else "does not exist"
        raise DataError(f"{data_dir} (--data-dir) {state}; give the folder that holds the data {run_dir} trained on")
    if folder_data_fingerprint(run_dir) is None:
        raise DataError(f"{run_dir} recorded no fingerprint of its data files (no config.json, a dataset without "
                        f"files, or a run saved before they were recorded), so {data_dir} cannot be checked to hold "
                        "them; give the folder it trained on, where it was")


def check_loaded_from(run_dir: Path, data_dir: Path, dataset) -> None:
    """Refuse ``dataset`` loaded for ``run_dir`` with ``--data-dir data_dir`` unless it was
    read from there: a folder without the run's files makes a loader fall back to its
    substitute (evsim's emulated N-MNIST), which is not what the folder was given for.

    Raises
    ------
    DataError
        Naming the folder.
    """
    if not read_from(dataset.meta.get("root"), data_dir):
        raise DataError(f"{data_dir} (--data-dir) holds no {dataset.name} files; give the folder that holds the data "
                        f"{run_dir} trained on")


def recorded_data_dir(run_dir: Path) -> str | None:
    """The data folder ``run_dir``'s ``config.json`` names (where ``--resume --data-dir``
    last recorded it; the checkpoints' copies may be older), None without one.

    Raises
    ------
    CheckpointError
        If ``config.json`` is unreadable or not a configuration.
    """
    values = read_run_config(run_dir)
    return None if values is None else values["data"]["data_dir"]


def check_run_data(run_dir: Path, fingerprint: dict | None, dataset, consequence: str, moved: bool = False) -> None:
    """Refuse ``dataset`` for the run in ``run_dir`` unless its files are those the run
    trained on, by ``fingerprint`` (:func:`folder_data_fingerprint`). Nothing is compared
    for a run saved without one, or a dataset that has none. A fingerprint of the older
    kind (full paths) is compared exactly where the data has not ``moved``, else by the
    files' count and size.

    Raises
    ------
    DataError
        Naming the data folder, what changed, ``consequence`` and the fixes.
    """
    now = dataset.meta.get("fingerprint")
    if fingerprint is not None and now is not None and not moved:
        now = exact_fingerprint(fingerprint, now, dataset.meta.get("listing"))
    change = None if fingerprint is None or now is None else fingerprint_change(fingerprint, now)
    if change:
        raise DataError(f"the data in {dataset.meta.get('root') or 'the data folder'} is not what {run_dir} "
                        f"trained on ({change}); {consequence}; give the folder of the run's data (restored, or "
                        "--data-dir where it is now), or train a new run")


def read_run_config(run_dir: Path) -> dict | None:
    """The values of ``run_dir``'s ``config.json``, checked as every command checks a
    stored configuration (:func:`~evsim.checkpoint.stored_config`), with the options added
    since it was written filled in; beside the options, what training writes with them
    (``data_source``, ``run_id``). None without the file.

    Raises
    ------
    CheckpointError
        If the file is unreadable, not JSON, or not a configuration this evsim can run.
    """
    path = Path(run_dir) / CONFIG_JSON
    if not os.path.lexists(path):
        return None
    values = read_json(path, "run configuration (config.json)", CheckpointError, "restore the file")
    config = stored_config(values, path)  # refuses anything but an object of options
    return {**values, **config.to_dict()}


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir``'s ``metrics.jsonl`` (none without the file), checked as a
    checkpoint's are (:func:`~evsim.checkpoint.check_metric_rows`): training rewrites the
    file whole, so any bad line is damage, not a write in progress.

    Raises
    ------
    CheckpointError
        Naming the file and its first bad line.
    """
    path = Path(run_dir) / METRICS_JSONL
    if not os.path.lexists(path):
        return []
    raw = read_small_file(path, "metrics file (metrics.jsonl)", CheckpointError, MAX_METRICS_BYTES)
    numbers, rows = [], []
    for number, line in enumerate(raw.split(b"\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line.decode()))
            except ValueError as exc:  # UnicodeDecodeError is one too
                raise _damaged_metrics(path, f"line {number} is not JSON: {reason(exc)}") from None
            numbers.append(number)
    try:
        check_metric_rows(rows, lambda i: f"line {numbers[i]}: row")
    except ValueError as exc:
        raise _damaged_metrics(path, str(exc)) from None
    return rows


def _damaged_metrics(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: damaged metrics ({problem}); restore the file, or train the run again")


def read_summary(run_dir: Path, numbers: tuple[str, ...] = ()) -> dict | None:
    """The values of ``run_dir``'s ``summary.json`` (written when the last epoch ends), or
    None without one, checked as training writes it: a JSON object, ``structure`` a table
    naming it, ``data_source`` text, and each key of ``numbers`` present a finite number.

    Raises
    ------
    CheckpointError
        Naming the file and the field at fault.
    """
    path = Path(run_dir) / SUMMARY_JSON
    if not os.path.lexists(path):
        return None
    values = read_json(path, "run summary (summary.json)", CheckpointError, "restore the file")
    problem = _summary_problem(values, numbers)
    if problem:
        raise CheckpointError(f"{path}: damaged run summary ({problem}, not what training writes); restore the file, "
                              "or move the run folder away and train it again")
    return values


def _summary_problem(summary, numbers: tuple[str, ...]) -> str | None:
    if not isinstance(summary, dict):
        return f"a JSON object expected, got {type(summary).__name__}"
    structure = summary.get("structure")
    if structure is not None and not (isinstance(structure, dict) and isinstance(structure.get("name"), str)):
        return f"structure is {structure!r}"
    if not isinstance(summary.get("data_source"), (str, type(None))):
        return f"data_source is {summary['data_source']!r}"
    if "test_acc" not in summary:  # the one result every summary since the first holds
        return "no test_acc"
    for key in numbers:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            return f"{key} is {value!r}"
    return None


def stored_run_id(path: Path) -> str | None:
    """The run id in the ``meta`` of an evsim ``.npz`` (checkpoint or network), or None.

    Raises
    ------
    CheckpointError
        If the file cannot be read.
    """
    run_id = _stored_meta(path).get("run_id")
    return run_id if isinstance(run_id, str) else None


def stored_trained_on(path: Path) -> dict:
    """What the ``meta`` of an evsim network file says of the data it was trained on
    (``dataset``, ``data_source``, ``run_id``: the strings among them; none if it says nothing).

    Raises
    ------
    CheckpointError
        If the file cannot be read.
    """
    record = _stored_meta(path).get("trained_on")
    record = record if isinstance(record, dict) else {}
    return {key: value for key, value in record.items()
            if key in ("dataset", "data_source", "run_id") and isinstance(value, str)}


def _stored_meta(path: Path) -> dict:
    check_regular(path, "evsim .npz file", CheckpointError)  # np.load would wait on a FIFO
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
    except CODE_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 -- np.load and zipfile raise many kinds on a damaged file
        raise CheckpointError(f"{path}: not a readable evsim .npz file ({reason(exc)}); restore it") from None
    return meta if isinstance(meta, dict) else {}


def check_belongs(run_dir: Path, path: Path, run_id: str | None) -> None:
    """Refuse ``path`` (a checkpoint or network of run ``run_id``) unless it belongs to
    the run in ``run_dir``: same id as its ``config.json``, or a folder without one.

    Raises
    ------
    CheckpointError
        One line naming the file, both ids and the fix.
    """
    mine, where = folder_run_id(run_dir), CONFIG_JSON
    if mine is None:  # no config.json to say: the run's other files do
        mine, where = _files_run_id(run_dir, Path(path))
    if mine is not None and run_id != mine:
        theirs = f"run {run_id}" if run_id else "a run without a run id"
        raise CheckpointError(f"{path}: belongs to {theirs}, not to the run in {run_dir} (run {mine} in its "
                              f"{where}): it was copied from another run folder; put this run's own file "
                              "back, or use it in the folder it came from")


def _files_run_id(run_dir: Path, besides: Path) -> tuple[str | None, str]:
    """The run id the first of the folder's network and checkpoint files other than
    ``besides`` records, and its name; ``(None, "")`` if none records one."""
    for name in (NETWORK_FILE, CHECKPOINT_BEST, CHECKPOINT_LATEST):
        other = Path(run_dir) / name
        if other.is_file() and not (besides.exists() and os.path.samefile(other, besides)):
            run_id = _run_id_or_none(other)  # an unreadable file says nothing of the run
            if run_id is not None:
                return run_id, name
    return None, ""


def best_epoch(metrics: list[dict]) -> int | None:
    """The epoch (1-based) whose validation accuracy (test accuracy, for a run without a
    validation split) first reached the best: the one training wrote
    ``checkpoint-best.npz`` for (it links on a strict improvement)."""
    rows = [row for row in metrics if row.get("type") == "epoch"]
    chosen = "val_acc" if any("val_acc" in row for row in rows) else "test_acc"
    best, which = None, None
    for row in rows:
        if best is None or row[chosen] > best:
            best, which = row[chosen], row["epoch"]
    return which


def _checkpoint_epoch(path: Path) -> int | None:
    """The finished epochs of the checkpoint at ``path`` (None inside an epoch, or unreadable).

    Raises
    ------
    CheckpointError
        If ``path`` is not a regular file (np.load would wait on a FIFO).
    """
    check_regular(path, "evsim checkpoint", CheckpointError)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
    except CODE_ERRORS:
        raise
    except Exception:  # noqa: BLE001 -- unreadable: no epoch to compare
        return None
    if not isinstance(meta, dict) or meta.get("in_epoch") is not None:
        return None
    return meta.get("epoch")


def repair_best(run_dir: Path, metrics: list[dict], epoch: int, latest: str, best: str) -> bool:
    """Make ``best`` a link to ``latest`` when the metrics say the latest epoch is the
    best and ``best`` is another file (a kill came between writing the one and linking
    the other); returns whether it did.

    ``latest`` must hold the state after finished epoch ``epoch``; it is read to make sure.
    """
    run_dir = Path(run_dir)
    latest_path, best_path = run_dir / latest, run_dir / best
    if best_epoch(metrics) != epoch or _checkpoint_epoch(latest_path) != epoch:
        return False
    if best_path.exists() and (os.path.samefile(latest_path, best_path) or _checkpoint_epoch(best_path) == epoch
                               or _run_id_or_none(best_path) not in (None, _run_id_or_none(latest_path))):
        return False  # never replace another run's best: it may exist nowhere else
    link_atomic(latest_path, best_path)
    return True


def _run_id_or_none(path: Path) -> str | None:
    try:
        return stored_run_id(path)
    except CheckpointError:
        return None


def refuse_overwriting_run_files(path: Path, fix: str, sweep_report: bool = False) -> None:
    """Refuse to write ``path`` where a file a run or sweep keeps its state in is: a run's
    file (a name :data:`RUN_FILES` lists, existing: an export or import over a trained
    ``network.npz`` would lose it), a run folder's lock file (:data:`~evsim.runlock.LOCK_FILE`:
    replacing it lets a second trainer in), a sweep folder's state file, stop file or
    any file in its logs folder, and, unless ``sweep_report`` (evsim sweep report writing
    its own), the sweep report's files in a sweep folder.

    Raises
    ------
    CheckpointError
        One line naming the file, what it is, and ``fix``.
    """
    path = Path(path)
    folder = path.parent.resolve()  # not the file itself: a link there is replaced, not followed
    sweep = os.path.lexists(folder / STATE_FILE)
    logs = folder.name == LOG_DIR and os.path.lexists(folder.parent / STATE_FILE)
    what = None
    if path.name in RUN_FILES and os.path.lexists(path):
        what = f"a run's {path.name}"
    elif path.name == LOCK_FILE:
        what = "a run folder's lock file (it keeps a second process from training the run)"
    elif path.name == STATE_FILE and os.path.lexists(path):
        what = "a sweep folder's state file (every point's options and status)"
    elif sweep and path.name == STOP_FILE:
        what = "a sweep folder's stop file (its points read it to stop)"
    elif logs:
        what = f"a file in a sweep folder's {LOG_DIR} folder (the points' logs)"
    elif sweep and path.name in REPORT_FILES.values() and not sweep_report:
        what = f"a sweep folder's {path.name} (evsim sweep report writes it)"
    if what is not None:
        raise CheckpointError(f"{path}: is {what}, which this would overwrite; {fix}")
