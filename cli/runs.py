"""Reading run folders written by ``evsim train`` (shared by profile, eval and export)."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint, load_network
from evsim.cli.options import DATASET_OPTION_NAMES, data_options_from
from evsim.config import TrainConfig, crops_by_default
from evsim.data import Dataset, check_options, load_dataset
from evsim.data.base import DEFAULT_TIME_STEPS, read_from, with_validation
from evsim.data.cache import fingerprint_change
from evsim.data.nmnist import crop_hint
from evsim.errors import CheckpointError, ConfigError, DataError
from evsim.files import clean_output_temporaries
from evsim.readers import file_kind
from evsim.network import Network
from evsim.train import KEPT_CHECKPOINTS, expected_shape, saved_checkpoint_policy
from evsim.runfiles import (CONFIG_JSON, METRICS_JSONL, best_epoch, check_belongs, check_data_dir_exists,
                            check_loaded_from, check_moved_data_dir, check_run_data, folder_data_fingerprint,
                            read_metrics, read_run_config, refuse_overwriting_run_files, stored_run_id,
                            stored_trained_on, without_evsim_data)
from evsim.runlock import is_locked

CHECKPOINTS = {"latest": CHECKPOINT_LATEST, "best": CHECKPOINT_BEST}
# The data sources of the offline substitutes: what --source emulated loads again.
SUBSTITUTES = ("emulated", "mnist-5k")


def read_config(run_dir: Path) -> TrainConfig | None:
    """The run's validated ``config.json`` (:func:`~evsim.runfiles.read_run_config`), or None
    when the folder has none (a network made by ``evsim import-nir``)."""
    values = read_run_config(run_dir)
    return None if values is None else TrainConfig.from_dict(values)


def load_run_dataset(config: TrainConfig, run_dir: Path, source: str | None = None,
                     data_dir: Path | None = None) -> tuple[Dataset, bool]:
    """The run's dataset, announcing an emulated or substitute source, and whether it is
    other data than the run's (only where ``source`` asks for it).

    A run's own data is what its options loaded when it trained: the source it recorded
    (real stays real, an emulated or substitute source stays the substitute, whatever
    ``$EVSIM_DATA`` holds now, which the run folded into its --data-dir then), and the
    files it recorded the fingerprint of. A run that trained on a substitute from a
    data folder that has since gone loads the same substitute again.

    Parameters
    ----------
    source : ``--source`` as typed for this command (None if not): load that source
        instead (with ``$EVSIM_DATA``); the caller labels what it writes as other data.
    data_dir : ``--data-dir`` as typed (None if not): where the run's data folder is now
        (moved, or copied to another machine); its files must be those the run trained on.

    Raises
    ------
    DataError
        If the run trained on real data from a folder that no longer exists, or its data
        options now load another source or files other than those it trained on.
    """
    recorded = read_run_config(run_dir) or {}
    # A folder of evsim import-nir: what its network was trained on, as the graph said.
    imported = {} if recorded else imported_trained_on(run_dir)
    other_dataset = imported.get("dataset") not in (None, config.dataset)
    if data_dir is not None and recorded:
        check_moved_data_dir(run_dir, data_dir)
    data = config.data if data_dir is None else dataclasses.replace(config.data, data_dir=data_dir)
    own = recorded.get("data_source") or (None if other_dataset else imported.get("data_source"))
    gone = None
    # A folder without config.json (evsim import-nir) has only the options typed now: a
    # --data-dir that does not exist is refused by the loader, as training refuses it.
    recorded_root = recorded.get("data_root")  # None in runs saved before it was recorded
    # A substitute's run trained on the files in its folder (evsim data emulate-nmnist)
    # where data_root is in that folder.
    from_folder = isinstance(recorded_root, str) and read_from(recorded_root, data.data_dir)
    retry = f"{click.get_current_context().command_path} {run_dir} --data-dir NEW_PLACE"
    if recorded and data_dir is None and from_folder:
        check_data_dir_exists(run_dir, recorded_root, retry, own)  # the folder, or the NMNIST/ in it, moved away
    if recorded and data_dir is None and data.data_dir is not None and not Path(data.data_dir).exists():
        if own not in SUBSTITUTES or from_folder:
            check_data_dir_exists(run_dir, data.data_dir, retry, own)
        gone = data.data_dir
        data = dataclasses.replace(data, data_dir=None, source="emulated")
    if source is not None:
        data = dataclasses.replace(data, source=source)
    elif own == "real" or (own in SUBSTITUTES and data.data_dir is None):
        data = dataclasses.replace(data, source="real" if own == "real" else "emulated")
    with without_evsim_data(source is None and bool(recorded)):
        try:
            dataset = load_dataset(config.dataset, data)
        except DataError as exc:
            if not (imported and own == "real" and source is None):
                raise
            # The options typed now did not ask for real data: say what did.
            raise DataError(f"{exc}; {run_dir}'s network was trained on real data (its NIR graph says so): give "
                            "--source emulated to run it on other data") from None
    if data_dir is not None and recorded and source is None:
        check_loaded_from(run_dir, data_dir, dataset)
    fingerprint, now = folder_data_fingerprint(run_dir), dataset.meta.get("fingerprint")
    if gone is not None:
        click.echo(f"NOTE: {gone}, the folder this run was given, no longer exists; it trained on {own} data, "
                   "loaded again without it")
    if dataset.meta.get("notice"):
        click.echo(f"NOTE: {dataset.meta['notice']}")
    other = own is not None and dataset.source != own
    # --source typed may load files of the same kind from elsewhere (the built-in emulation,
    # not the emulated recordings in the run's --data-dir): other data, not changed data.
    root, run_folder = dataset.meta.get("root"), data_dir or config.data.data_dir
    same_kind_elsewhere = (not other and source is not None and fingerprint is not None and now is not None
                           and bool(fingerprint_change(fingerprint, now)) and root is not None
                           and run_folder is not None and not read_from(root, run_folder))
    if same_kind_elsewhere:
        click.echo(f"NOTE: --source {source} loaded {root}, not the {own} data in {run_folder} that {run_dir} "
                   f"trained on; its files written by default take the suffix -{dataset.source}")
        other = True
    elif other and source is None and fingerprint is not None and now is not None and not fingerprint_change(
            fingerprint, now):
        # the run's own files, no longer marked as what they are
        raise DataError(f"{dataset.meta.get('root')} holds the files {run_dir} trained on, but they now read as "
                        f"{dataset.source} data where it trained on {own} data: restore what marked them (the "
                        "emulator.json that evsim data emulate-nmnist wrote beside Train/ and Test/)")
    elif other and source is None:
        raise DataError(f"{run_dir} trained on {own} data, but {dataset.meta.get('root') or 'its data folder'} now "
                        f"holds {dataset.source} data; give --source emulated for the {own} data it trained on, or "
                        f"--source {dataset.source} to run it on this data")
    elif other:
        click.echo(f"NOTE: {run_dir} trained on {own} data; these results are on {dataset.source} data "
                   f"(--source {source}), not on the run's; its files written by default take the suffix "
                   f"-{dataset.source}")
    if other_dataset:
        click.echo(f"NOTE: {run_dir}'s network was trained on {imported['dataset']}"
                   + (f" ({imported['data_source']} data)" if "data_source" in imported else "")
                   + f"; these results are on {config.dataset}, not on its own data; its files written by default "
                   f"take the suffix -{dataset.source}")
        other = True
    if not other:
        check_run_data(run_dir, fingerprint, dataset,
                       "its test split would hold other samples, possibly some it trained on", data_dir is not None)
    # The splits as the run had them: its training split without the samples it held out.
    return with_validation(dataset, config.val_fraction, config.seed), other


def imported_trained_on(run_dir: Path) -> dict:
    """What the ``network.npz`` of a folder without ``config.json`` (``evsim import-nir``)
    records of the data it was trained on (``dataset``, ``data_source``; none if nothing)."""
    path = run_dir / NETWORK_FILE
    return stored_trained_on(path) if path.is_file() else {}


def other_data_path(path: Path, dataset: Dataset) -> Path:
    """A default output ``path`` in a run folder, named for ``dataset``'s source
    (``confusion-latest-test-real.png``): results on other data than the run's never
    take the name of the run's own."""
    return path.with_name(f"{path.stem}-{dataset.source}{path.suffix}")


def typed(ctx: click.Context, name: str):
    """The value of the option ``name`` as typed on the command line (a folder made
    absolute), else None."""
    if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
        return None
    value = ctx.params[name]
    return Path(value).expanduser().resolve() if isinstance(value, Path) else value


def load_run_network(run_dir: Path, checkpoint: str) -> tuple[Network, TrainConfig | None, str]:
    """The network of checkpoint ``"latest"`` or ``"best"``, the run's configuration (None
    for a folder with only ``network.npz``), and what was loaded
    (``"checkpoint-best.npz, epoch 7/12"``).

    A run written before checkpoints existed, or by ``evsim import-nir``, has only
    ``network.npz``: it stands in for ``latest``.

    Raises
    ------
    CheckpointError
        If the folder has no such checkpoint, or it or the configuration is corrupt.
    """
    if not os.path.isdir(run_dir):
        what = f"is {_no_file_kind(run_dir)}" if os.path.lexists(run_dir) else "no such folder"
        raise CheckpointError(f"{run_dir}: {what}; give a run folder written by evsim train or evsim import-nir")
    own = read_config(run_dir)  # a damaged config.json is refused, whatever the command reads next
    path = run_dir / CHECKPOINTS[checkpoint]
    if path.is_file():
        # Read before the checkpoint: a run training now writes its checkpoint, then its
        # metrics, so the checkpoint loaded after is as new as these, or newer.
        metrics = read_metrics(run_dir)
        state = load_checkpoint(path)  # validates the stored configuration
        check_belongs(run_dir, path, state.run_id)
        check_current(path, state.epoch, metrics)
        config = TrainConfig.from_dict(state.config)
        if own is not None:  # where --resume --data-dir last recorded the data (the checkpoint may be older)
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=own.data.data_dir))
        state.network.set_path(config.path)
        where = f"epoch {state.epoch}/{config.epochs}" if state.in_epoch is None else \
            f"stopped inside epoch {state.epoch + 1}/{config.epochs}"
        return state.network, config, f"{path.name}, {where}"
    if os.path.lexists(path):  # not the run's checkpoint: using network.npz instead would hide it
        raise CheckpointError(f"{path}: is {_no_file_kind(path)}, not a checkpoint file; restore it, or move "
                              "it away")
    network_path = run_dir / NETWORK_FILE
    if checkpoint == "latest" and network_path.is_file():
        network = load_network(network_path, own.path if own is not None else "auto")
        check_belongs(run_dir, network_path, stored_run_id(network_path))
        return network, own, NETWORK_FILE
    if checkpoint == "latest" and os.path.lexists(network_path):
        raise CheckpointError(f"{network_path}: is {_no_file_kind(network_path)}, not the run's network file; "
                              "restore it, or train the run again")
    policy = saved_checkpoint_policy(run_dir)
    if checkpoint == "best" and CHECKPOINT_BEST not in KEPT_CHECKPOINTS[policy]:
        raise CheckpointError(f"{path}: the run keeps no {CHECKPOINT_BEST} (--checkpoints {policy}); "
                              "use --checkpoint latest")
    if (run_dir / CONFIG_JSON).is_file() or (run_dir / METRICS_JSONL).is_file():
        raise CheckpointError(_not_saved_yet(run_dir, path))
    raise CheckpointError(f"{path}: no checkpoint here; is {run_dir} a run folder written by evsim train "
                          "(config.json, checkpoint-*.npz after every epoch, network.npz)?")


def _no_file_kind(path: Path) -> str:
    """What ``path``, which exists but is no regular file, is: 'a folder', 'a FIFO', ...
    or 'a broken link' (missing target, or a loop of links)."""
    try:
        return file_kind(path.stat().st_mode)
    except OSError:
        return "a broken link"


def _not_saved_yet(run_dir: Path, path: Path) -> str:
    """Why the run folder ``run_dir`` has no checkpoint ``path``, and what to use instead."""
    best = best_epoch(read_metrics(run_dir))
    if best is None and is_locked(run_dir):
        return (f"{path}: no checkpoint yet: {run_dir} is training its first epoch now; try again once "
                "it has finished one")
    if path.name == CHECKPOINT_LATEST:
        if best is None:
            return (f"{path}: no checkpoint yet: {run_dir} stopped before it saved one (no finished epoch); "
                    "train it again")
        if CHECKPOINT_LATEST not in KEPT_CHECKPOINTS[saved_checkpoint_policy(run_dir)]:
            return (f"{run_dir / NETWORK_FILE}: missing, though {run_dir} finished epochs (it keeps no checkpoints, "
                    "--checkpoints none); restore it, or train it again")
        return (f"{path}: missing, and so is {NETWORK_FILE}, though {run_dir} finished epochs; restore them, "
                "or train it again")
    if best is None:
        return (f"{path}: no best checkpoint yet: {run_dir} has no finished epoch; use --checkpoint latest "
                f"(where it stopped), or finish it with evsim train --resume {run_dir}")
    return (f"{path}: no best checkpoint saved: {run_dir}'s best epoch ({best}) kept none (trained under "
            "--checkpoints latest, or before checkpoints existed), and no epoch since has been better; "
            "use --checkpoint latest")


def check_current(path: Path, epoch: int, metrics: list[dict]) -> None:
    """Refuse the checkpoint ``path`` (of finished epoch ``epoch``) if the run's ``metrics``
    (read before it) went on past it: a checkpoint a later session's ``--checkpoints``
    policy no longer keeps (and a kill kept it from deleting). A checkpoint ahead of the
    metrics is the newest state (a kill came before they were written, or the run is
    training now).

    Raises
    ------
    CheckpointError
        Naming the stale file and what to use instead.
    """
    epochs = sum(row["type"] == "epoch" for row in metrics)
    if epoch >= epochs or (path.name == CHECKPOINT_BEST and epoch == best_epoch(metrics)):
        return
    if path.name == CHECKPOINT_LATEST:
        raise CheckpointError(f"{path}: stale: it holds epoch {epoch} but {METRICS_JSONL} records {epochs} epochs; "
                              f"delete it to evaluate {NETWORK_FILE} (epoch {epochs}), or rerun the training")
    raise CheckpointError(f"{path}: stale: it holds epoch {epoch} but the best epoch in {METRICS_JSONL} is "
                          f"{best_epoch(metrics)} (later epochs kept no {CHECKPOINT_BEST}); use --checkpoint latest, "
                          f"or delete it, or rerun the training with --checkpoints all")


def run_config(ctx: click.Context, run_dir: Path, network: Network, config: TrainConfig | None, options: dict,
               allowed: tuple[str, ...] = ()) -> TrainConfig:
    """The configuration to run a loaded ``network`` with: the run's own, or, for a folder
    without ``config.json`` (``evsim import-nir``), one built from the dataset options given
    (``--crop`` defaulting as training defaults it for the network).

    ``allowed``: dataset options the command may take for a run that has its own
    configuration (the caller applies them).

    Raises
    ------
    ConfigError
        If dataset options are given for a run that has its own, or none are given for
        a folder without one.
    """
    given = [name for name in DATASET_OPTION_NAMES if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if config is not None:
        given = [name for name in given if name not in allowed]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{run_dir} has its own configuration, which fixes the dataset; leave out {option}")
        return config
    if "dataset" not in given:
        raise ConfigError(f"{run_dir} has a network but no config.json, so no dataset is assumed (not even "
                          "--dataset's default): name the data to run it on with --dataset NAME and the options it "
                          "was trained with (--time-steps T, --encoding, ...)")
    time_steps = options["time_steps"] or DEFAULT_TIME_STEPS.get(options["dataset"], 20)
    options = with_crop_default(ctx, options, network)
    config = TrainConfig(dataset=options["dataset"], data=data_options_from(dict(options), time_steps),
                         time_steps=time_steps)
    check_options(config.dataset, config.data)  # options the dataset does not take: the first thing to fix
    check_fits_known_shape(network, config)
    return config


def check_fits_known_shape(network: Network, config: TrainConfig) -> None:
    """Refuse, before the data loads, a ``network`` whose inputs or outputs cannot be those
    of ``config``'s dataset, where its shape is known before loading (evaluation's own
    check, :func:`~evsim.evaluate.checked_split`, needs the data)."""
    gives, n_classes = expected_shape(config)
    takes = getattr(network.layers[0], "in_shape", None)
    fits_inputs = not gives or (network.sizes[0] == int(np.prod(gives))
                                and (takes is None or len(gives) == 1 or tuple(takes) == tuple(gives)))
    if not fits_inputs or (n_classes and network.sizes[-1] != n_classes):
        network_text = network.describe() if takes is not None else str(network.sizes)
        shape = f"{'x'.join(map(str, gives))} = " if len(gives) > 1 else ""
        known = ([f"{shape}{int(np.prod(gives))} inputs"] if gives else []) + \
            ([f"{n_classes} classes"] if n_classes else [])
        raise ConfigError(f"network {network_text} does not fit {config.dataset} ({', '.join(known)})"
                          + (crop_hint(config.dataset, gives, network.sizes[0])
                             or ": name the data it was trained on with --dataset and that data's options"))


def with_crop_default(ctx: click.Context, options: dict, network: Network) -> dict:
    """The dataset ``options`` with ``--crop``, unless typed, as training defaults it for
    ``network`` (:func:`~evsim.config.crops_by_default`)."""
    if ctx.get_parameter_source("crop") is ParameterSource.COMMANDLINE:
        return options
    return {**options, "crop": crops_by_default(options["dataset"], network.describe())}


def check_outputs(*paths: Path, chosen: dict[Path, str] | None = None, sweep_report: bool = False) -> None:
    """Refuse, before any work, a path where a file cannot be written: a command either
    writes all its outputs or none (not a JSON and then a crash on the PNG). Then remove
    the temporaries of these outputs that killed evsim commands left
    (:func:`~evsim.files.clean_output_temporaries`; nothing else of their folders).

    ``chosen``: the paths the command chose itself (its defaults), each with the option
    that names another (``"--plot FILE"``): a refusal of one names the options of the
    defaults in its folder, since the user gave no path to change. ``sweep_report``:
    the outputs are evsim sweep report's own files, which it may overwrite.

    Raises
    ------
    ConfigError
        If two outputs are one file (the second would overwrite the first), a path is a
        folder, or its folder (or the nearest existing one above it, as missing folders
        are created) is not a writable folder.
    CheckpointError
        If a path is a file a run or sweep keeps its state in (``summary.json``,
        ``.evsim.lock``, ``sweep.json``, ...; see
        :func:`~evsim.runfiles.refuse_overwriting_run_files`).
    """
    chosen = chosen or {}

    def fix(path: Path, typed: str) -> str:
        if path not in chosen:
            return typed
        return "give " + " and ".join(option for other, option in chosen.items() if other.parent == path.parent)

    seen = set()
    for path in paths:
        if path.resolve() in seen:
            raise ConfigError(f"{path} is given for two outputs; give each output its own file name")
        seen.add(path.resolve())
    for path in paths:
        refuse_overwriting_run_files(path, fix(path, "choose another file name"), sweep_report)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; {fix(path, 'give a file name')}")
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise ConfigError(f"cannot write {path}: {folder} is not a folder; {fix(path, 'choose another path')}")
        try:  # try it: os.access says yes to root in read-only places like /proc
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {folder} is not writable ({exc.strerror}); "
                              f"{fix(path, 'choose another path')}") from None
    for path in paths:  # not where a run trains, perhaps from another machine whose pids say nothing here
        if not is_locked(path.parent):
            clean_output_temporaries(path)
