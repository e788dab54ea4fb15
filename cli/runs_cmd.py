"""``evsim runs list|compare``: run folders as a collection.

A run folder is one that holds ``config.json`` or ``metrics.jsonl`` (what ``evsim
train`` writes first). ``list`` prints one line per run found under a folder;
``compare`` prints a table of several runs (the options in which they differ and
their results) and draws their curves on common axes. Both export CSV for spreadsheets.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import click
import numpy as np

from evsim.checkpoint import NETWORK_FILE, load_network
from evsim.cli.options import NonEmptyPath
from evsim.cli.runs import check_outputs
from evsim.config import OPTION_NAME_BY_TARGET, option_read
from evsim.errors import CheckpointError, ConfigError, EvsimError
from evsim.files import write_bytes_atomic, written_together
from evsim.plots import MARKERS, _epoch_axis, _pyplot, figure_format, save_figure
from evsim.runfiles import BESIDE_OPTIONS, read_metrics, read_run_config, read_summary

# What does not tell runs apart in a comparison: the run folder, the data paths (the
# data section's other options are compared, see _flat_options), and what training
# writes beside the options.
NOT_COMPARED = {"out", "data", *BESIDE_OPTIONS}
# Searching for runs goes this deep below the folder given (runs/<group>/<sweep>/<run> is
# common); a limit, so that a listing of a home folder does not walk every dataset in it.
MAX_DEPTH = 5


def _sizes(run_dir: Path) -> list[int] | None:
    """The layer sizes of the run's ``network.npz``, or None when it has none that reads
    (a listing shows what it can of every folder)."""
    try:
        return load_network(run_dir / NETWORK_FILE).sizes
    except EvsimError:
        return None


def read_run(run_dir: Path) -> dict:
    """What ``runs list`` and ``runs compare`` show of one run folder, as a flat dict.

    Raises
    ------
    EvsimError
        If its ``config.json``, ``metrics.jsonl`` or ``summary.json`` is damaged.
    """
    config = read_run_config(run_dir) or {}
    summary = read_summary(run_dir)
    epochs = [row for row in read_metrics(run_dir) if row["type"] == "epoch"]
    last = epochs[-1] if epochs else {}
    hidden = config.get("hidden", [])
    if config.get("arch"):  # a network in the paper's notation (--arch): as given
        arch = str(config["arch"])
    elif config.get("network"):  # as built, written when the run started
        arch = str(config["network"])
    else:
        sizes = _sizes(run_dir)
        arch = "-".join(str(s) for s in sizes) if sizes else "?-" + "-".join(str(h) for h in hidden) + "-?"
    total = config.get("epochs")
    finished = summary is not None and len(epochs) == total
    stamp = (run_dir / "config.json") if (run_dir / "config.json").exists() else run_dir
    with_val = [row for row in epochs if "val_acc" in row]
    at_best = max(with_val, key=lambda row: row["val_acc"]) if with_val else None
    return {
        "run": str(run_dir),
        "dataset": config.get("dataset", "?"),
        "data_source": config.get("data_source", (summary or {}).get("data_source", "?")),
        "arch": arch,
        "structure": config.get("structure", "?"),
        "epochs": len(epochs),
        "epochs_planned": total,
        "status": "done" if finished else ("running or stopped" if epochs else "no epoch yet"),
        "test_acc": last.get("test_acc"),
        "val_acc_best": at_best["val_acc"] if at_best else None,
        "test_acc_at_best_val": at_best["test_acc"] if at_best else None,
        "best_test_acc": max((row["test_acc"] for row in epochs), default=None),
        "compression": last.get("compression"),
        "neurons_pruned": last.get("neurons_pruned"),
        # A finished run's whole time, as summary.json (and a sweep's results.csv) gives it.
        "wall_s": summary.get("wall_s", last.get("wall_s")) if finished else last.get("wall_s"),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp.stat().st_mtime)),
        "problem": None,
        "config": config,
        "metrics": epochs,
    }


def _unreadable(run_dir: Path, problem: str) -> dict:
    """A run shown as unreadable, for ``problem``."""
    return {**dict.fromkeys(LIST_CSV), "run": str(run_dir), "status": "unreadable", "problem": problem,
            "config": {}, "metrics": []}


def read_or_mark(run_dir: Path) -> dict:
    """:func:`read_run`, or for a run with a damaged file, one marked unreadable with the
    reason: one bad run among many must not hide the others."""
    try:
        return read_run(run_dir)
    except EvsimError as exc:
        return _unreadable(run_dir, str(exc))


def _report_unreadable(found: list[dict]) -> None:
    for run in found:
        if run["problem"]:
            click.echo(f"unreadable: {run['problem']}")


def find_runs(folder: Path) -> tuple[list[Path], list[Path], dict[Path, str]]:
    """Run folders at or below ``folder`` (at most :data:`MAX_DEPTH` levels), sorted by
    name, the folders at that depth whose subfolders were not searched, and the folders
    that could not be read (among the first; by path, the problem and its fix).

    A folder reached twice (through a link to it) is searched and listed once, under the
    first name met; a link to a folder above is not followed (it would list everything
    again, down to the depth limit).

    Raises
    ------
    ConfigError
        If ``folder`` does not exist or is not a folder.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give the folder that holds your runs (default: runs)")
    found, unsearched, unreadable = [], [], {}
    seen = set()  # the real paths of the folders searched

    def walk(path: Path, depth: int) -> None:
        real = os.path.realpath(path)
        # a folder met before, or one above this path (its real path holds all the folders above)
        if real in seen or (depth and os.path.realpath(path.parent).startswith(real.rstrip(os.sep) + os.sep)):
            return
        seen.add(real)
        try:
            if (path / "config.json").is_file() or (path / "metrics.jsonl").is_file():
                found.append(path)
                return
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:  # one folder of another user's must not hide the other runs
            found.append(path)
            unreadable[path] = f"{path}: cannot read the folder ({exc.strerror or exc}); fix its permissions"
            return
        if depth == MAX_DEPTH:
            if children:
                unsearched.append(path)
            return
        for child in children:
            walk(child, depth + 1)

    walk(folder, 0)
    return found, unsearched, unreadable


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


TABLE = (("run", "run"), ("dataset", "dataset"), ("data_source", "data"), ("arch", "arch"),
         ("structure", "structure"), ("epochs", "epochs"), ("test_acc", "test %"),
         ("test_acc_at_best_val", "test@val %"), ("compression", "compr. %"), ("date", "date"))


def _cell(run: dict, key: str) -> str:
    if key == "run":  # a name with a newline or tab must not break the table's rows and columns
        return run["run"] if run["run"].isprintable() else repr(run["run"])[1:-1]
    if run["problem"]:
        return {"epochs": "unreadable"}.get(key, "-")
    if key == "epochs":
        return f"{run['epochs']}/{run['epochs_planned'] or '?'}" + ("" if run["status"] == "done" else "*")
    if key in ("test_acc", "test_acc_at_best_val", "compression", "val_acc_best", "best_test_acc"):
        return _pct(run[key]) if key != "compression" else ("-" if run[key] is None else f"{100 * run[key]:.1f}")
    value = run.get(key)
    return "-" if value is None else str(value)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


LIST_CSV = ("run", "dataset", "data_source", "arch", "structure", "epochs", "epochs_planned", "status", "test_acc",
            "val_acc_best", "test_acc_at_best_val", "best_test_acc", "compression", "neurons_pruned", "wall_s", "date",
            "problem")


@click.group()
def runs():
    """List and compare run folders."""


@runs.command("list")
@click.argument("folder", type=NonEmptyPath(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--csv", "csv_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Also write the list as CSV here (accuracies and compression as fractions).")
def list_runs(folder, csv_path):
    """One line per run under FOLDER [default: runs]: dataset, data source, architecture,
    structure, epochs (* = not finished), final test accuracy, test accuracy at the best
    validation epoch, compression, date."""
    if csv_path is not None:
        check_outputs(csv_path)
    paths, unsearched, unreadable = find_runs(folder)
    found = [_unreadable(path, unreadable[path]) if path in unreadable else read_or_mark(path) for path in paths]
    if not found:
        click.echo(f"no runs under {folder} (a run folder holds config.json or metrics.jsonl)")
    else:
        for run in found:
            run["run"] = str(Path(run["run"]).relative_to(folder)) if Path(run["run"]) != folder else run["run"]
        click.echo(_table([[label for _, label in TABLE]] + [[_cell(run, key) for key, _ in TABLE] for run in found]))
        _report_unreadable(found)
    if unsearched:
        more = f" (and {len(unsearched) - 1} more)" if len(unsearched) > 1 else ""
        click.echo(f"NOTE: searched {MAX_DEPTH} levels below {folder}, not the folders inside {unsearched[0]}{more}; "
                   f"for runs deeper down, give a folder nearer them: evsim runs list {unsearched[0]}")
    if csv_path is not None:
        write_bytes_atomic(csv_path, _csv_bytes(list(LIST_CSV), [[run[key] for key in LIST_CSV] for run in found]))
        click.echo(f"wrote {csv_path}")


def _flat_options(config: dict) -> dict:
    """A run's configuration as one level: options by their names (``seed``, ``rho_init``),
    other fields by their path (``lif.decay``, ``data.seed``: the emulation's, not the run's
    seed); ``None`` for an option the run does not read (``target_sparsity`` but for the
    magnitude and SET baselines), which it records all the same."""
    flat = {k: v for k, v in config.items() if k not in NOT_COMPARED and not isinstance(v, dict)}
    if config.get("arch"):  # --arch gives the network; hidden is unused
        flat.pop("hidden", None)
    # A data folder is a place (a moved dataset is the same data), except for --dataset
    # folder, whose recordings are whatever the folder holds: there it is the dataset.
    paths = ("cache_dir",) if config.get("dataset") == "folder" else ("data_dir", "cache_dir")
    for section in ("lif", "sdsnn", "data"):
        flat.update({OPTION_NAME_BY_TARGET.get(f"{section}.{k}", f"{section}.{k}"): v
                     for k, v in config.get(section, {}).items() if k not in (*paths, "time_steps")})
    readable = {"structure", "schedule", "arch"} <= flat.keys()
    return {k: v if not readable or option_read(k, flat) else None for k, v in flat.items()}


def differing_options(configs: list[dict]) -> list[str]:
    """The option names whose values are not the same in every configuration that reads
    them (SD-SNN's constants do not tell an SD-SNN run from one without structure); one
    that a configuration lacks (``hidden`` beside ``--arch``) differs."""
    flats = [_flat_options(config) for config in configs]
    keys = sorted(set().union(*flats)) if flats else []
    return [key for key in keys if len({json.dumps(flat.get(key, "-"), sort_keys=True) for flat in flats
                                        if flat.get(key, "-") is not None}) > 1]


@runs.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--plot", "plot_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=Path("runs-compare.png"),
              show_default=True, help="The overlaid curves; the suffix picks the format: .png, .pdf or .svg.")
@click.option("--csv", "csv_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Also write every epoch's metrics of every run as CSV here (one row per run and epoch).")
def compare(run_dirs, plot_path, csv_path):
    """A table of the runs (the options in which they differ, and their results) and their
    accuracy, loss and compression curves on common axes."""
    figure_format(plot_path)
    check_outputs(plot_path, *([] if csv_path is None else [csv_path]))
    missing = [str(d) for d in run_dirs if not ((d / "config.json").is_file() or (d / "metrics.jsonl").is_file())]
    if missing:
        raise ConfigError(f"{missing[0]} is not a run folder (no config.json or metrics.jsonl)")
    # A run given twice (overlapping shell globs, a path and a link to it) is compared once:
    # a second copy of the same curves adds nothing, and refusing would stop a comparison
    # the user did want.
    first = {}
    for run_dir in run_dirs:
        first.setdefault(run_dir.resolve(), run_dir)
    unique = list(first.values())
    if len(unique) < len(run_dirs):
        click.echo(f"NOTE: {len(run_dirs) - len(unique)} of the runs given repeat another; each run is compared once")
    found = [read_or_mark(d) for d in unique]
    readable = [run for run in found if not run["problem"]]
    if not readable:
        raise CheckpointError(found[0]["problem"])
    differ = differing_options([run["config"] for run in readable])
    # The data each run trained on is always shown: results on the emulation or the 5,000-digit
    # sample are never to be read as the real dataset's.
    header = ["run", "data", *differ, "epochs done", "test %", "val best %", "test@val %", "best test %", "compr. %"]
    rows = [header]
    for run in found:
        options = _flat_options(run["config"])
        results = [_cell(run, key) for key in ("epochs", "test_acc", "val_acc_best", "test_acc_at_best_val",
                                               "best_test_acc", "compression")]
        rows.append([run["run"], _cell(run, "data_source"),
                     *["-" if options.get(key) is None else str(options[key]) for key in differ],
                     *results])
    click.echo(_table(rows))
    same_data = len({run["data_source"] for run in readable}) == 1
    if not differ:
        click.echo("(the runs have the same options" + (")" if same_data else "; their data differ)"))
    _report_unreadable(found)
    written = [str(plot_path)]
    with written_together():  # the figure and the CSV both new or both old
        _plot_compare(readable, plot_path)
        if csv_path is not None:
            keys = []
            for row in (row for run in readable for row in run["metrics"]):
                keys += [key for key in row if key not in keys and key not in ("type", "data_source")]  # own column
            body = [[run["run"], run["config"].get("dataset", ""), run["data_source"],
                     *[row.get(key, "") for key in keys]] for run in readable for row in run["metrics"]]
            write_bytes_atomic(csv_path, _csv_bytes(["run", "dataset", "data_source", *keys], body))
            written.append(str(csv_path))
    click.echo("wrote " + " and ".join(written))


def run_labels(run_dirs: list[str]) -> list[str]:
    """The shortest end of each run's path that no other run's path ends with
    (``sweep-a/structure=none,seed=0``), for legends; a run given twice gets ``#2``."""
    parts = [Path(run_dir).resolve().parts[1:] for run_dir in run_dirs]

    def label(path: tuple) -> str:
        others = [other for other in parts if other != path]
        n = next((n for n in range(1, len(path)) if all(other[-n:] != path[-n:] for other in others)), len(path))
        return "/".join(path[-n:]) or "/"

    labels = [label(path) for path in parts]
    return [f"{name} #{labels[:k].count(name) + 1}" if labels.count(name) > 1 else name
            for k, name in enumerate(labels)]



def run_styles(n: int) -> list[tuple]:
    """A (colour, marker) pair for each of ``n`` runs, no two alike: the ten default
    colours, one marker of :data:`~evsim.plots.MARKERS` per ten runs (so run 11 is not
    run 1); past ``10 * len(MARKERS)`` runs, a colour of its own for every run from a
    continuous colormap (markers cycling)."""
    if n <= 10 * len(MARKERS):
        return [(f"C{k % 10}", MARKERS[k // 10]) for k in range(n)]
    colours = _pyplot().get_cmap("turbo")(np.linspace(0, 1, n))
    return [(tuple(colours[k]), MARKERS[k % len(MARKERS)]) for k in range(n)]


def _plot_compare(found: list[dict], path: Path) -> None:
    """Test (solid) and validation (dashed, hollow markers) accuracy, training loss and compression per
    epoch, one colour and marker per run, named in one legend beside the axes (inside, it
    would hide curves)."""
    plt = _pyplot()
    fig, (ax_acc, ax_loss, ax_comp) = plt.subplots(1, 3, figsize=(15, 4.4))
    names = run_labels([run["run"] for run in found])
    if len({run["data_source"] for run in found}) > 1:  # which curve is on which data
        names = [f"{name} ({run['data_source']})" for name, run in zip(names, found)]
    for run, name, (color, marker) in zip(found, names, run_styles(len(found))):
        rows, style = run["metrics"], dict(ms=3, color=color, marker=marker)
        x = [row["epoch"] for row in rows]
        ax_acc.plot(x, [100 * row["test_acc"] for row in rows], "-", label=name, **style)
        if any("val_acc" in row for row in rows):
            # hollow: a one-epoch run's validation point must not hide under its test point
            ax_acc.plot(x, [100 * row.get("val_acc", np.nan) for row in rows], "--", mfc="none", **style)
        ax_loss.plot(x, [row["train_loss"] for row in rows], "-", **style)
        ax_comp.plot(x, [100 * row["compression"] for row in rows], "-", **style)
    for ax, ylabel, title in ((ax_acc, "accuracy (%)", "test (solid) and validation (dashed, hollow) accuracy"),
                              (ax_loss, "training loss (running mean)", "training loss"),
                              (ax_comp, "synapses removed (%)", "compression")):
        ax.set(ylabel=ylabel, title=title)
        _epoch_axis(ax)
    ax_comp.set_ylim(0, 100)
    sources = sorted({run["data_source"] for run in found})
    fig.suptitle(f"{len(found)} runs (data: {', '.join(sources)})", fontsize=10)
    fig.tight_layout()
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               ncols=-(-len(found) // 30))
    save_figure(fig, path)
