"""Synaptic-operation (SOP) counting and an energy model that respects pruning.

Counts are taken from the simulation itself, per layer and per time step:

- *events*: delivered input events (a count-frame value k is k events);
- *SOPs* (accumulates): for every delivered event, the real fan-out of its row in
  the CSR store, so pruned synapses cost nothing;
- *MACs*: the same, for a layer fed analog values (direct-encoded images), where each
  delivered value needs a multiply-accumulate;
- *neuron updates*: T x B x alive neurons;
- *spikes* per neuron (firing rates).

Energy is an *estimate* from a per-operation table (45 nm figures used across the SNN
literature: 0.9 pJ per accumulate, 4.6 pJ per multiply-accumulate; Horowitz, ISSCC
2014), printed with every report. Three rows compare, on the same inputs: this
network; the same architecture unpruned (dense synapses, same spikes); and the dense
non-spiking network of the same shape (one MAC per synapse per sample).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


from evsim.errors import ConfigError, ShapeError
from evsim.kernels.energy import _count_slots
from evsim.kernels.events import Events, StaticDrive
from evsim.layers import LAYER_KINDS, Layer


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (configurable; defaults: 45 nm CMOS)."""

    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    e_neuron_pj: float = 0.0

    def __post_init__(self):
        for name, value in vars(self).items():
            if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
                    or not 0 <= value < np.inf):
                raise ConfigError(f"EnergyModel's {name} must be a finite number >= 0 (picojoules), got {value!r}")

    def describe(self) -> str:
        return (f"energy model (an estimate, not a measurement): {self.e_ac_pj} pJ/accumulate, "
                f"{self.e_mac_pj} pJ/multiply-accumulate, {self.e_neuron_pj} pJ/neuron update")


@dataclass
class LayerCounts:
    """Exact counts of one layer, summed over samples; arrays are per time step."""

    n_in: int
    n_out: int
    synapses: int
    dense_synapses: int
    ann_macs: int
    analog_input: bool
    events: np.ndarray
    ops: np.ndarray
    ops_unpruned: np.ndarray
    neuron_updates: int = 0
    spikes: np.ndarray | None = None  # per unit, summed over T and samples (a pooling's: its output values)
    spiking: bool = True  # False for pooling: no neurons, its outputs are not spikes
    weights: int = 0  # nonzero weights (a kernel's K x K each)
    dense_weights: int = 0  # weights of the same layer with every synapse present

    @property
    def sops(self) -> float:
        return 0.0 if self.analog_input else float(self.ops.sum())

    @property
    def macs(self) -> float:
        return float(self.ops.sum()) if self.analog_input else 0.0


def count_layer(layer: Layer, trace, analog_input: bool, output_events: Events | None = None) -> LayerCounts:
    """Counts of one forward pass of ``layer`` from its recorded trace.

    ``output_events`` (the next layer's input events) are this layer's spikes as a
    list: counting them is O(spikes) instead of a pass over the ``[T, B, N]`` array.
    """
    events: Events | StaticDrive = trace.events_in
    per_step_events, per_step_ops, per_step_unpruned = _ops(events, layer.fan_out().astype(np.float64),
                                                             layer.fan_out_unpruned().astype(np.float64),
                                                             analog_input)
    if isinstance(output_events, StaticDrive):  # a pooling of the network's analog input
        spikes = output_events.values.sum(axis=0, dtype=np.float64) * output_events.n_steps
    elif output_events is not None:
        # Weighted by value: a pooled output counts as its value (the share of its window
        # that spiked, for average pooling), so a pooling's rate is its mean output.
        spikes = np.bincount(output_events.idx, weights=output_events.val, minlength=layer.n_out)
    else:
        spikes = np.zeros(layer.n_out)
        spikes[layer.alive_index] = trace.spikes.sum(axis=(0, 1), dtype=np.int64)
    store = getattr(layer, "store", None)  # pooling has no synapses and no neurons
    neurons = layer.alive_index.size if getattr(layer, "spiking", True) else 0
    return LayerCounts(layer.n_in, layer.n_out, 0 if store is None else store.nnz, layer.dense_synapses,
                       layer.ann_macs(), analog_input, per_step_events, per_step_ops, per_step_unpruned,
                       events.n_steps * events.batch * neurons, spikes, bool(neurons) or store is not None,
                       0 if store is None else int(np.count_nonzero(store.data)), layer.dense_weights)


def _ops(events: Events | StaticDrive, fan_out: np.ndarray, fan_out_unpruned: np.ndarray,
         analog_input: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per time step: the events delivered (a count k is k events; an analog value one) and
    the operations they cost with ``fan_out`` and with ``fan_out_unpruned`` per input unit."""
    if isinstance(events, StaticDrive):
        # The same input at every step: every step does the work of one.
        weights = (events.values != 0) if analog_input else events.values.astype(np.float64)
        per_sample = weights.sum(axis=0)
        return tuple(np.full(events.n_steps, value) for value in
                     (weights.sum(), per_sample @ fan_out, per_sample @ fan_out_unpruned))
    # An analog value costs one multiply-accumulate per synapse whatever its size; a count k is k events.
    weights = np.ones_like(events.val) if analog_input else events.val
    per_slot = np.empty((3, events.n_steps * events.batch))
    _count_slots(events.ptr, events.idx, weights, fan_out, fan_out_unpruned, *per_slot)
    per_step = per_slot.reshape(3, events.n_steps, events.batch).sum(axis=2)
    return per_step[0], per_step[1], per_step[2]


@dataclass
class EnergyReport:
    """Counts of a network over ``samples`` inputs, with energy estimates and ratios."""

    samples: int
    time_steps: int
    layers: list[LayerCounts]
    model: EnergyModel = field(default_factory=EnergyModel)
    data_source: str = ""

    def add(self, other: "EnergyReport") -> "EnergyReport":
        """Accumulate another batch's report (same network, same T: the counts are per step).

        Raises
        ------
        ShapeError
            If the batches differ in T.
        """
        if other.time_steps != self.time_steps:
            raise ShapeError(f"batches of T = {self.time_steps} and T = {other.time_steps}: the counts are per time "
                             "step, so every batch profiled together needs the same T; profile each T on its own")
        for mine, theirs in zip(self.layers, other.layers):
            mine.events = mine.events + theirs.events
            mine.ops = mine.ops + theirs.ops
            mine.ops_unpruned = mine.ops_unpruned + theirs.ops_unpruned
            mine.neuron_updates += theirs.neuron_updates
            mine.spikes = mine.spikes + theirs.spikes
        self.samples += other.samples
        return self

    def _energy_pj(self, acs: float, macs: float, neuron_updates: float) -> float:
        return acs * self.model.e_ac_pj + macs * self.model.e_mac_pj + neuron_updates * self.model.e_neuron_pj

    def rows(self) -> list[dict]:
        """This network, the same architecture unpruned, and the dense ANN, per sample."""
        n = max(self.samples, 1)
        updates = sum(layer.neuron_updates for layer in self.layers) / n
        acs = sum(layer.sops for layer in self.layers) / n
        macs = sum(layer.macs for layer in self.layers) / n
        acs_dense = sum(0 if l.analog_input else float(l.ops_unpruned.sum()) for l in self.layers) / n
        macs_dense = sum(float(l.ops_unpruned.sum()) if l.analog_input else 0 for l in self.layers) / n
        ann_macs = float(sum(layer.ann_macs for layer in self.layers))
        all_updates = sum(layer.n_out for layer in self.layers if layer.spiking) * self.time_steps
        return [
            {"network": "this network", "acs": acs, "macs": macs,
             "energy_uj": self._energy_pj(acs, macs, updates) * 1e-6},
            {"network": "same architecture, unpruned", "acs": acs_dense, "macs": macs_dense,
             "energy_uj": self._energy_pj(acs_dense, macs_dense, all_updates) * 1e-6},
            {"network": "dense non-spiking (ANN) of the same shape", "acs": 0.0, "macs": ann_macs,
             "energy_uj": self._energy_pj(0, ann_macs, 0) * 1e-6},
        ]

    def neurobench(self) -> dict:
        """NeuroBench-style metrics (per sample): ``Dense``, the operations of every layer run
        densely at every step (a convolution's at every output cell and tap, as
        ``ann_macs`` counts them); ``ConnectionSparsity``, the weights zero or absent
        (a kernel's K x K each)."""
        n = max(self.samples, 1)
        weights = sum(layer.weights for layer in self.layers)
        dense_weights = sum(layer.dense_weights for layer in self.layers)
        spikes = sum(float(layer.spikes.sum()) for layer in self.layers if layer.spiking)
        slots = sum(layer.n_out for layer in self.layers if layer.spiking) * self.time_steps * n
        return {
            "Effective_ACs": sum(layer.sops for layer in self.layers) / n,
            "Effective_MACs": sum(layer.macs for layer in self.layers) / n,
            "Dense": float(sum(layer.ann_macs for layer in self.layers) * self.time_steps),
            "ConnectionSparsity": 1 - weights / dense_weights,
            "ActivationSparsity": 1 - spikes / slots if slots else 0.0,
        }

    def summary(self) -> dict:
        """JSON-ready summary (per sample)."""
        n = max(self.samples, 1)
        rows = self.rows()
        return {
            "samples": self.samples,
            "time_steps": self.time_steps,
            "data_source": self.data_source,
            "energy_model": asdict(self.model),
            "note": self.model.describe(),
            "sops_per_sample": rows[0]["acs"],
            "macs_per_sample": rows[0]["macs"],
            "energy_uj_per_sample": rows[0]["energy_uj"],
            "rows": rows,
            "ratios": {"unpruned_over_this": rows[1]["energy_uj"] / rows[0]["energy_uj"] if rows[0]["energy_uj"] else None,
                       "ann_over_this": rows[2]["energy_uj"] / rows[0]["energy_uj"] if rows[0]["energy_uj"] else None},
            "neurobench": self.neurobench(),
            "layers": [{"layer": k, "n_in": l.n_in, "n_out": l.n_out, "synapses": l.synapses,
                        "analog_input": l.analog_input, "events_per_sample": float(l.events.sum()) / n,
                        "sops_per_sample": l.sops / n, "macs_per_sample": l.macs / n,
                        "sops_unpruned_per_sample": float(l.ops_unpruned.sum()) / n,
                        "ops_per_step": (l.ops / n).tolist(),
                        "firing_rate": float(l.spikes.sum()) / (l.n_out * self.time_steps * n)}
                       for k, l in enumerate(self.layers)],
        }

    def table(self) -> str:
        """Human-readable report."""
        lines = [self.model.describe(), f"{self.samples} samples, T = {self.time_steps}"
                 + (f", data: {self.data_source}" if self.data_source else ""),
                 f"{'':44s} {'ACs/sample':>14s} {'MACs/sample':>14s} {'energy/sample':>14s}"]
        for row in self.rows():
            lines.append(f"{row['network']:44s} {row['acs']:14,.0f} {row['macs']:14,.0f} {row['energy_uj']:11.3f} uJ")
        s = self.summary()["ratios"]
        if s["unpruned_over_this"]:
            lines.append(f"unpruned / this: {s['unpruned_over_this']:.2f}x   ANN / this: {s['ann_over_this']:.2f}x")
        lines.append("per layer: " + "; ".join(
            f"L{k} {l.n_in}->{l.n_out}: {(l.sops or l.macs) / max(self.samples, 1):,.0f} "
            f"{'MACs' if l.analog_input else 'SOPs'} (unpruned {float(l.ops_unpruned.sum()) / max(self.samples, 1):,.0f})"
            for k, l in enumerate(self.layers)))
        return "\n".join(lines)


def count_network(network, traces: list, analog_input: bool, batch: int,
                  model: EnergyModel = EnergyModel(), data_source: str = "") -> EnergyReport:
    """Report for one forward pass (``traces`` from :meth:`Network.forward`).

    Raises
    ------
    ConfigError
        If the input, counted as events (not ``analog_input``), holds negative values, or a
        layer is not one of evsim's (whose operations this counter knows).
    """
    for k, layer in enumerate(network.layers):
        if not isinstance(layer, tuple(LAYER_KINDS.values())):
            raise ConfigError(f"counting operations covers evsim's layers ({', '.join(LAYER_KINDS)}); layer {k} is a "
                              f"{type(layer).__name__}")
    first = traces[0].events_in
    values = first.values if isinstance(first, StaticDrive) else first.val
    if not analog_input and values.size and values.min() < 0:
        # A count k costs k operations: a negative one would subtract work that was done. The
        # layers above receive spikes and pooled spikes, never negative.
        raise ConfigError(f"the input holds negative values (down to {float(values.min()):g}), which are no event "
                          "counts; count signed analog input with analog_input=True (one MAC per value and synapse)")
    outputs = [trace.events_in for trace in traces[1:]] + [None]
    layers = []
    for layer, trace, out in zip(network.layers, traces, outputs):
        layers.append(count_layer(layer, trace, analog_input, out))
        # A pooling hands the analog input on as analog values; a spiking layer hands on spikes.
        analog_input = analog_input and not getattr(layer, "spiking", True)
    return EnergyReport(batch, traces[0].events_in.n_steps, layers, model, data_source)
