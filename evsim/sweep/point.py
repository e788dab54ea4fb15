"""One sweep point, run on a worker: a plain function of plain data, safe to run twice.

Under the run folder's lock it looks at what the folder holds and does only what is
missing: a finished run (``summary.json``) of the same configuration is taken as it
is, an interrupted one (``checkpoint-latest.npz``) is resumed, anything else is
trained from the start. Whatever goes wrong becomes the point's one-line error, so
one point's failure never stops the others.
"""
from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path

from evsim.config import AUTO
from evsim.errors import ConfigError, EvsimError
from evsim.readers import read_json
from evsim.runfiles import BESIDE_OPTIONS, read_summary, without_evsim_data
from evsim.runlock import run_lock
from evsim.sweep.training import TrainingInterrupted, resume_point, train_point

SUMMARY = "summary.json"
INTERRUPTED = "interrupted"  # a point's status: stopped with a checkpoint to resume from
STOPPED = "stopped"  # a run_point outcome: the sweep was stopped before the point started
CHECKPOINT = "checkpoint-latest.npz"
# config.json fields that may differ between the same run's folders.
NOT_CONFIG = ("out", *BESIDE_OPTIONS)
# Data options that say where files are kept, not what a run computes: the cache ($EVSIM_CACHE).
NOT_DATA_CONFIG = ("cache_dir",)
# One run at a time per worker process: Numba's thread count and parallel kernels are
# process-wide resources, and the run sizes its threads to the machine as if alone.
_one_run = threading.Lock()


def run_point(name: str, config: dict, run_dir: str, log_path: str, stop_file: str | None = None) -> dict:
    """Run (or skip, or resume) the point ``name`` of configuration ``config`` in ``run_dir``.

    ``stop_file``: once a file of that name exists (the sweep's client, stopped, wrote
    it), the run stops before its next batch with a checkpoint, and a point not yet
    started does not start. No signal reaches a task on a worker of a cluster the
    sweep did not start: this is how its Ctrl-C gets there.

    Returns
    -------
    dict
        ``name``, ``status`` ("done", "failed", "interrupted" (stopped with a checkpoint)
        or "stopped" (never started)), ``action`` ("skipped", "resumed" or "trained"),
        ``error`` (one line, or None), ``summary`` (the run's summary.json, or None) and
        ``seconds`` spent here. Never raises for a failed run.
    """
    run_dir, log_path = Path(run_dir), Path(log_path)
    start = time.perf_counter()
    outcome = {"name": name, "status": "failed", "action": None, "error": None, "summary": None}

    def stop_requested() -> bool:
        return stop_file is not None and os.path.lexists(stop_file)

    if stop_requested():
        return {**outcome, "status": STOPPED, "seconds": 0.0}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _one_run, open(log_path, "a", buffering=1) as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {name} -> {run_dir}\n")

        def echo(line: str) -> None:
            log.write(f"{line}\n")

        if stop_requested():  # while it waited for this worker's run before it
            log.write("--- not started: the sweep was stopped\n")
            return {**outcome, "status": STOPPED, "seconds": round(time.perf_counter() - start, 3)}
        try:
            # The client resolved the point's data folder (None: none): a worker's own
            # $EVSIM_DATA would give it other data, unrecorded.
            with run_lock(run_dir), without_evsim_data():
                action = folder_action(run_dir, config)
                outcome["action"] = action
                if action == "skipped":
                    summary = read_summary(run_dir)  # checked as the report checks it, with its fix
                elif action == "resumed":
                    summary = resume_point(run_dir, echo, stop_requested)
                else:
                    summary = train_point(config, run_dir, echo, stop_requested)
            outcome.update(status="done", summary=summary)
        except TrainingInterrupted as exc:
            outcome.update(status=INTERRUPTED, error=one_line(f"{exc} (the sweep was stopped); run the sweep again to "
                                                              "resume it from its checkpoint"))
        except EvsimError as exc:
            outcome["error"] = one_line(str(exc))
        except Exception as exc:  # a bug or a system fault in one point must not stop the others
            log.write(traceback.format_exc())
            outcome["error"] = one_line(f"{type(exc).__name__}: {exc} (traceback in {log_path})")
        log.write(f"--- {outcome['status']}" + (f": {outcome['error']}" if outcome["error"] else "") + "\n")
    outcome["seconds"] = round(time.perf_counter() - start, 3)
    return outcome


def folder_action(run_dir: Path, config: dict) -> str:
    """What a point must do in ``run_dir``: "skipped", "resumed" or "trained".

    Raises
    ------
    ConfigError
        If the folder holds a run (started or finished) of another configuration.
    """
    saved = run_dir / "config.json"
    if saved.exists():
        try:
            theirs = read_json(saved, "run configuration (config.json)", ConfigError)
        except EvsimError as exc:
            raise ConfigError(f"{exc}; move the folder away to run this point again") from None
        ours, theirs = comparable(config), comparable(theirs)
        if ours.get("dev_interval") == AUTO and isinstance(theirs.get("dev_interval"), int):
            theirs["dev_interval"] = AUTO  # training saves "auto" resolved for its data
        changed = _differences(ours, theirs)
        if changed:
            key, there, now = changed[0]
            why = " ($EVSIM_DATA gives data_dir where the sweep file does not)" if key == "data.data_dir" else ""
            raise ConfigError(f"{run_dir} holds a run of another configuration ({key}: {there!r} there, {now!r} "
                              f"now{why}); move it away or use another --out")
    if (run_dir / SUMMARY).exists():
        return "skipped"
    if (run_dir / CHECKPOINT).exists():
        return "resumed"
    return "trained"


def comparable(config: dict) -> dict:
    """``config`` as a run's identity: through JSON, as saved (tuples become lists, paths
    strings), without what may differ between the same run's folders."""
    values = {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k not in NOT_CONFIG}
    if isinstance(values.get("data"), dict):
        values["data"] = {k: v for k, v in values["data"].items() if k not in NOT_DATA_CONFIG}
    return values


def _differences(ours: dict, theirs: dict) -> list[tuple[str, object, object]]:
    """``(option, value in the folder, value now)`` for each option that differs, a
    section's (``data``, ``lif``, ``sdsnn``) named ``section.option``."""
    changed = []
    for key in sorted(set(ours) | set(theirs)):
        now, there = ours.get(key), theirs.get(key)
        if isinstance(now, dict) and isinstance(there, dict):
            changed += [(f"{key}.{k}", there.get(k), now.get(k)) for k in sorted(set(now) | set(there))
                        if now.get(k) != there.get(k)]
        elif now != there:
            changed.append((key, there, now))
    return changed


def one_line(text: str) -> str:
    return " ".join(text.split())
