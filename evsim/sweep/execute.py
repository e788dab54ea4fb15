"""Running a sweep's points on Dask, and the sweep folder's state file.

The client submits every point as one task of :func:`evsim.sweep.point.run_point`;
a tied point is submitted when the point it is tied to has finished, with the taken
option filled in and checked here. The state file ``sweep.json`` in the sweep folder
records every point's options, status and one-line error; it is rewritten after each
point, so the report reads it whatever happened to the client.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from evsim.errors import ConfigError, EvsimError
from evsim.files import write_bytes_atomic, write_json_atomic
from evsim.readers import read_json, read_small_file, reason
from evsim.runfiles import LOG_DIR, STATE_FILE, STOP_FILE
from evsim.runlock import is_locked
from evsim.sweep.plan import LOG_SUFFIX, Point, Sweep
from evsim.sweep.point import STOPPED, one_line, run_point
from evsim.sweep.worker import source_stamp
from evsim.sweep.training import TrainConfig, config_dict, point_config

STOP_WAIT_S = 300  # how long a stopped sweep waits for its running points to save and stop
STOP_QUIET_S = 5  # ... and how long before it says it waits
METRICS = "metrics.jsonl"
POLL_S = 1.0
CONNECT_TIMEOUT = "30s"  # Dask retries a refused connection until then


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_workers(configs: dict[str, TrainConfig], workers: int | None) -> tuple[int, int]:
    """``(worker processes, Numba threads per run)`` of the embedded cluster: workers x
    threads never exceed this machine's cores (a run with ``threads = 0`` takes them all).

    Raises
    ------
    ConfigError
        If ``workers`` asks for more than the cores allow.
    """
    cores = machine_cores()
    threads = max((c.threads or cores for c in configs.values()), default=1)
    if workers is None:
        return max(1, cores // threads), threads
    if workers * threads > cores:
        raise ConfigError(f"--workers {workers} x {threads} threads per run exceeds this machine's {cores} cores; "
                          f"use at most {max(1, cores // threads)} workers or fewer threads (threads = N)")
    return workers, threads


@contextlib.contextmanager
def dask_client(scheduler: str | None, scheduler_file: Path | None, workers: int):
    """A ``distributed.Client``: of the cluster at ``scheduler`` (an address) or described
    by ``scheduler_file``, else of an embedded LocalCluster of ``workers`` processes.

    Raises
    ------
    ConfigError
        If the scheduler file is missing or no scheduler file, or the scheduler cannot
        be reached within ``CONNECT_TIMEOUT``.
    """
    from distributed import Client

    if scheduler is None and scheduler_file is None:
        with local_cluster(workers) as client:
            yield client
        return
    address = scheduler if scheduler is not None else scheduler_address(scheduler_file)
    where = address if scheduler is not None else f"{address} (from {scheduler_file})"
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {where}: {one_line(str(exc))}") from None
    except (TypeError, ImportError) as exc:  # tls:// without Dask's TLS configuration, ucx:// without ucx-py
        raise ConfigError(f"cannot connect to the Dask scheduler at {where}: {one_line(str(exc))}; configure Dask's "
                          "security (distributed.comm.tls) for tls://, install ucx-py for ucx://, or give a tcp:// "
                          "address") from None
    try:
        check_workers(client, where)
    except BaseException:
        client.close()
        raise
    previous = None
    if threading.current_thread() is threading.main_thread():  # only it may set handlers

        def stop(signum, frame):
            """SIGTERM (a scheduler's or a container's stop) as Ctrl-C."""
            raise SweepTerminated()

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        with client:
            yield client
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_workers(client, where: str) -> None:
    """Refuse a cluster whose workers (those connected now) cannot import evsim, or import
    another evsim than this one (:func:`~evsim.sweep.worker.source_stamp`): a worker that
    cannot load a point's task dies, and the sweep would wait for it forever.

    Raises
    ------
    ConfigError
        Naming the worker and the fix.
    """
    here = source_stamp()
    for worker, stamp in client.run(source_stamp, on_error="return").items():
        if isinstance(stamp, BaseException):
            raise ConfigError(f"the Dask worker {worker} of {where} cannot run evsim ({one_line(repr(stamp))[:160]}); "
                              "install this evsim where the workers run (pip install -e, or PYTHONPATH)")
        if stamp != here:
            raise ConfigError(f"the Dask worker {worker} of {where} runs another evsim (source stamp {stamp[:12]}, "
                              f"here {here[:12]}); install the same evsim on every worker")


@contextlib.contextmanager
def local_cluster(workers: int):
    """A client of an embedded LocalCluster of ``workers`` processes, shut down quietly
    on Ctrl-C: the workers ignore it (see :mod:`evsim.sweep.worker`), and distributed's
    logs of the tasks it cancels and a second Ctrl-C are silenced while it closes.

    Ctrl-C is ignored while the cluster starts (a few seconds): worker processes inherit
    an ignored signal through their exec, so a Ctrl-C then cannot reach one before its
    preload ignores it, nor stop the start half way (which left processes to Dask's exit
    handler and its traceback). Pressed again once the cluster is up, it stops the sweep.
    """
    from distributed import Client, LocalCluster

    logs = logging.getLogger("distributed")
    level, handler, term_handler = logs.level, None, None
    terminated, up = [], []

    def stop(signum, frame):
        """SIGTERM (a scheduler's or a container's stop) as Ctrl-C, once the cluster is up
        (whether or not Ctrl-C is ignored: a script's background job ignores it)."""
        terminated.append(signum)
        if up:
            raise SweepTerminated()

    try:
        with contextlib.ExitStack() as started:
            if threading.current_thread() is threading.main_thread():  # only it may set handlers
                handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
                term_handler = signal.signal(signal.SIGTERM, stop)
            # memory_limit=0: each run checks its own memory; Dask's per-worker share would
            # kill a run that the machine holds. One thread per worker: one run per process.
            # No dashboard; the scheduler's HTTP server (which runs even so) on any free port,
            # not 8787, which a second sweep would find taken and warn about.
            client = started.enter_context(Client(started.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0, dashboard_address=None,
                scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR,
                preload=["evsim.sweep.worker"]))))
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
                handler = None
            up.append(True)
            try:
                if terminated:  # while the cluster started
                    raise SweepTerminated()
                yield client
            except KeyboardInterrupt:
                logs.setLevel(logging.CRITICAL + 1)
                handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
                raise
    finally:
        logs.setLevel(level)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        if term_handler is not None:
            signal.signal(signal.SIGTERM, term_handler)


class SchedulerLost(ConfigError):
    """The Dask scheduler went away during a sweep."""


class SweepTerminated(KeyboardInterrupt):
    """SIGTERM stopped the sweep: handled as Ctrl-C, with the shell's exit code for it."""

    signum = signal.SIGTERM


def scheduler_address(path: Path) -> str:
    """The scheduler's address in a Dask scheduler file (``{"address": "tcp://...", ...}``).

    Read here, not by ``Client(scheduler_file=...)``, which waits forever for a missing file.

    Raises
    ------
    ConfigError
        If ``path`` is missing or holds no scheduler address.
    """
    fix = "give the file `dask scheduler --scheduler-file` wrote"
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: no such file; start the cluster first, then {fix}")
    try:
        value = json.loads(read_small_file(path, "Dask scheduler file", ConfigError).decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"{path} is not a Dask scheduler file ({reason(exc)}); {fix}") from None
    address = value.get("address") if isinstance(value, dict) else None
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"{path} is not a Dask scheduler file (no \"address\" in it); {fix}")
    return address


def run_sweep(sweep: Sweep, configs: dict[str, TrainConfig], out: Path, client,
              progress: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """Run every point of ``sweep`` on ``client``; the outcomes (see ``run_point``), in the sweep's order."""
    from distributed import wait
    from distributed.client import FuturesCancelledError
    from distributed.comm.core import CommClosedError
    from tqdm import tqdm

    out = Path(out).absolute()
    # A sweep run again keeps each point's record (its status, a tied point's taken options)
    # until it has a new one: stopped early, the record still says what the folders hold.
    previous = {p["name"]: p for p in read_state(out)["points"]} if os.path.lexists(out / STATE_FILE) else {}
    by_name = {p.name: p for p in sweep.points}
    state = {name: {**_initial_state(p), **previous.get(name, {})} for name, p in by_name.items()}
    children: dict[str, list[Point]] = {}
    for p in sweep.points:
        if p.tied_to is not None:
            children.setdefault(p.tied_to, []).append(p)
    pending = {}  # future -> point name

    def submit(p: Point, config: TrainConfig) -> None:
        args = (p.name, config_dict(config), str(out / p.name), str(out / LOG_DIR / f"{p.name}{LOG_SUFFIX}"),
                str(stop_file))
        state[p.name]["status"] = "submitted"
        # the data folder as resolved here (relative to this folder, or $EVSIM_DATA), for the report
        state[p.name]["data_dir"] = args[1]["data"]["data_dir"]
        pending[client.submit(run_point, *args, key=f"evsim-sweep-{p.name}-{os.getpid()}-{time.time_ns()}",
                              pure=False)] = p.name

    def record(outcome: dict) -> None:
        name = outcome["name"]
        if outcome["status"] == STOPPED:  # never started: the last run's record stands
            state[name] = {**_initial_state(by_name[name]), **previous.get(name, {})}
            return
        state[name].update({k: outcome.get(k) for k in ("status", "action", "error", "seconds")})
        state[name]["data_source"] = (outcome.get("summary") or {}).get("data_source")  # the terminal says it

    def finish(outcome: dict) -> None:
        name = outcome["name"]
        record(outcome)
        bar.update(1)
        if outcome["status"] == "failed":
            tqdm.write(f"failed: {name}: {outcome['error']}")
        for child in children.get(name, []):
            taken = _taken(child, outcome)
            if isinstance(taken, str):
                finish({"name": child.name, "status": "failed", "error": taken})
                continue
            state[child.name]["options"] = {**child.options, **taken}
            try:
                where = f"{sweep.path}: point {child.name}"
                submit(child, point_config(state[child.name]["options"], out / child.name, where))
            except ConfigError as exc:
                error = one_line(f"{exc}; {_provenance(child, taken)}")
                finish({"name": child.name, "status": "failed", "error": error})
        _save(out, sweep, state)

    def outcome_of(future) -> dict:
        name = pending.pop(future)
        try:
            return future.result()
        except Exception as exc:  # the worker died (KilledWorker), or the task was cancelled
            return {"name": name, "status": "failed", "error": one_line(f"{type(exc).__name__}: {exc}")}

    out.mkdir(parents=True, exist_ok=True)
    stop_file = out / STOP_FILE
    stop_file.unlink(missing_ok=True)  # a stopped sweep's: this run's points must start
    _save(out, sweep, state)
    with tqdm(total=len(sweep.points), unit="run", desc="sweep", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for p in sweep.points:
                if p.tied_to is None:
                    submit(p, configs[p.name])
            _save(out, sweep, state)  # submitted, not pending, while the first points run
            while pending:
                try:
                    wait(list(pending), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass
                except (FuturesCancelledError, CommClosedError) as exc:  # the scheduler is gone
                    raise SchedulerLost(f"lost the Dask scheduler ({one_line(str(exc))[:120]}); points that were "
                                        "running go on on their workers until they end; restart the cluster and run "
                                        f"the same command again (finished points are kept in {out})") from None
                for future in [f for f in pending if f.done()]:
                    finish(outcome_of(future))
                bar.set_postfix_str(live_status(client, pending, out, configs), refresh=True)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (SweepTerminated)
            bar.close()
            exc.still_running = stop_points(client, pending, out, stop_file, outcome_of, record, echo)
            _save(out, sweep, state)
            raise
    return [state[p.name] for p in sweep.points]


def stop_points(client, pending: dict, out: Path, stop_file: Path, outcome_of: Callable, record: Callable,
                echo: Callable[[str], None]) -> list[str]:
    """Stop a sweep's points where they stand: write ``stop_file``, which a running point
    polls before its batches (it saves a checkpoint and stops) and a point reads before it
    starts; cancel the points not running (their folder unlocked: queued, perhaps behind
    another sweep's runs), which keep the record the last run made; wait up to
    ``STOP_WAIT_S`` for the running ones and ``record`` their outcomes. A second Ctrl-C ends
    the wait. The names of the points still running at the end."""
    from distributed import wait

    write_bytes_atomic(stop_file, b"evsim sweep: stopped; the next run of the sweep removes this file\n")
    queued = [f for f, name in pending.items() if not f.done() and not is_locked(out / name)]
    with contextlib.suppress(Exception):  # the scheduler may be gone: the stop file still stops them
        client.cancel(queued)
    for future in queued:  # a point that starts even so stops before its first batch
        record({"name": pending.pop(future), "status": STOPPED})
    try:
        for timeout in (STOP_QUIET_S, STOP_WAIT_S - STOP_QUIET_S):  # said only if it takes a while
            with contextlib.suppress(TimeoutError):
                wait(list(pending), timeout=timeout)
            if all(f.done() for f in pending) or timeout != STOP_QUIET_S:
                break
            echo(f"stopping: {len(pending)} running points save a checkpoint after their current batch (up to "
                 f"{STOP_WAIT_S} s; Ctrl-C again to stop waiting)")
    except KeyboardInterrupt:
        pass
    except Exception:  # the scheduler went away meanwhile: what finished is recorded below
        pass
    for future in [f for f in pending if f.done()]:
        record(outcome_of(future))
    with contextlib.suppress(Exception):
        client.cancel(list(pending))
    return sorted(name for name in pending.values() if is_locked(out / name))


def live_status(client, pending: dict, out: Path, configs: dict[str, TrainConfig]) -> str:
    """``name epoch e/E`` of each point a worker is running now (from its metrics.jsonl)."""
    try:
        running = {key for keys in client.processing().values() for key in keys}
    except (OSError, EvsimError, TimeoutError):
        return ""
    parts = []
    for future, name in pending.items():
        if future.key in running and (out / name).exists():  # assigned to a worker, and started there
            total = configs[name].epochs if name in configs else None
            done = _epochs_done(out / name / METRICS)
            now = done + 1 if total is None else min(done + 1, total)
            parts.append(f"{name} epoch {now}" + (f"/{total}" if total else ""))
    return "; ".join(parts)


def _epochs_done(path: Path) -> int:
    try:
        return path.read_text().count('"type": "epoch"')
    except OSError:
        return 0


def _taken(child: Point, parent: dict) -> dict | str:
    """The options ``child`` takes from its parent's outcome, or the reason it cannot."""
    if parent["status"] != "done":
        return f"tied to {parent['name']}, which failed"
    summary = parent.get("summary") or {}
    taken = {}
    for option, source in child.take.items():
        if not isinstance(summary.get(source), (int, float)):
            return f"tied to {parent['name']}, whose summary.json has no {source}"
        taken[option] = summary[source]
    return taken


def _provenance(child: Point, taken: dict) -> str:
    """Where a tied point's taken options came from, and the fix, for its error."""
    values = ", ".join(f"{option} = {taken[option]!r} is its {source}" for option, source in child.take.items())
    return (f"taken from point {child.tied_to} ({values}): change that point, or give "
            f"{', '.join(child.take)} a value instead of taking it")


def _initial_state(p: Point) -> dict:
    return {"name": p.name, "axes": p.axes, "options": p.options, "tied_to": p.tied_to, "take": p.take,
            "status": "pending", "action": None, "error": None, "seconds": None}


def _save(out: Path, sweep: Sweep, state: dict) -> None:
    write_json_atomic(out / STATE_FILE, {"sweep_file": str(Path(sweep.path).absolute()), "axes": list(sweep.axes),
                                         "points": [state[p.name] for p in sweep.points]})


def read_state(out: Path) -> dict:
    """The sweep folder's state file, checked whole.

    Raises
    ------
    ConfigError
        If ``out`` holds no sweep state, or one not of the shape ``_save`` writes.
    """
    path = Path(out) / STATE_FILE
    if not os.path.lexists(path):
        raise ConfigError(f"{out} is no sweep folder (no {STATE_FILE}); run evsim sweep SWEEP.toml --out {out}")
    state = read_json(path, "sweep state", ConfigError)
    problem = _state_problem(state)
    if problem:
        raise ConfigError(f"{path}: not a sweep state file ({problem}); move it away and run the sweep file again "
                          "(finished points are kept and skipped)")
    return state


def check_same_sweep(sweep: Sweep, out: Path) -> None:
    """Refuse a sweep folder whose state records other points: running into it would
    replace that record, and its report would lose the points not in ``sweep``.

    Raises
    ------
    ConfigError
        Naming the folder, the file that made it, and the fix.
    """
    if not os.path.lexists(Path(out) / STATE_FILE):
        return
    state = read_state(out)
    if _plan(state["points"]) != _plan([_initial_state(p) for p in sweep.points]):
        made_by = state.get("sweep_file") or "another sweep file"
        if Path(made_by).resolve() == Path(sweep.path).resolve():  # the same file, edited since
            raise ConfigError(f"{out} holds the sweep {sweep.path} made before it was edited: its points differ now "
                              "(a finished point's results would not be the new options'); give another --out for the "
                              "edited sweep, or restore the file to continue that one")
        raise ConfigError(f"{out} holds the sweep of {made_by}, with other points than {sweep.path}; give another "
                          f"--out, or run {made_by} to continue that sweep")


def _plan(points: list[dict]) -> list:
    """What the sweep file says of each point (a tied point's taken options left out), as JSON keeps it."""
    plan = [{"name": p["name"], "axes": p["axes"], "tied_to": p["tied_to"], "take": p["take"],
             "options": {k: v for k, v in p["options"].items() if k not in p["take"]}} for p in points]
    return json.loads(json.dumps(plan))


# The fields of a point in sweep.json (see _initial_state) and the types they may hold.
POINT_FIELDS = {"name": str, "axes": dict, "options": dict, "tied_to": (str, type(None)), "take": dict,
                "status": str, "action": (str, type(None)), "error": (str, type(None)),
                "seconds": (int, float, type(None))}


def _state_problem(state) -> str | None:
    """What makes ``state`` no sweep state (None if nothing)."""
    if not isinstance(state, dict) or not isinstance(state.get("points"), list):
        return "no list of points"
    if not isinstance(state.get("axes", []), list) or not all(isinstance(a, str) for a in state.get("axes", [])):
        return "axes is not a list of names"
    names = set()
    for number, point in enumerate(state["points"], 1):
        if not isinstance(point, dict):
            return f"point #{number} is not a table"
        for key, kinds in POINT_FIELDS.items():
            if key not in point:
                return f"point #{number} has no {key}"
            if not isinstance(point[key], kinds):
                return f"point #{number} {key} is {type(point[key]).__name__}"
        name = point["name"]
        if name in (".", "..") or Path(name).name != name or name in names:  # a folder of the sweep's own, once
            return f"point #{number} name {name!r} is no folder name of its own"
        names.add(name)
    return None
