"""The report of a sweep folder: ``results.csv``, ``report.md`` and ``report.png``.

``results.csv`` has one row per point: its axis values and options, its data source,
final and best test accuracy, compression by both measures (the authors': zero or
absent weights over all weights; and synapse sparsity, 1 - synapses / dense
synapses), neurons pruned, SOPs and energy per sample, wall time, status and error.
``report.md`` groups the points by their values on every axis but ``seed`` and gives
mean ± std (sample standard deviation) over the seeds; ``report.png`` plots test
accuracy against compression for each structure, with those error bars.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Callable

from evsim.errors import CheckpointError, ConfigError
from evsim.files import clean_stale_temporaries, write_bytes_atomic, written_together
from evsim.plots import MARKERS, _pyplot, save_figure
from evsim.readers import read_json
from evsim.runfiles import REPORT_FILES, STATE_FILE, read_summary
from evsim.runlock import is_locked
from evsim.sweep.execute import read_state
from evsim.sweep.point import CHECKPOINT, INTERRUPTED, folder_action
from evsim.sweep.training import config_dict, resolve

SEED = "seed"
RUNNING = "running"  # the status of a point a process is training while the report is made
UNREADABLE = "unreadable"  # the status of a point whose summary.json is damaged
LOST = "lost"  # the status of a point recorded done whose folder no longer holds its finished run
RESULT_COLUMNS = ("data_source", "test_acc", "test_acc_at_best_val", "best_test_acc", "compression", "synapse_sparsity",
                  "neurons_pruned", "sops_per_sample", "energy_uj_per_sample", "wall_s")
# summary.json fields the report reads as numbers.
NUMBERS = tuple(c for c in RESULT_COLUMNS if c != "data_source") + ("synapses", "dense_synapses")
# Columns of report.md: (results.csv column, heading, scale, decimals).
TABLE = (("test_acc", "test acc %", 100, 2), ("test_acc_at_best_val", "test acc at best val %", 100, 2),
         ("best_test_acc", "best test acc %", 100, 2),
         ("compression", "compression %", 100, 1), ("synapse_sparsity", "synapse sparsity %", 100, 1),
         ("neurons_pruned", "neurons pruned %", 100, 1), ("sops_per_sample", "SOPs / sample", 1, 0),
         ("energy_uj_per_sample", "energy µJ / sample", 1, 3), ("wall_s", "wall s", 1, 1))


def report_paths(out: Path) -> dict[str, Path]:
    """The report's files in the sweep folder ``out``."""
    return {kind: Path(out) / name for kind, name in REPORT_FILES.items()}


def write_report(out: Path, check_paths: Callable[..., None] = lambda *paths, **options: None
                 ) -> tuple[dict[str, Path], list]:
    """Write the three report files into the sweep folder ``out``; their paths, and the
    rows of the points whose summary.json is damaged (reported as ``unreadable``, with
    the error and its fix, beside the others).

    ``check_paths(*paths, sweep_report=True)`` (as :func:`evsim.cli.runs.check_outputs`
    takes them) is called once everything is read, before anything is written: it may
    refuse them, so that either every file is written or none. What killed processes
    left in ``out`` (their temporaries) is removed before writing.

    Raises
    ------
    ConfigError
        If ``out`` is no sweep folder, or its sweep.json is not of the shape the sweep
        writes.
    """
    out = Path(out)
    state = read_state(out)
    rows = results(out, state)
    groups = group_rows(rows, [a for a in state.get("axes", []) if a != SEED])
    paths = report_paths(out)
    check_paths(*paths.values(), sweep_report=True)
    clean_stale_temporaries(out)
    with written_together():  # the figure and the tables all new or all old
        plot_report(groups, paths["png"])
        write_bytes_atomic(paths["csv"], results_csv(rows).encode())
        write_bytes_atomic(paths["md"], report_markdown(groups, rows, out).encode())
    return paths, [row for row in rows if row["status"] == UNREADABLE]


def results(out: Path, state: dict) -> list[dict]:
    """One row per point: axes, options, results read from its run folder, status and error."""
    rows = []
    for point in state["points"]:
        try:
            summary, damaged = read_summary(out / point["name"], NUMBERS) or {}, ""
        except CheckpointError as exc:  # one damaged point: the others are still reported
            summary, damaged = {}, (f"{exc}; or delete it and run the sweep file again: the point then "
                                    "resumes from its checkpoint and writes it anew")
        row = {"point": point["name"], **{f"axis.{k}": v for k, v in point["axes"].items()},
               **{f"option.{k}": v for k, v in point["options"].items()}}
        row["structure"] = (summary.get("structure") or {}).get("name")
        for column in RESULT_COLUMNS:
            row[column] = summary.get(column)
        if summary.get("synapses") is not None and summary.get("dense_synapses"):
            row["synapse_sparsity"] = round(1 - summary["synapses"] / summary["dense_synapses"], 6)
        row["status"] = UNREADABLE if damaged else "done" if summary and _holds_its_run(out, point) \
            else _unfinished_status(out, point)
        row["data_source"] = row["data_source"] or _started_on(out / point["name"])
        row["error"] = damaged or point.get("error") or ""
        if row["status"] == LOST:
            row["error"] = (f"{out / point['name']} holds no finished run of this point (moved, deleted or replaced "
                            "since it finished); restore it, or move it away and run the sweep file again")
            row.update(dict.fromkeys(("structure", *RESULT_COLUMNS)))  # another run's results are not this point's
        rows.append(row)
    return rows


def _unfinished_status(out: Path, point: dict) -> str:
    """``running`` for a point a process is training now (its folder is locked);
    ``interrupted`` for one stopped with a checkpoint to resume from (sweep.json says
    ``pending`` or ``submitted``: the sweep stopped before recording it); ``pending`` for one
    sent to a worker that never started it; else its status."""
    if is_locked(out / point["name"]):
        return RUNNING
    if point["status"] in ("pending", "submitted") and (out / point["name"] / CHECKPOINT).exists():
        return INTERRUPTED
    if point["status"] == "done":  # sweep.json says so, but its folder holds no finished run of it (any more)
        return LOST
    if point["status"] == "submitted":  # sent to a worker, never started (the sweep stopped first)
        return "pending"
    return point["status"]


def _started_on(run_dir: Path) -> str | None:
    """The data source a started run's config.json records (None if it has none to read)."""
    try:
        config = read_json(run_dir / "config.json", "run configuration (config.json)", ConfigError)
    except ConfigError:
        return None  # not started, or damaged: the column stays empty, the point's status says the rest
    source = config.get("data_source") if isinstance(config, dict) else None
    return source if isinstance(source, str) else None


def _holds_its_run(out: Path, point: dict) -> bool:
    """Whether the point's folder holds a finished run of its configuration, the test
    by which a sweep skips it: whatever sweep.json says (another process may have
    finished it), such a point is done."""
    where = f"{out / STATE_FILE}: point {point['name']}"
    config = config_dict(resolve(point["options"], out / point["name"], where))
    if "data_dir" in point and isinstance(point["data_dir"], (str, type(None))):  # as the sweep resolved it
        config["data"]["data_dir"] = point["data_dir"]
    try:
        return folder_action(out / point["name"], config) == "skipped"
    except ConfigError:  # a run of another configuration, or an unreadable config.json
        return False


def results_csv(rows: list[dict]) -> str:
    columns = []
    for prefix in ("point", "axis.", "option."):  # then the results, in their order
        for row in rows:
            columns += [c for c in row if c.startswith(prefix) and c not in columns]
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue()


def group_rows(rows: list[dict], axes: list[str]) -> list[dict]:
    """The rows grouped by their values on ``axes`` (plus a tied point's own keys, and
    ``data``, the data source, where finished points differ in it):
    ``{"key": {axis: value}, "rows": [...], "mean": {...}, "std": {...}, "n": finished rows}``."""
    groups: dict[str, dict] = {}
    # Seeds on different data (emulated and real) are never averaged together.
    mixed = len({r["data_source"] for r in rows if r["status"] == "done" and r.get("data_source")}) > 1
    for row in rows:
        key = {k[5:]: v for k, v in row.items() if k.startswith("axis.") and k[5:] != SEED}
        key = {**{a: key[a] for a in axes if a in key}, **{k: v for k, v in key.items() if k not in axes}}
        if mixed:
            key["data"] = row.get("data_source") or "—"
        groups.setdefault(json.dumps(key), {"key": key, "rows": []})["rows"].append(row)
    for group in groups.values():
        done = [r for r in group["rows"] if r["status"] == "done"]
        group["n"] = len(done)
        group["mean"], group["std"] = {}, {}
        for column, *_ in TABLE:
            values = [r[column] for r in done if isinstance(r.get(column), (int, float))]
            group["mean"][column] = sum(values) / len(values) if values else None
            group["std"][column] = (math.sqrt(sum((v - group["mean"][column]) ** 2 for v in values) / (len(values) - 1))
                                    if len(values) > 1 else None)
    return list(groups.values())


def report_markdown(groups: list[dict], rows: list[dict], out: Path) -> str:
    axes = list(dict.fromkeys(a for g in groups for a in g["key"]))
    sources = sorted({str(r["data_source"]) for r in rows if r.get("data_source")})
    lines = [f"# Sweep report: {out.name}", "",
             f"{len(rows)} points, {sum(r['status'] == 'done' for r in rows)} finished; data: "
             f"{', '.join(sources) or 'none yet'}. Mean ± std over seeds (n: finished seeds).", ""]
    header = axes + ["n"] + [heading for _, heading, _, _ in TABLE]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [_cell(g["key"].get(a, "")) for a in axes] + [f"{g['n']}/{len(g['rows'])}"]
        for column, _, scale, decimals in TABLE:
            mean, std = g["mean"][column], g["std"][column]
            if mean is None:
                cells.append("—")
            else:
                spread = "" if std is None else f" ± {std * scale:.{decimals}f}"
                cells.append(f"{mean * scale:.{decimals}f}{spread}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] != "done"]
    resumes = " (resumes from its last checkpoint when the sweep runs again)"
    if failed:
        lines += ["", "## Points not finished", ""]
        lines += [f"- `{r['point']}`: {r['status']}" + (f": {r['error']}" if r["error"] else "")
                  + (resumes if r["status"] == INTERRUPTED else "")
                  for r in failed]
    return "\n".join(lines) + "\n"


def _data_of(row: dict) -> str:
    """``mnist, mnist-5k``: the dataset a point trained on and its data source."""
    return ", ".join(str(v) for v in (row.get("option.dataset"), row.get("data_source")) if v)


def _spread(members: list[dict], column: str) -> list[float] | None:
    """Error bars of ``column`` in %, or None where no group has a spread (one seed each):
    bars of length 0 are drawn as a cross through the marker."""
    spread = [100 * (g["std"][column] or 0) for g in members]
    return spread if any(spread) else None


def plot_report(groups: list[dict], path: Path) -> None:
    """Test accuracy against compression, one series per structure (and per dataset and
    data source, where the points differ in them: never one line through emulated and
    real results), error bars over seeds; each point named by its other axes' values
    (``lr=0.001``), where there are any, and no line between points: a line through
    points of other learning rates read as one error bar. The title names the data."""
    plt = _pyplot()
    done = [r for g in groups for r in g["rows"] if r["status"] == "done"]
    several = len({_data_of(r) for r in done}) > 1
    series: dict[str, list[dict]] = {}
    for g in groups:
        if g["mean"]["test_acc"] is not None and g["mean"]["compression"] is not None:
            row = next(r for r in g["rows"] if r["status"] == "done")
            name = str(row["structure"]) + (f" ({_data_of(row)})" if several else "")
            series.setdefault(name, []).append(g)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, (structure, members) in enumerate(sorted(series.items())):
        members.sort(key=lambda g: g["mean"]["compression"])
        # hollow, a shape each: series with the same results stay visible one inside another
        ax.errorbar([100 * g["mean"]["compression"] for g in members], [100 * g["mean"]["test_acc"] for g in members],
                    xerr=_spread(members, "compression"), yerr=_spread(members, "test_acc"),
                    marker=MARKERS[k % len(MARKERS)], ms=max(10 - 2 * k, 4), mfc="none", mew=1.5,
                    capsize=3, linestyle="none", label=structure)
        for g in members:
            other = ", ".join(f"{axis}={_cell(value)}" for axis, value in g["key"].items()
                              if axis not in ("structure", "data"))
            if other:
                ax.annotate(other, (100 * g["mean"]["compression"], 100 * g["mean"]["test_acc"]),
                            textcoords="offset points", xytext=(5, 4), fontsize=7)
    if series and all(g["mean"]["compression"] == 0 for members in series.values() for g in members):
        ax.set_xlim(-1, 10)  # compression is never negative: an all-zero axis is not drawn around 0
    ax.set_xlabel("compression (% of weights zero or absent)")
    ax.set_ylabel("test accuracy (%)")
    sources = sorted({str(r["data_source"]) for r in done if r.get("data_source")})
    ax.set_title("mean ± std over seeds" + (f" (data: {', '.join(sources)})" if sources else ""))
    if series:
        ax.legend(title="structure (dataset, data)" if several else "structure")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _cell(value) -> str:
    """An axis value as a Markdown table cell (a ``|`` in it escaped, or it would split the cell)."""
    text = "-".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|")


