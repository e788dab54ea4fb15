"""How much of a network structural development removed, measured two ways.

- As the SD-SNN authors' code computes compression: the weights that are zero or absent,
  over every convolution and fully connected weight (a kernel counts its K x K), biases
  excluded (:func:`zero_or_absent`).
- Per layer, the synapse sparsity (absent synapses: kernels of a convolution, weights of a
  fully connected layer) and the fraction of units (filters, neurons) dead.

The SOPs and energy it saves are the energy report's (:mod:`evsim.energy`): the same
activity through every synapse of the architecture against through the ones that exist.
"""
from __future__ import annotations

import numpy as np


def zero_or_absent(network) -> float:
    """The authors' compression: weights zero or absent over all the architecture's weights."""
    present = sum(int(np.count_nonzero(layer.store.data)) for layer in network.layers if hasattr(layer, "store"))
    return 1.0 - present / network.dense_weights if network.dense_weights else 0.0


def developing_sparsity(network) -> float:
    """The weights zero or absent in the developing layers over those layers' weights: the
    ``target_sparsity`` at which magnitude pruning or SET (which prune exactly the
    developing layers) leave as many weights as this network has, so that a baseline tied
    to an SD-SNN run (``take = { target_sparsity = "developing_sparsity" }``) reaches its
    compression. Taking ``compression`` instead falls short by the share of the layers
    that never develop."""
    layers = [layer for layer in network.layers if hasattr(layer, "store") and layer.develops]
    dense = sum(layer.dense_weights for layer in layers)
    present = sum(int(np.count_nonzero(layer.store.data)) for layer in layers)
    return 1.0 - present / dense if dense else 0.0


def units_with_input(layer) -> np.ndarray:
    """bool ``[n_out]``: the units (neurons, filters) alive with at least one incoming
    synapse. The others are pruned: dead, or left by synapse pruning (magnitude, SET)
    with nothing to listen to (a bias alone does not carry the input)."""
    return layer.alive & (layer.store.fan_in() > 0)


def layer_report(network) -> list[dict]:
    """Per layer with synapses: its label (``conv2``, ``fc1``), kind, whether it develops,
    weights present and of the full architecture, the authors' compression of the layer
    (zero or absent weights), synapse sparsity and the fraction of units dead."""
    rows = []
    for label, layer in zip(network.layer_labels(), network.layers):
        if not hasattr(layer, "store"):
            continue
        store = layer.store
        nonzero = int(np.count_nonzero(store.data))
        rows.append({
            "layer": label, "kind": layer.kind, "develops": bool(layer.develops),
            "weights": store.nnz * store.block_size, "dense_weights": layer.dense_weights,
            "zero_or_absent": round(1.0 - nonzero / layer.dense_weights, 6),
            "synapse_sparsity": round(1.0 - store.nnz / layer.dense_synapses, 6),
            "units_dead": round(1.0 - float(units_with_input(layer).mean()), 6),
        })
    return rows


def format_report(rows: list[dict], total: float) -> str:
    """The per-layer report as a table, with the network's total; the columns as wide as
    their largest number (a layer of 12,288,000 weights)."""
    name = max([len("layer")] + [len(row["layer"]) + 1 for row in rows]) + 1
    count = max([len("weights")] + [len(f"{row[key]:,}") for row in rows for key in ("weights", "dense_weights")]) + 3
    lines = [f"{'layer':<{name}}{'weights':>{count}}{'of':>{count}}{'zero/absent':>13}{'synapses absent':>17}"
             f"{'units dead':>12}"]
    for row in rows:
        lines.append(f"{row['layer'] + ('*' if row['develops'] else ''):<{name}}{row['weights']:>{count},}"
                     f"{row['dense_weights']:>{count},}{100 * row['zero_or_absent']:>12.1f}%"
                     f"{100 * row['synapse_sparsity']:>16.1f}%{100 * row['units_dead']:>11.1f}%")
    lines.append(f"network compression (zero or absent weights, the authors' measure): {100 * total:.1f}%"
                 + ("   (* develops)" if any(row["develops"] for row in rows) else ""))
    return "\n".join(lines)
