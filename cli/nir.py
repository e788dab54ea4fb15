"""``evsim export`` and ``evsim import-nir``: trained networks to and from NIR graphs."""
from __future__ import annotations

import os
from pathlib import Path

import click

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, save_network
from evsim.cli.options import NonEmptyPath, number
from evsim.cli.runs import CHECKPOINTS, load_run_network
from evsim.errors import CheckpointError
from evsim.neuron import NIR_DT, lif_constants
from evsim.nir_io import TRAINED_ON_KEYS, holds_evsim_lif, read_nir, read_nir_trained_on, write_nir
from evsim.runfiles import CONFIG_JSON, read_run_config, refuse_overwriting_run_files, stored_trained_on
from evsim.runlock import folder_identity, written_into


@click.command()
@click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.argument("out", type=NonEmptyPath(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["nir"]), default="nir", show_default=True,
              help="Output format: NIR (HDF5, readable with nir.read).")
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="latest", show_default=True,
              help="Which saved network of the run to export.")
def export(run_dir, out, fmt, checkpoint):
    """Export a trained run's network as a NIR graph: per layer Affine or Conv2d (pruned
    synapses as zeros, the sparse structure in metadata) -> LIF, pooling nodes, and a
    Flatten before the first fully connected layer."""
    refuse_overwriting_run_files(out, "give the NIR file another name, such as network.nir")
    found = folder_identity(run_dir)  # the folder loaded: a NIR file given inside it goes to it or nowhere
    refuse_replacing_other_files(out)
    network, _, loaded = load_run_network(run_dir, checkpoint)
    recorded = read_run_config(run_dir)
    if recorded is None:  # a folder of evsim import-nir: what the imported graph said, kept in network.npz
        trained_on = stored_trained_on(run_dir / NETWORK_FILE) if loaded == NETWORK_FILE else {}
    else:
        trained_on = {key: recorded[key] for key in TRAINED_ON_KEYS if recorded.get(key) is not None}
    with written_into(run_dir, found, "evsim export", out):
        write_nir(out, network, trained_on)
    tau, r = lif_constants(network.lif)
    click.echo(f"wrote {out}: NIR graph of {run_dir} ({loaded}{_data_words(trained_on)}), network {network.describe()}, "
               f"{network.synapses} of {network.dense_synapses} synapses, LIF tau = {tau * 1e3:.6g} ms, r = {r:.6g}, "
               f"v_threshold {network.lif.v_th}, dt = {NIR_DT * 1e3:g} ms per step")
    if network.lif.reset == "subtract":
        click.echo("NOTE: subtractive reset has no NIR equivalent; other NIR tools will simulate a hard reset "
                   "to v_reset = 0 (evsim import-nir restores it from the metadata)")


@click.command("import-nir")
@click.argument("nir_file", type=NonEmptyPath(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--dt", type=number(0, low_open=True), default=None,
              help="Time step the graph's time constants refer to, for graphs from other tools "
                   "[default: the graph's dt metadata, else 1].")
def import_nir(nir_file, out_dir, dt):
    """Read a NIR graph into an evsim network, saved as OUT_DIR/network.npz."""
    refuse_overwriting_run_files(out_dir / NETWORK_FILE, "import into a new folder, or delete that file first")
    # eval, export and the rest read a run's checkpoints before network.npz: the imported
    # network would pass for the run's own, or be passed over for a stray checkpoint.
    held = [name for name in (CONFIG_JSON, CHECKPOINT_LATEST, CHECKPOINT_BEST) if os.path.lexists(out_dir / name)]
    if held:
        raise CheckpointError(f"{out_dir}: holds a training run ({held[0]}); import into a new folder")
    network = read_nir(nir_file, dt)
    trained_on = read_nir_trained_on(nir_file)  # an emulation-trained network stays marked as one
    made = [folder for folder in (out_dir, *out_dir.parents) if not os.path.lexists(folder)]
    try:
        save_network(out_dir / NETWORK_FILE, network, trained_on=trained_on)
    except BaseException:  # a failed import leaves no folders it made behind
        for folder in made:  # deepest first
            try:
                folder.rmdir()  # refuses a folder that holds anything
            except OSError:
                break
        raise
    if dt is not None and holds_evsim_lif(nir_file):  # after the import: a refused graph gets one Error line
        click.echo(f"NOTE: --dt {dt:g} is not used: {nir_file} was written by evsim and holds its exact LIF "
                   "parameters (evsim_lif metadata)")
    click.echo(f"wrote {out_dir / NETWORK_FILE}: network {network.describe()}, "
               f"{network.synapses} synapses, LIF decay {network.lif.decay:.6g}, v_th {network.lif.v_th}, "
               f"{network.lif.reset} reset" + _data_words(trained_on or {}))


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def refuse_replacing_other_files(out: Path) -> None:
    """Refuse an existing ``out`` that is not a NIR (HDF5) file: an export replaces an
    earlier export, never another file given by mistake (a run's results). An empty file
    (``touch``, ``mktemp``) holds nothing to lose.

    Raises
    ------
    CheckpointError
        Naming the file and the fix.
    """
    if not os.path.lexists(out) or (os.path.isfile(out) and os.path.getsize(out) == 0):
        return
    head = b""
    if os.path.isfile(out):  # a FIFO or device is not opened: it could block or never end
        try:
            with open(out, "rb") as handle:
                head = handle.read(len(HDF5_SIGNATURE))
        except OSError:
            pass
    if head != HDF5_SIGNATURE:
        raise CheckpointError(f"{out}: exists and is not a NIR (HDF5) file, which this would overwrite; choose "
                              "another name, or remove it")


def _data_words(trained_on: dict) -> str:
    """``, trained on nmnist (emulated data)``, or nothing where the data is not known."""
    return (f", trained on {trained_on['dataset']} ({trained_on['data_source']} data)"
            if {"dataset", "data_source"} <= trained_on.keys() else "")
