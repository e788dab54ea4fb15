"""Saving and loading networks and training checkpoints: plain NumPy ``.npz`` + JSON.

Nothing is pickled: arrays are stored as ``.npy`` members, everything else as one
JSON string (the ``meta`` member), and files are read with ``allow_pickle=False``.
Files are written atomically (temporary file beside the target, fsync, rename), so a
reader sees either the previous complete file or the new complete one: a write that
fails or is killed half-way leaves the previous checkpoint in place.

Two kinds of file share the network layout: each layer's own arrays
(:meth:`~evsim.layers.base.Layer.to_arrays`; for a linear layer ``indptr``,
``indices``, ``data``, ``shape``, ``bias``, ``alive``, ``develops``) as members
``l<k>_<name>``, and ``l<k>_kind`` naming the layer kind (a file without it holds
linear layers), so :func:`load_network` reads either:

``network.npz``            the trained network only (inference, profiling, export).
``checkpoint-*.npz``       everything a run needs to continue bit for bit
                           (:class:`TrainingState`): per-synapse state arrays
                           (optimizer moments, dendritic-spine ranges and counters,
                           as ``l<k>_state__<name>``), bias moments
                           (``l<k>_bias_state__<name>``), the structure controller's
                           state (``structure__<name>``), the shuffled order of an
                           interrupted epoch (``epoch__order``), and in ``meta``: the
                           config, epoch, batches seen, metrics, optimizer steps and
                           the bit-generator states of every random generator.

:func:`load_checkpoint` checks every value of a training checkpoint against the
checkpoint's own network and configuration before a run continues from it (a damaged
one is refused in one line naming the file and the field).
"""
from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from evsim.config import TrainConfig, with_added_keys
from evsim.errors import CheckpointError, ConfigError
from evsim.files import jsonl_bytes, link_atomic, write_atomic, write_bytes_atomic
from evsim.layers import LAYER_KINDS, PATHS, SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import MOMENTS
from evsim.readers import CODE_ERRORS, check_npz, check_regular, reason
from evsim.structure.sdsnn import SDSNN, SDSNNConfig, init_ranges
from evsim.synapses import SynapseStore

NETWORK_FILE = "network.npz"
CHECKPOINT_LATEST = "checkpoint-latest.npz"
CHECKPOINT_BEST = "checkpoint-best.npz"
# 2: SD-SNN's regeneration counters are kept over the incomplete columns only.
# 3: SD-SNN's would-be sums are a window of about an epoch, with a batch count per column
#    (format 2's interval sums and their one count are read as such a window).
CHECKPOINT_FORMAT = 3


@dataclass
class EpochProgress:
    """Where an unfinished epoch stands: its sample order, samples done, running totals."""

    order: np.ndarray
    position: int = 0
    total_loss: float = 0.0
    correct: int = 0


@dataclass
class TrainingState:
    """Everything a training run needs to continue exactly where it stopped.

    Attributes
    ----------
    network : the network, with every per-synapse and bias state array.
    config : the run's ``TrainConfig.to_dict()``.
    data_source : where the data came from (resuming on other data is refused).
    epoch : finished epochs. batches_seen : optimizer steps taken by the trainer.
    metrics : the metric rows so far.
    optimizer : ``{"name", "steps"}`` (moments live in the network's state arrays).
    rng : name -> ``bit_generator.state`` (JSON) of every random generator.
    structure : the structure controller's ``state_dict()``, or None.
    in_epoch : for a run stopped inside an epoch, that epoch's ``order`` (array),
        ``position`` (samples done) and running totals; None at an epoch boundary.
    run_id : the id of the run the checkpoint belongs to (:mod:`evsim.runfiles`); None
        in checkpoints written before run ids existed.
    """

    network: Network
    config: dict
    data_source: str
    epoch: int
    batches_seen: int
    metrics: list[dict]
    optimizer: dict
    rng: dict
    structure: dict | None = None
    in_epoch: dict | None = None
    run_id: str | None = None


# ------------------------------------------------------------------ networks
def _network_arrays(network: Network, with_state: bool) -> dict[str, np.ndarray]:
    """Every layer's own arrays (:meth:`~evsim.layers.base.Layer.to_arrays`) as members
    ``l<k>_<name>``, with ``l<k>_kind`` naming the layer kind."""
    arrays = {}
    for k, layer in enumerate(network.layers):
        arrays[f"l{k}_kind"] = np.array(layer.kind)
        arrays.update({f"l{k}_{name}": values for name, values in layer.to_arrays(with_state).items()})
    return arrays


class _Members(Mapping):
    """The members ``<prefix><name>`` of an open npz file, as a mapping by ``<name>``."""

    def __init__(self, f, prefix: str):
        self.f, self.prefix = f, prefix
        self.names = [key[len(prefix):] for key in f.files if key.startswith(prefix)]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.f[self.prefix + name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _network_from(f, meta: dict, path_option: str, with_state: bool = False) -> Network:
    """Rebuild the network from an open npz file, each layer by its kind's ``from_arrays``;
    with ``with_state``, with its saved per-synapse and bias state arrays, attached as read
    (:func:`_check_training_state` checks them, naming the member; inference needs none).

    Raises ValueError (ShapeError for the structure) unless the arrays are a consistent
    network with finite weights, biases and neuron parameters.
    """
    layers = []
    for k in range(meta["n_layers"]):
        kind = str(f[f"l{k}_kind"]) if f"l{k}_kind" in f.files else SparseLinear.kind
        if kind not in LAYER_KINDS:
            raise ValueError(f"l{k}_kind is {kind!r}, not a layer kind of this evsim ({', '.join(LAYER_KINDS)})")
        layers.append(LAYER_KINDS[kind].from_arrays(_Members(f, f"l{k}_"), path=path_option, with_state=with_state))
    # Every field, checked: a default in place of a lost one, or a hard reset for a
    # subtractive one, would change every spike.
    network = Network(layers, LIFParameters.from_dict(meta["lif"]))
    check_finite(network)
    return network


def check_finite(network: Network) -> None:
    """Raise ValueError unless every weight, bias and LIF parameter is finite: one NaN
    would spread silently through every spike count and gradient after it."""
    lif = network.lif
    if not all(math.isfinite(value) for value in (lif.decay, lif.v_th, lif.width)):
        raise ValueError(f"LIF parameters are not finite numbers (decay {lif.decay}, v_th {lif.v_th}, "
                         f"width {lif.width})")
    for k, layer in enumerate(network.layers):
        for (values, _), name in zip(layer.parameters(), ("weights", "biases")):
            if not np.all(np.isfinite(values)):
                raise ValueError(f"layer {k} holds NaN or infinite {name}")


def _write_npz_atomic(path: Path, meta: dict | str, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` of ``arrays`` and ``meta`` (a dict, or its JSON text) atomically,
    straight into the temporary file (no copy of its bytes in memory)."""
    meta = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    write_atomic(Path(path), lambda handle: np.savez(handle, meta=meta, **arrays))


def _network_meta(network: Network, run_id: str | None = None, trained_on: dict | None = None) -> dict:
    meta = {"format": 1, "n_layers": len(network.layers), "lif": network.lif._asdict()}
    meta = meta if run_id is None else {**meta, "run_id": run_id}
    return meta if trained_on is None else {**meta, "trained_on": trained_on}


def trained_on(dataset: str | None, data_source: str) -> dict:
    """What a run's network file records of the data it was trained on."""
    return {"dataset": dataset, "data_source": data_source}


def check_writable_network(path, network, what: str) -> None:
    """Refuse, before anything is written, a ``network`` that is not a Network (the
    arguments swapped: the path comes first), or a ``path`` that is not a file's.

    Raises
    ------
    ConfigError
        Saying which.
    """
    if not isinstance(network, Network):
        raise ConfigError(f"{what} takes (path, network), got a {type(network).__name__} for the network"
                          + (" (the arguments swapped?)" if isinstance(path, Network) else ""))
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"{what} takes a file path, got {type(path).__name__}")
    if Path(path).is_dir():
        raise ConfigError(f"{path}: it is a folder, not a file; move it away, or choose another path")
    for k, layer in enumerate(network.layers):
        if not isinstance(layer, LAYER_KINDS.get(getattr(layer, "kind", None), ())):
            raise ConfigError(f"{what} writes evsim's layers ({', '.join(LAYER_KINDS)}); layer {k} is a "
                              f"{type(layer).__name__}, which a file could not load")


def check_path_option(path_option) -> None:
    """Refuse an unknown propagation path before a file is read (it is no fault of the file)."""
    if path_option not in PATHS:
        raise ConfigError(f"unknown propagation path {path_option!r}; choose one of {', '.join(PATHS)}")


def save_network(path: Path, network: Network, run_id: str | None = None, trained_on: dict | None = None) -> None:
    """Write the network's synapses (CSR), biases, alive masks and neuron parameters (and
    the id of the run it belongs to, if any, and ``trained_on``: the ``dataset`` and
    ``data_source`` it was trained on, so that the file alone says so).

    Raises
    ------
    ConfigError
        If ``network`` is not a Network, holds a layer not of evsim (which no file could
        load), or ``path`` is a folder.
    CheckpointError
        If a weight, bias or LIF parameter is NaN or infinite: :func:`load_network` would
        refuse the file, so none is written.
    """
    check_writable_network(path, network, "save_network")
    try:
        check_finite(network)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not saved: {exc} (a diverged network); a saved network must load") from None
    _write_npz_atomic(path, _network_meta(network, run_id, trained_on), _network_arrays(network, with_state=False))


def load_network(path: Path, path_option: str = "auto") -> Network:
    """Read a network written by :func:`save_network` or :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupt or inconsistent.
    ConfigError
        If ``path_option`` is not a propagation path.
    """
    check_path_option(path_option)
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"load_network takes a file path, got {type(path).__name__}")
    path = Path(path)
    check_regular(path, "evsim network file", CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained network here; train a run first (evsim train --out RUN_DIR)")
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as f:
            return _network_from(f, json.loads(str(f["meta"])), path_option)
    except CODE_ERRORS:
        raise
    except PermissionError as exc:  # the file may be whole: retraining would be for nothing
        raise CheckpointError(f"{path}: cannot read the network file ({exc.strerror}); fix its permissions") from None
    except Exception as exc:  # noqa: BLE001 -- np.load and zipfile raise many kinds on a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated network file ({reason(exc)}); "
                              "retrain or restore it") from None


# --------------------------------------------------------- stored configurations
# The JSON type of each value in a default TrainConfig.to_dict() -> (test, what it must be).
_CONFIG_TYPES = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "a finite number"),
    str: (lambda v: isinstance(v, str), "a string"),
    type(None): (lambda v: v is None or isinstance(v, str), "a string or null"),
    list: (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
           "a list of integers"),
}


def _config_type_problem(values, reference: dict, where: str = "") -> str | None:
    """The first value in ``values`` whose type differs from the one in ``reference``, described
    (a missing key is :func:`_missing_config_key`'s to report)."""
    if not isinstance(values, dict):
        return f"{where.rstrip('.') or 'the configuration'} must be an object, got {values!r}"
    for key, default in reference.items():
        if key not in values:
            continue
        if isinstance(default, dict):
            problem = _config_type_problem(values[key], default, f"{where}{key}.")
        else:
            test, kind = _CONFIG_TYPES[type(default)]
            problem = None if test(values[key]) else f"{where}{key} must be {kind}, got {values[key]!r}"
        if problem:
            return problem
    return None


def _missing_config_key(values: dict, reference: dict, where: str = "") -> str | None:
    """The dotted name of the first key of ``reference`` (nested sections included) that
    ``values`` lacks. Keys ``values`` has beyond ``reference`` are not looked at: the writer
    adds some beside the configuration (``data_source``), and from_dict refuses unknown
    ones inside a section."""
    for key, default in reference.items():
        if key not in values:
            return f"{where}{key}"
        if isinstance(default, dict) and isinstance(values[key], dict):
            missing = _missing_config_key(values[key], default, f"{where}{key}.")
            if missing:
                return missing
    return None


def stored_config(values, path: Path):
    """The validated :class:`~evsim.config.TrainConfig` of a configuration read from ``path``
    (a checkpoint's ``meta`` or a run's ``config.json``): a hand-edited or damaged value
    must be refused here, not fail deep inside training or evaluation. So must a missing
    key: evsim writes every one, and a default put in its place would silently change
    the run.

    Raises
    ------
    CheckpointError
        Naming ``path`` and the first invalid value or missing key.
    """

    if isinstance(values, dict):  # options added since the file was written take the value it meant
        values = with_added_keys(values)
    # A saved configuration holds dev_interval resolved to a number of batches ("auto" never is).
    reference = dataclasses.replace(TrainConfig(), dev_interval=0).to_dict()
    try:
        problem = _config_type_problem(values, reference)
        if problem is None:
            missing = _missing_config_key(values, reference)
            if missing is not None:
                raise CheckpointError(f"{path}: stored configuration has no {missing!r} (the file is damaged or "
                                      "was written by another evsim version); restore it, or re-run training to "
                                      "write one with this evsim")
            return TrainConfig.from_dict(values).validate()
    except ConfigError as exc:
        problem = str(exc)
    raise CheckpointError(f"{path}: invalid stored configuration ({problem}); restore the file, or start the run "
                          "again")


# ------------------------------------------------------- training checkpoints
def _pack(prefix: str, values: dict, arrays: dict[str, np.ndarray]) -> dict:
    """JSON description of ``values``: arrays and NumPy scalars go to ``arrays`` under
    ``prefix + name`` (so their dtype survives: a float32 scalar must not come back as
    a Python float, which NumPy would promote differently), everything else stays JSON."""
    spec = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, np.ndarray):
            arrays[key] = value
            spec[name] = {"array": key}
        elif isinstance(value, np.generic):
            arrays[key] = np.asarray(value)
            spec[name] = {"scalar": key}
        else:
            spec[name] = {"json": value}
    return spec


def _unpack(spec, f, field: str) -> dict:
    """Inverse of :func:`_pack` on the open npz file ``f``; ``field`` names ``spec`` in errors.

    Raises
    ------
    _Damaged
        If ``spec`` is not what :func:`_pack` writes, or names a member the file lacks.
    """
    if not isinstance(spec, dict):
        raise _Damaged(f"{field} must be an object, got {_short(spec)}")
    out = {}
    for name, where in spec.items():
        kind, value = next(iter(where.items())) if isinstance(where, dict) and len(where) == 1 else (None, None)
        if kind == "json":
            out[name] = value
        elif kind in ("array", "scalar") and isinstance(value, str) and value in f.files:
            out[name] = np.array(f[value]) if kind == "array" else f[value][()]
        elif kind in ("array", "scalar"):
            raise _Damaged(f"{field}.{name} refers to a member {_short(value)} the file does not hold")
        else:
            raise _Damaged(f"{field}.{name} must be {{\"array\" or \"scalar\": member}} or {{\"json\": value}}, "
                           f"got {_short(where)}")
    return out


def _checkpoint_contents(state: TrainingState) -> tuple[str, dict[str, np.ndarray]]:
    """The ``meta`` JSON text of a checkpoint of ``state`` and its arrays (the state's own,
    not copies).

    Raises
    ------
    CheckpointError
        If some state value is neither an array, a NumPy scalar nor JSON-ready.
    """
    arrays = _network_arrays(state.network, with_state=True)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "kind": "training-checkpoint",
        "n_layers": len(state.network.layers),
        "lif": state.network.lif._asdict(),
        "config": state.config,
        "data_source": state.data_source,
        "epoch": state.epoch,
        "batches_seen": state.batches_seen,
        "optimizer": state.optimizer,
        "rng": state.rng,
        "structure": None if state.structure is None else _pack("structure__", state.structure, arrays),
        "in_epoch": None if state.in_epoch is None else _pack("epoch__", state.in_epoch, arrays),
        "metrics": state.metrics,
    }
    if state.run_id is not None:
        meta["run_id"] = state.run_id
    try:
        return json.dumps(meta), arrays
    except TypeError as exc:
        raise CheckpointError(f"cannot checkpoint the training state: {exc}") from None


def write_checkpoint(paths: list[Path], meta: dict | str, arrays: dict[str, np.ndarray]) -> None:
    """Write a checkpoint of ``meta`` and ``arrays`` atomically to the first path in
    ``paths``; the others become
    hard links to it (the default N-MNIST run's 45 MB checkpoint took 0.05-0.65 s to
    write and fsync on the development machine, twice when the test accuracy improved)."""
    first, *others = [Path(path) for path in paths]
    _write_npz_atomic(first, meta, arrays)
    for path in others:
        link_atomic(first, path)


def save_checkpoint(paths: list[Path], state: TrainingState) -> None:
    """Serialise ``state`` once and write it (see :func:`write_checkpoint`)."""
    write_checkpoint(paths, *_checkpoint_contents(state))


class _WriteFailed(Exception):
    """A file of a save could not be written (raised on the writer thread, reported by wait)."""

    def __init__(self, path: Path, what: str, error: OSError | MemoryError):
        super().__init__(path, what, error)
        self.path, self.what, self.error = path, what, error


def _write_in_order(files: list[tuple[Path, str, Callable[[], None]]], remove: list[Path],
                    check: Callable[[], None] = lambda: None) -> None:
    """Write ``files`` in order, then delete ``remove``: only once the new state is on disk.
    ``check()`` runs before each file (and before the removals) and may raise to stop there."""
    for path, what, write in files:
        check()
        try:
            write()
        except (OSError, MemoryError) as exc:
            raise _WriteFailed(path, what, exc) from exc
    if remove:
        check()
    for path in remove:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _WriteFailed(path, _REMOVAL, exc) from exc


# The "what" of a failed removal (of a checkpoint the run's policy does not keep).
_REMOVAL = "removal"


class CheckpointWriter:
    """Saves checkpoints, and with them the run's network and metrics files, writing
    them on a background thread.

    What a save holds is taken at once, once the last save is written: its arrays are
    copied (34 MB for the default N-MNIST run), so training can change them afterwards. Serialising, writing and
    fsyncing then happen while training goes on. On the development machine these took
    the main thread 0.3-0.4 s per epoch for the checkpoint and another 0.2-0.4 s for
    the network and metrics files (benchmarks/RESULTS.md). Saves are written one at a
    time, in order: the checkpoint, then the network, then the metrics; a new save
    waits for the last. :meth:`wait` returns once the last save is on disk, and raises
    its error if a file could not be written. The thread is not a daemon, so the
    interpreter lets a write finish before it exits.
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evsim-checkpoint")
        self._pending: Future | None = None

    def save(self, paths: list[Path], state: TrainingState, network_path: Path | None = None,
             metrics_path: Path | None = None, remove: list[Path] = (),
             check: Callable[[], None] = lambda: None) -> None:
        """Write a checkpoint of ``state`` to ``paths`` (the others hard links to the first;
        none when empty) and, where their paths are given, the network alone (as :func:`save_network`
        writes it) and the metrics (JSON lines); then delete the files ``remove`` (checkpoints
        the run no longer keeps, which would be stale beside the new state). ``check()`` runs
        on the writer's thread before each file; what it raises stops the save and is raised
        by :meth:`wait` (training's: the run folder was moved meanwhile).

        Raises
        ------
        CheckpointError
            If the state cannot be serialised, or the last save failed (see :meth:`wait`).
        """
        self.wait()  # before the copy: one snapshot of the state in memory at a time, not two
        meta, arrays = _checkpoint_contents(state)
        arrays = {name: np.array(values) for name, values in arrays.items()}
        files = [(Path(paths[0]), "checkpoint", lambda: write_checkpoint(paths, meta, arrays))] if paths else []
        if network_path is not None:
            network_meta = _network_meta(state.network, state.run_id,
                                         trained_on(state.config.get("dataset"), state.data_source))
            network = {name: arrays[name] for name in _network_arrays(state.network, with_state=False)}
            files.append((Path(network_path), "network",
                          lambda: _write_npz_atomic(network_path, network_meta, network)))
        if metrics_path is not None:
            metrics = jsonl_bytes(state.metrics)
            files.append((Path(metrics_path), "metrics file", lambda: write_bytes_atomic(metrics_path, metrics)))
        self._pending = self._pool.submit(_write_in_order, files, [Path(path) for path in remove], check)

    def wait(self) -> None:
        """Block until the last save is written.

        Raises
        ------
        CheckpointError
            If writing one of its files failed (the previous one at that path is intact).
        """
        if self._pending is None:
            return
        future, self._pending = self._pending, None
        try:
            future.result()
        except _WriteFailed as failed:
            path = failed.path
            if failed.what == _REMOVAL:
                raise CheckpointError(f"{path}: could not be removed ({reason(failed.error)}), and is now stale "
                                      f"(older than the run's network.npz); delete it, and check the permissions "
                                      f"of {path.parent}") from None
            before = "the previous one is intact" if path.exists() else "there is no earlier one"
            if isinstance(failed.error, MemoryError):
                raise CheckpointError(f"{path}: the {failed.what} could not be written: out of memory; {before}; "
                                      "free memory (or give --checkpoints latest, or a smaller network)") from None
            raise CheckpointError(f"{path}: the {failed.what} could not be written ({reason(failed.error)}); "
                                  f"{before}; check the free space and permissions of {path.parent}") from None


# ---------------------------------------------- checks of a training checkpoint
# A resumed run takes everything in a checkpoint as given: a moment of the wrong dtype
# goes into a kernel, a bad order or position indexes the data, a NaN accuracy decides
# the best epoch. So everything is checked once, here, as it is read, against the
# checkpoint's own network and configuration (Trainer.restore checks what depends on
# the data found now: the order's length and the batches per epoch).


class _Damaged(Exception):
    """A value in a checkpoint that no run of this evsim writes (the message names the field)."""


def _short(value) -> str:
    """``repr(value)`` in at most 60 characters; an array as its dtype and shape."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    """A finite float or an integer (JSON's numbers; math.isfinite overflows on huge integers)."""
    return isinstance(value, float) and math.isfinite(value) or isinstance(value, int) and not isinstance(value, bool)


def _check_bit_generator(field: str, value) -> None:
    """``value`` must be a ``bit_generator.state`` of evsim's generators (``default_rng``:
    PCG64); NumPy takes floats, booleans, extra keys and an even increment without a word."""
    reference = np.random.default_rng(0).bit_generator.state
    if not isinstance(value, dict) or set(value) != set(reference):
        raise _Damaged(f"{field} must be a bit-generator state with the keys {', '.join(reference)}, "
                       f"got {_short(value)}")
    if value["bit_generator"] != reference["bit_generator"]:
        raise _Damaged(f"{field}.bit_generator must be {reference['bit_generator']!r}, "
                       f"got {_short(value['bit_generator'])}")
    inner = value["state"]
    if not isinstance(inner, dict) or set(inner) != set(reference["state"]):
        raise _Damaged(f"{field}.state must have the keys {', '.join(reference['state'])}, got {_short(inner)}")
    for name, number in inner.items():
        if not (_is_count(number) and number < 2 ** 128):
            raise _Damaged(f"{field}.state.{name} must be an integer in [0, 2**128), got {_short(number)}")
    if inner["inc"] % 2 == 0:
        raise _Damaged(f"{field}.state.inc must be odd (PCG64's increment always is), got {inner['inc']}")
    if not (_is_count(value["has_uint32"]) and value["has_uint32"] <= 1):
        raise _Damaged(f"{field}.has_uint32 must be 0 or 1, got {_short(value['has_uint32'])}")
    if not (_is_count(value["uinteger"]) and value["uinteger"] < 2 ** 32):
        raise _Damaged(f"{field}.uinteger must be an integer in [0, 2**32), got {_short(value['uinteger'])}")


def _check_like(field: str, value, reference) -> None:
    """``value`` must be of the kind of ``reference``, a fresh controller's value: an array
    of its dtype, dimensions and leading sizes (the last size varies) with finite floats;
    a count; a finite number; or a bit-generator state."""
    if isinstance(reference, np.ndarray):
        if not isinstance(value, np.ndarray) or value.dtype != reference.dtype or value.ndim != reference.ndim:
            raise _Damaged(f"{field} must be a {reference.ndim}-d {reference.dtype} array, got {_short(value)}")
        if value.shape[:-1] != reference.shape[:-1]:
            raise _Damaged(f"{field} has shape {value.shape}, expected {reference.shape[:-1]} before the last size")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise _Damaged(f"{field} holds NaN or infinite values")
    elif isinstance(reference, dict) and "bit_generator" in reference:
        _check_bit_generator(field, value)
    elif isinstance(reference, int) and not isinstance(reference, bool):
        if not _is_count(value):
            raise _Damaged(f"{field} must be an integer >= 0, got {_short(value)}")
    elif isinstance(reference, float):
        if not _is_number(value):
            raise _Damaged(f"{field} must be a finite number, got {_short(value)}")
    elif type(value) is not type(reference):
        raise _Damaged(f"{field} must be a {type(reference).__name__}, got {_short(value)}")


def _structure_reference(config: dict, network: Network) -> dict:
    """A fresh ``state_dict()`` of the run's structure controller for ``network``: the keys
    and the kinds of value a saved one must have. SD-SNN's is built (its constructor only
    reads the layers' sizes; with the default constants, whose floats are floats, since
    only kinds matter here); SET's constructor prunes the network it is given, so its
    state (step and generator) and gradual magnitude pruning's (step) are written out."""
    if config["structure"] == "sdsnn":
        return SDSNN(network, SDSNNConfig()).state_dict()
    reference = {"step": 0}
    if config["structure"] == "set":
        reference["rng"] = np.random.default_rng(0).bit_generator.state
    return reference


def _check_structure(state: TrainingState) -> int:
    """Check the structure controller's state; return its development step (0 without one)."""
    name, saved = state.config["structure"], state.structure
    if name == "none":
        if saved is not None:
            raise _Damaged("structure must be null: the run has no structure controller (structure 'none')")
        return 0
    if saved is None:
        raise _Damaged(f"structure is null, but the run's {name} controller has a state")
    reference = _structure_reference(state.config, state.network)
    missing, unexpected = sorted(set(reference) - set(saved)), sorted(set(saved) - set(reference))
    why = "a damaged file, or one written by another evsim version"
    if missing:
        raise _Damaged(f"structure has no {missing[0]!r} (the {name} controller's state is incomplete: {why})")
    if unexpected:
        raise _Damaged(f"structure has an unexpected {unexpected[0]!r} (not part of the {name} controller's state: "
                       f"{why})")
    for key, value in reference.items():
        _check_like(f"structure.{key}", saved[key], value)
    if name == "sdsnn":
        _check_sdsnn(state)
    interval = state.config["dev_interval"]
    expected = state.batches_seen // interval if interval else state.epoch
    if saved["step"] != expected:
        counted = f"batches_seen {state.batches_seen} // dev_interval {interval}" if interval else \
            f"one per finished epoch, epoch {state.epoch}"
        raise _Damaged(f"structure.step is {saved['step']}, but {counted} makes {expected}")
    return saved["step"]


def _sdsnn_from_format_2(structure: dict) -> dict:
    """Format 2's SD-SNN state as format 3's: the sums of the interval in progress, over
    ``<layer>.batches`` batches, become the window, every column holding that many; with
    none, the window is empty. Values that are not what format 2 wrote are left for the
    checks to name."""
    upgraded = dict(structure)
    for key in [k for k in structure if k.endswith(".batches")]:
        layer, batches = key[:-len(".batches")], structure[key]
        columns = structure.get(f"{layer}.columns")
        if not _is_count(batches) or not isinstance(columns, np.ndarray):
            continue
        del upgraded[key]
        if not batches:
            upgraded[f"{layer}.columns"] = columns = np.zeros(0, dtype=np.int64)
        upgraded[f"{layer}.window_batches"] = np.full(columns.size, float(batches))
    return upgraded


def _check_sdsnn(state: TrainingState) -> None:
    """What SD-SNN's kernels index unchecked: per developing layer, the column lists
    (increasing, inside the layer) and the sums and counters sized by them; rho and q
    in range (q is a percentile)."""
    saved, rho_max = state.structure, state.config["sdsnn"]["rho_max"]
    for k, layer in enumerate(state.network.layers):
        if not layer.develops:
            continue
        field = f"structure.{k}."
        if not 0 <= saved[f"{k}.rho"] <= rho_max:
            raise _Damaged(f"{field}rho must be in [0, rho_max = {rho_max}], got {saved[f'{k}.rho']}")
        if not 0 <= saved[f"{k}.q"] <= 100:
            raise _Damaged(f"{field}q must be a percentile in [0, 100], got {saved[f'{k}.q']}")
        if layer.store.block_shape:
            _check_kernel_development(saved, k, layer)
            continue
        for name in ("columns", "counter_columns"):
            columns = saved[f"{k}.{name}"]
            if columns.size and (columns[0] < 0 or columns[-1] >= layer.n_out or np.any(np.diff(columns) <= 0)):
                raise _Damaged(f"{field}{name} must be increasing column indices in [0, {layer.n_out})")
        width = saved[f"{k}.columns"].size
        for name in ("grad_sum", "grad_sq_sum"):
            if saved[f"{k}.{name}"].shape != (layer.n_in, width):
                raise _Damaged(f"{field}{name} has shape {saved[f'{k}.{name}'].shape}, expected {(layer.n_in, width)} "
                               f"(inputs x columns)")
        window = saved[f"{k}.window_batches"]
        if window.shape != (width,) or np.any(window < 0):
            raise _Damaged(f"{field}window_batches must be counts >= 0, one per column of columns, got "
                           f"{_short(window)}")
        counter = saved[f"{k}.counter"]
        if counter.shape != (layer.n_in, saved[f"{k}.counter_columns"].size) or np.any(counter < 0):
            raise _Damaged(f"{field}counter must be counts >= 0 of shape "
                           f"{(layer.n_in, saved[f'{k}.counter_columns'].size)} (inputs x counter_columns), "
                           f"got {_short(counter)}")


def _check_kernel_development(saved: dict, k: int, layer) -> None:
    """A convolution's SD-SNN state: sums, windows and counters per (channel, filter)."""
    field, pairs = f"structure.{k}.", layer.store.shape
    for name, shape in (("grad_sum", pairs + layer.store.block_shape), ("grad_sq_sum", pairs + layer.store.block_shape),
                        ("window_batches", pairs), ("counter", pairs)):
        values = saved[f"{k}.{name}"]
        if values.shape != shape:
            raise _Damaged(f"{field}{name} has shape {values.shape}, expected {shape} (channels x filters)")
        if name in ("window_batches", "counter", "grad_sq_sum") and np.any(values < 0):
            raise _Damaged(f"{field}{name} must be >= 0, got {_short(values)}")


def _spine_dtypes() -> dict[str, np.dtype]:
    """SD-SNN's per-synapse arrays (ranges, counters, last magnitudes) and their dtypes."""
    store = SynapseStore(sp.csr_matrix(np.ones((1, 1), np.float32)))
    init_ranges(store)
    return {name: values.dtype for name, values in store.state.items()}


def _check_arrays(prefix: str, arrays: dict, dtypes: dict, required: set, shape: tuple, what: str) -> None:
    """State arrays of one layer (members ``prefix + name``): the ``required`` ones there,
    only names in ``dtypes``, each of its dtype and ``shape`` (``what``), finite."""
    missing = sorted(required - set(arrays))
    if missing:
        raise _Damaged(f"{prefix}{missing[0]} is missing ({what})")
    if shape is None:  # presence only
        return
    for name, values in arrays.items():
        if name not in dtypes:
            raise _Damaged(f"{prefix}{name} is not a state array of this run (it keeps "
                           f"{', '.join(sorted(dtypes)) or 'none'})")
        if values.dtype != dtypes[name] or values.shape != shape:
            raise _Damaged(f"{prefix}{name} must be {dtypes[name]} of shape {shape} ({what}), got {_short(values)}")
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise _Damaged(f"{prefix}{name} holds NaN or infinite values")
        if name == "adam_v" and np.any(values < 0):  # a mean of squares: its square root would be NaN
            raise _Damaged(f"{prefix}{name} holds negative values")


def _check_state_arrays(state: TrainingState, development_step: int) -> None:
    """Optimizer moments (once a step was taken, for every layer with synapses and every
    bias) and, once SD-SNN has developed, its per-synapse arrays in developing layers."""
    moments = dict.fromkeys(MOMENTS[state.optimizer["name"]], np.dtype(np.float32))
    stepped = state.optimizer["steps"] > 0
    spines = _spine_dtypes() if state.config["structure"] == "sdsnn" else {}
    last = len(state.network.layers) - 1
    constrained = state.config["sdsnn"].get("constrain_output", False)
    for k, layer in enumerate(state.network.layers):
        if not hasattr(layer, "store"):
            continue  # pooling: nothing trains
        own_spines = spines if layer.develops or (k == last and constrained) else {}
        required = set(own_spines) if development_step >= 1 else set()
        required |= set(moments) if stepped and layer.store.nnz else set()
        store = layer.store
        # Moments and SD-SNN's arrays are per weight (a kernel's K x K).
        for name in store.state:
            _check_arrays(f"l{k}_state__", {name: store.state[name]}, {**moments, **own_spines},
                          set(), store.data.shape, f"one per {'weight' if store.block_shape else 'synapse'} of layer {k}")
        _check_arrays(f"l{k}_state__", store.state, {**moments, **own_spines}, required, None,
                      f"one per synapse of layer {k}")
        _check_arrays(f"l{k}_bias_state__", layer.bias_state, moments, set(moments) if stepped else set(),
                      layer.bias.shape,
                      f"one per {'neuron' if isinstance(layer, SparseLinear) else 'filter'} of layer {k}")


def _check_in_epoch(state: TrainingState) -> None:
    """The position in an interrupted epoch: a permutation of the training samples, a
    batch boundary inside it, running totals that fit, and the batches it implies."""

    done, batch_size, epochs = state.in_epoch, state.config["batch_size"], state.config["epochs"]
    if done is None:
        return
    fields = [f.name for f in dataclasses.fields(EpochProgress)]
    missing, unexpected = sorted(set(fields) - set(done)), sorted(set(done) - set(fields))
    if missing or unexpected:
        raise _Damaged(f"in_epoch must have the keys {', '.join(fields)} "
                       f"({f'no {missing[0]!r}' if missing else f'an unexpected {unexpected[0]!r}'})")
    if state.epoch >= epochs:
        raise _Damaged(f"in_epoch is set, but epoch {state.epoch} says all {epochs} epochs are finished")
    order = done["order"]
    if not (isinstance(order, np.ndarray) and order.ndim == 1 and order.dtype.kind in "iu"
            and np.array_equal(np.sort(order), np.arange(order.size))):
        raise _Damaged(f"in_epoch.order must be a permutation of the training samples 0..N-1, got {_short(order)}")
    position = done["position"]
    if not (_is_count(position) and position < order.size and position % batch_size == 0):
        raise _Damaged(f"in_epoch.position must be a multiple of batch_size {batch_size} in [0, {order.size}) "
                       f"(samples of the epoch done), got {_short(position)}")
    if not (_is_number(done["total_loss"]) and done["total_loss"] >= 0):
        raise _Damaged(f"in_epoch.total_loss must be a finite number >= 0, got {_short(done['total_loss'])}")
    if not (_is_count(done["correct"]) and done["correct"] <= position):
        raise _Damaged(f"in_epoch.correct must be an integer in [0, position = {position}], "
                       f"got {_short(done['correct'])}")
    per_epoch = -(-order.size // batch_size)
    expected = state.epoch * per_epoch + position // batch_size
    if state.batches_seen != expected:
        raise _Damaged(f"batches_seen is {state.batches_seen}, but {state.epoch} epochs of {per_epoch} batches and "
                       f"{position // batch_size} of this one make {expected}")


# What is read back from the metric rows (a resumed run: the best accuracy, the wall clock,
# the summary of a finished run, the plot; evsim runs: the tables and curves): each must be
# a finite number.
_EPOCH_ROW_READ = ("train_loss", "train_acc", "test_acc", "lr", "compression", "neurons_pruned", "wall_s",
                   "sops_per_sample", "energy_uj_per_sample")
_DEVELOPMENT_ROW_READ = ("batch", "compression", "neurons_pruned")


def check_metric_rows(rows, label: Callable[[int], str] = lambda i: f"metrics[{i}]") -> dict[str, int]:
    """The number of epoch and development rows in ``rows`` (a checkpoint's metrics or
    the lines of ``metrics.jsonl``), each checked: an object of either kind, numbered
    from 1, with the numbers that are read back; ``label(i)`` names row ``i`` in errors.

    Raises
    ------
    ValueError
        Naming the first row that no run of this evsim writes.
    """
    if not isinstance(rows, list):
        raise ValueError(f"metrics must be a list of rows, got {_short(rows)}")
    counts = {"epoch": 0, "development": 0}
    for i, row in enumerate(rows):
        kind = row.get("type") if isinstance(row, dict) else None
        if kind not in counts:
            raise ValueError(f"{label(i)} must be an epoch or development row, got {_short(row)}")
        counts[kind] += 1
        number = "epoch" if kind == "epoch" else "step"
        if not (_is_count(row.get(number)) and row[number] == counts[kind]):
            raise ValueError(f"{label(i)}.{number} must be {counts[kind]} (the {kind} rows count from 1), "
                             f"got {_short(row.get(number))}")
        optional = ("val_acc",) if kind == "epoch" and "val_acc" in row else ()  # runs without a validation split
        for key in (_EPOCH_ROW_READ if kind == "epoch" else _DEVELOPMENT_ROW_READ) + optional:
            if not _is_number(row.get(key)):
                raise ValueError(f"{label(i)}.{key} must be a finite number, got {_short(row.get(key))}")
        accuracies = [key for key in ("train_acc", "test_acc", "val_acc") if kind == "epoch" and key in row]
        if not all(0 <= row[key] <= 1 for key in accuracies):
            raise ValueError(f"{label(i)} has an accuracy outside [0, 1] "
                             f"({', '.join(f'{key} {row[key]}' for key in accuracies)})")
    return counts


def _check_metrics(state: TrainingState, development_step: int) -> None:
    """One epoch row per finished epoch and one development row per step, numbered from 1."""
    try:
        counts = check_metric_rows(state.metrics)
    except ValueError as exc:
        raise _Damaged(str(exc)) from None
    if counts["epoch"] != state.epoch:
        raise _Damaged(f"metrics hold {counts['epoch']} epoch rows, but epoch is {state.epoch}")
    if counts["development"] != development_step:
        raise _Damaged(f"metrics hold {counts['development']} development rows, but the structure controller "
                       f"took {development_step} steps")


def _check_training_state(state: TrainingState) -> None:
    """Raise _Damaged naming the first value of ``state`` (just read from a file, its
    configuration already checked) that a run of this evsim could not have written."""
    epochs = state.config["epochs"]
    if state.run_id is not None and not isinstance(state.run_id, str):
        raise _Damaged(f"run_id must be a string, got {_short(state.run_id)}")
    if not isinstance(state.data_source, str):
        raise _Damaged(f"data_source must be a string, got {_short(state.data_source)}")
    if not (_is_count(state.epoch) and state.epoch <= epochs):
        raise _Damaged(f"epoch must be an integer in [0, {epochs}] (finished epochs), got {_short(state.epoch)}")
    if not _is_count(state.batches_seen):
        raise _Damaged(f"batches_seen must be an integer >= 0, got {_short(state.batches_seen)}")
    optimizer = state.optimizer
    if not isinstance(optimizer, dict) or set(optimizer) != {"name", "steps"}:
        raise _Damaged(f"optimizer must be {{\"name\": ..., \"steps\": ...}}, got {_short(optimizer)}")
    if optimizer["name"] != state.config["optimizer"]:
        raise _Damaged(f"optimizer.name is {_short(optimizer['name'])}, but the run's configuration says "
                       f"{state.config['optimizer']!r}")
    if not _is_count(optimizer["steps"]) or optimizer["steps"] != state.batches_seen:
        raise _Damaged(f"optimizer.steps must equal batches_seen {state.batches_seen} (one step per batch), "
                       f"got {_short(optimizer['steps'])}")
    if not isinstance(state.rng, dict) or set(state.rng) != {"trainer"}:
        raise _Damaged(f"rng must hold the state of the trainer's generator ('trainer') only, got {_short(state.rng)}")
    _check_bit_generator("rng.trainer", state.rng["trainer"])
    step = _check_structure(state)
    _check_state_arrays(state, step)
    _check_in_epoch(state)
    _check_metrics(state, step)


def _fix(path: Path) -> str:
    """How to go on from the damaged checkpoint ``path``."""
    if path.name == CHECKPOINT_LATEST:
        return (f"restore the file, or resume from {CHECKPOINT_BEST} by copying it to {CHECKPOINT_LATEST}, or "
                "re-run training")
    return "restore the file, or re-run training"


def load_checkpoint(path: Path, path_option: str = "auto") -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`, and check it: every value a
    run continues from must be one a run of this evsim could have written.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a training checkpoint, or is truncated,
        corrupt or inconsistent (naming the file and the first bad field).
    ConfigError
        If ``path_option`` is not a propagation path.
    """
    check_path_option(path_option)
    path = Path(path)
    check_regular(path, "evsim checkpoint", CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; is {path.parent} a run folder written by evsim train?")
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if not isinstance(meta, dict) or meta.get("kind") != "training-checkpoint":
                raise CheckpointError(f"{path}: not a training checkpoint (a network-only file?)")
            if meta["format"] not in (2, CHECKPOINT_FORMAT):
                raise CheckpointError(f"{path}: checkpoint format {meta['format']} is not supported by this "
                                      f"evsim (format {CHECKPOINT_FORMAT}); resume it with the evsim that wrote "
                                      f"it, or start the run again")
            optional = ("network", "run_id")  # run_id: absent from checkpoints older than run ids
            fields = [field.name for field in dataclasses.fields(TrainingState) if field.name not in optional]
            for name in fields:
                if name not in meta:
                    raise _Damaged(f"no {name!r} in meta")
            stored_config(meta["config"], path)
            structure = None if meta["structure"] is None else _unpack(meta["structure"], f, "structure")
            if meta["format"] == 2 and structure is not None and meta["config"]["structure"] == "sdsnn":
                structure = _sdsnn_from_format_2(structure)
            state = TrainingState(
                network=_network_from(f, meta, path_option, with_state=True),
                config=meta["config"], data_source=meta["data_source"], epoch=meta["epoch"],
                batches_seen=meta["batches_seen"], metrics=meta["metrics"], optimizer=meta["optimizer"],
                rng=meta["rng"],
                structure=structure,
                in_epoch=None if meta["in_epoch"] is None else _unpack(meta["in_epoch"], f, "in_epoch"),
                run_id=meta.get("run_id"),
            )
            _check_training_state(state)
            return state
    except CheckpointError:
        raise
    except _Damaged as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc}); {_fix(path)}") from None
    except CODE_ERRORS:
        raise
    except PermissionError as exc:  # the file may be whole: replacing it would lose its epochs
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror}); fix its permissions") from None
    except Exception as exc:  # noqa: BLE001 -- np.load and zipfile raise many kinds on a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason(exc)}); {_fix(path)}") from None
