"""Saving and loading trained networks: plain NumPy ``.npz`` + JSON, no pickled code.

Files are written atomically (temporary file, fsync, rename), so a reader sees
either the previous complete file or the new complete one.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from evsim.errors import CheckpointError
from evsim.files import write_bytes_atomic
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.synapses import SynapseStore

NETWORK_FILE = "network.npz"


def save_network(path: Path, network: Network) -> None:
    """Write the network's synapses (CSR), biases, alive masks and neuron parameters."""
    arrays = {"meta": np.array(json.dumps({"format": 1, "n_layers": len(network.layers),
                                           "lif": network.lif._asdict()}))}
    for k, layer in enumerate(network.layers):
        arrays.update({f"l{k}_indptr": layer.store.indptr, f"l{k}_indices": layer.store.indices,
                       f"l{k}_data": layer.store.data, f"l{k}_shape": np.array(layer.store.shape),
                       f"l{k}_bias": layer.bias, f"l{k}_alive": layer.alive,
                       f"l{k}_develops": np.array(layer.develops)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(Path(path), buffer.getvalue())


def load_network(path: Path, path_option: str = "auto") -> Network:
    """Read a network written by :func:`save_network`.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupt or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained network here; train a run first (evsim train --out RUN_DIR)")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            layers = []
            for k in range(meta["n_layers"]):
                import scipy.sparse as sp

                matrix = sp.csr_matrix((f[f"l{k}_data"], f[f"l{k}_indices"], f[f"l{k}_indptr"]),
                                       shape=tuple(f[f"l{k}_shape"]))
                layer = SparseLinear(SynapseStore(matrix), f[f"l{k}_bias"], path=path_option,
                                     develops=bool(f[f"l{k}_develops"]))
                layer.alive = f[f"l{k}_alive"].astype(bool)
                layer.rebuild()
                layers.append(layer)
        return Network(layers, LIFParameters(**meta["lif"]))
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated network file ({exc}); retrain or restore it") from None
