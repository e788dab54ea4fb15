"""What a network does on its inputs: spikes per layer, membrane potentials, firing rates
and operation counts, recorded from one forward pass.

:func:`record` runs :meth:`Network.forward` and keeps what its layer traces hold,
mapped back from the alive (compacted) neurons to every neuron of the layer:

>>> rec = evsim.record(network, drive, membrane=True)   # drive: float32 [T, B, n_in]
>>> rec.spikes[0].shape                                 # layer 0: uint8 [T, B, n_out]
>>> rec.firing_rates()[0]                               # spikes per neuron and step

:func:`plot_inspection` draws spike rasters of a few samples, histograms of the firing
rates over neurons, the firing rate per time step and the operations per time step
(counted as :mod:`evsim.energy` counts them); ``evsim inspect RUN`` is its command.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evsim.data.encoding import SampleSeeds, encode_events
from evsim.energy import EnergyReport, count_network
from evsim.errors import ConfigError
from evsim.evaluate import check_whole, checked_split, encoding_steps, eval_seeds
from evsim.memory import (INSPECT_STEP_BYTES, batch_bytes, direct_membrane_bytes, input_events,
                          refuse_beyond_memory)
from evsim.kernels.events import Events, StaticDrive
from evsim.network import Network
from evsim.plots import _log_if_spread, _pyplot, floor_at_zero, save_figure, zero_noted

# Samples per forward pass of evsim inspect: its batch's dense recordings are T x n bytes a
# sample (the DVS-Gesture paper network at T = 64: 33 MB), so a few GiB at most.
INSPECT_BATCH_SIZE = 32


class _Statistics:
    """The statistics :func:`plot_inspection` and ``evsim inspect`` show, of a
    :class:`Recording` or an :class:`Inspection` (``alive``, ``energy``,
    ``firing_rates()``, ``rate_per_step()`` and ``samples`` are theirs; ``spikes`` holds at
    least one sample's)."""

    @property
    def time_steps(self) -> int:
        return self.spikes[0].shape[0]

    def summary(self) -> dict:
        """JSON-ready statistics per layer: firing rates, rate per step, operations per step."""
        energy = self.energy.summary()
        layers = []
        for k, (rates, per_step, alive) in enumerate(zip(self.firing_rates(), self.rate_per_step(), self.alive)):
            layers.append({"layer": k, "neurons": int(alive.size), "alive": int(alive.sum()),
                           "firing_rate_alive": float(rates[alive].mean()) if alive.any() else 0.0,
                           "silent_alive": int(np.sum(rates[alive] == 0)),
                           "firing_rate_per_step": per_step.tolist(),
                           "ops_per_step": energy["layers"][k]["ops_per_step"]})
        return {"samples": self.samples, "time_steps": self.time_steps, "layers": layers}


@dataclass
class Recording(_Statistics):
    """One forward pass of a network over a batch of ``B`` samples for ``T`` steps.

    Attributes
    ----------
    spikes : per layer, uint8 ``[T, B, n_out]`` (1 = spike); pruned (dead) neurons are
        all zeros: they are not simulated and never fire. A pooling layer holds its pooled
        output (float32 for average pooling), and NaN potentials.
    u : per layer, float32 ``[T, B, n_out]`` membrane potentials after each step's
        input and before its reset (NaN for dead neurons), or None unless asked for.
    alive : per layer, bool ``[n_out]``: the neurons that have incoming synapses (of a
        convolution: the cells of its alive filters).
    counts : float32 ``[B, n_classes]`` output spike counts (the prediction is the argmax).
    energy : the operation counts of this pass, per layer and time step.
    """

    spikes: list[np.ndarray]
    u: list[np.ndarray] | None
    alive: list[np.ndarray]
    counts: np.ndarray
    energy: EnergyReport

    @property
    def samples(self) -> int:
        return self.spikes[0].shape[1]

    def firing_rates(self) -> list[np.ndarray]:
        """Per layer, float64 ``[n_out]``: each neuron's spikes per step, over all samples (a
        pooling's: its mean output, as ``evsim profile``'s ``firing_rate`` counts it)."""
        return [s.mean(axis=(0, 1), dtype=np.float64) for s in self.spikes]

    def rate_per_step(self) -> list[np.ndarray]:
        """Per layer, float64 ``[T]``: the fraction of the layer's alive neurons that fire at each step."""
        return [s[:, :, alive].mean(axis=(1, 2), dtype=np.float64) if alive.any() else np.zeros(s.shape[0])
                for s, alive in zip(self.spikes, self.alive)]


def record(network: Network, drive, membrane: bool = False, analog_input: bool | None = None) -> Recording:
    """Run ``network`` on ``drive`` and record every layer's spikes (and potentials).

    Parameters
    ----------
    network : the network.
    drive : what :meth:`Network.forward` takes: float32 ``[T, B, n_in]`` spikes, counts
        or analog values, :class:`~evsim.kernels.events.Events`, or a
        :class:`~evsim.kernels.events.StaticDrive` (analog input, counted as MACs).
    membrane : also keep the membrane potentials (4 bytes per neuron, step and sample).
    analog_input : count the first synaptic layer's work as MACs (analog input, signed values
        allowed), as :func:`evsim.profile` takes it; by default, for a
        :class:`~evsim.kernels.events.StaticDrive` only.

    Returns
    -------
    Recording
        Arrays over every neuron of each layer (alive neurons mapped back through
        ``layer.alive_index``).

    Raises
    ------
    ShapeError
        If ``drive`` does not fit the network's input (from :meth:`Network.forward`).
    """
    counts, traces = network.forward(drive, record=membrane)
    spikes, potentials, alive = [], [] if membrane else None, []
    for layer, trace in zip(network.layers, traces):
        if not hasattr(trace, "spikes"):  # a pooling layer: its pooled events, no neurons of its own
            spikes.append(_dense(trace.events_out, layer.n_out))
            if membrane:
                potentials.append(np.full(spikes[-1].shape, np.nan, dtype=np.float32))
            alive.append(_alive_units(layer))
            continue
        n_steps, batch = trace.spikes.shape[:2]
        full = np.zeros((n_steps, batch, layer.n_out), dtype=np.uint8)
        full[:, :, layer.alive_index] = trace.spikes
        spikes.append(full)
        if membrane:
            u = np.full((n_steps, batch, layer.n_out), np.nan, dtype=np.float32)
            u[:, :, layer.alive_index] = trace.u[:, :, :layer.alive_index.size]
            potentials.append(u)
        alive.append(_alive_units(layer))
    analog = isinstance(drive, StaticDrive) if analog_input is None else analog_input
    energy = count_network(network, traces, analog, counts.shape[0])
    return Recording(spikes, potentials, alive, counts, energy)


def _alive_units(layer) -> np.ndarray:
    """bool ``[n_out]``: the layer's simulated units (a convolution's ``alive`` is per filter,
    its units are the filter's cells)."""
    units = np.zeros(layer.n_out, dtype=bool)
    units[layer.alive_index] = True
    return units


def _dense(events: Events | StaticDrive, n: int) -> np.ndarray:
    """``[T, B, n]`` of ``events`` (slots step-major, as :func:`dense_to_events` makes them):
    uint8 where the values are spikes (max pooling), float32 otherwise (average pooling);
    a static drive's values at every step."""
    if isinstance(events, StaticDrive):
        return np.repeat(events.values[None], events.n_steps, axis=0)
    slots = np.repeat(np.arange(events.n_steps * events.batch), np.diff(events.ptr))
    spikes = bool(np.all(events.val == np.round(events.val)) and (events.val <= 255).all())
    out = np.zeros((events.n_steps * events.batch, n), dtype=np.uint8 if spikes else np.float32)
    out[slots, events.idx] = events.val
    return out.reshape(events.n_steps, events.batch, n)


@dataclass
class Inspection(_Statistics):
    """A network's passes over many samples, recorded batch by batch (:func:`record_dataset`):
    the statistics over all of them, and the spikes of only the first few (their rasters),
    so that its memory does not grow with the samples.

    Attributes
    ----------
    spikes : per layer, ``[T, kept, n_out]`` as :attr:`Recording.spikes`, of the first
        ``kept`` samples.
    rates : per layer, float64 ``[n_out]``: :meth:`Recording.firing_rates` over all samples.
    per_step : per layer, float64 ``[T]``: :meth:`Recording.rate_per_step` over all samples.
    alive, counts, energy : as :class:`Recording`'s, over all samples.
    """

    spikes: list[np.ndarray]
    rates: list[np.ndarray]
    per_step: list[np.ndarray]
    alive: list[np.ndarray]
    counts: np.ndarray
    energy: EnergyReport

    @property
    def samples(self) -> int:
        return self.counts.shape[0]

    def firing_rates(self) -> list[np.ndarray]:
        return self.rates

    def rate_per_step(self) -> list[np.ndarray]:
        return self.per_step


def record_dataset(network: Network, dataset, split: str = "test", samples: int = 256, time_steps: int | None = None,
                   seed: int = 0, batch_size: int = INSPECT_BATCH_SIZE,
                   keep: int = 10) -> tuple[Inspection, np.ndarray]:
    """:func:`record` on the first ``samples`` samples of ``dataset``'s ``split``, encoded
    as training does (rate coding drawn with a generator seeded by ``seed``, as
    ``evsim eval`` draws it), ``batch_size`` samples at a time; the spikes of the first
    ``keep`` samples are kept whole. Returns the inspection and the samples' labels.

    Raises
    ------
    ConfigError
        If the split is unknown or empty, the network does not fit the dataset,
        ``samples``, ``batch_size``, ``time_steps`` (>= 1), ``keep`` or ``seed`` (>= 0) is
        not a whole number in range, or a batch would not fit in memory
        (:mod:`evsim.memory`; the fix: a smaller ``batch_size``).
    """
    batch_size, keep = check_whole("batch_size", batch_size, 1), check_whole("keep", keep, 0)
    data = checked_split(network, dataset, split)
    steps = encoding_steps(dataset, time_steps)
    check_whole("seed", seed, 0)
    n = min(check_whole("samples", samples, 1), len(data))
    inputs = data.inputs[:n]
    batch = min(batch_size, n)
    traces, events = batch_bytes(sum(network.sizes[1:]), steps, batch, INSPECT_STEP_BYTES,
                                 input_events(inputs, dataset.encoding, steps))
    traces += direct_membrane_bytes(network.sizes, steps, batch, dataset.encoding)
    raster_bytes = 4 * steps * min(keep, n) * sum(network.sizes[1:])  # the rasters' samples, float32 at most
    refuse_beyond_memory(f"inspecting a batch of {batch} samples over {steps} steps",
                         {"traces and recordings": traces, "input events": events, "rasters": raster_bytes},
                         "reduce --batch-size (inspect records the samples batch by batch)")
    sums = rate_sums = None
    counts, energy = [], None
    for start in range(0, n, batch):
        rec = record(network, encode_events(inputs[start:start + batch], dataset.encoding, steps,
                                            SampleSeeds(eval_seeds(seed), start)))
        if sums is None:  # the first batch
            sums = [np.zeros(s.shape[2]) for s in rec.spikes]
            rate_sums = [np.zeros(steps) for _ in rec.spikes]
            kept = [s[:, :keep].copy() for s in rec.spikes]
        elif kept[0].shape[1] < keep:
            kept = [np.concatenate([k, s[:, :keep - k.shape[1]]], axis=1) for k, s in zip(kept, rec.spikes)]
        for k, (s, alive) in enumerate(zip(rec.spikes, rec.alive)):
            per_neuron = s.sum(axis=1, dtype=np.float64)  # [T, n]: no copy of the batch's spikes
            sums[k] += per_neuron.sum(axis=0)
            rate_sums[k] += per_neuron[:, alive].sum(axis=1)
        counts.append(rec.counts)
        energy = rec.energy if energy is None else energy.add(rec.energy)
    alive = rec.alive
    rates = [total / (steps * n) for total in sums]
    per_step = [total / (n * a.sum()) if a.any() else np.zeros(steps) for total, a in zip(rate_sums, alive)]
    return Inspection(kept, rates, per_step, alive, np.concatenate(counts), energy), np.asarray(data.labels[:n])


def sample_drive(inputs, index: int, encoding: str, time_steps: int, seed: int = 0) -> Events | StaticDrive:
    """The drive of sample ``index`` of ``inputs`` (a split's inputs) alone, encoded as
    evaluation encodes it in any batch (:class:`~evsim.data.encoding.SampleSeeds`)."""
    return encode_events(inputs[index:index + 1], encoding, time_steps, SampleSeeds(eval_seeds(seed), index))


def record_sample(network: Network, dataset, split: str, index: int, time_steps: int | None = None,
                  seed: int = 0) -> tuple[Recording, Events | StaticDrive]:
    """:func:`record` on sample ``index`` of ``dataset``'s ``split`` alone (a batch of one,
    encoded by :func:`sample_drive`). Returns the recording and the drive it was fed.

    Raises
    ------
    ConfigError
        If the split is unknown or empty, ``index`` is out of it, or the network does not
        fit the dataset (inputs, their shape, classes).
    """
    data = checked_split(network, dataset, split)
    if not 0 <= index < len(data):
        raise ConfigError(f"index {index} out of range: the {split} split has {len(data)} samples")
    steps = encoding_steps(dataset, time_steps)
    drive = sample_drive(data.inputs, index, dataset.encoding, steps, seed)
    return record(network, drive), drive


def dense_drive(drive: Events | StaticDrive, n_in: int) -> np.ndarray:
    """float32 ``[T, B, n_in]``: what ``drive`` feeds each of the ``n_in`` inputs at each
    step (the same analog values at every step for a :class:`StaticDrive`)."""
    if isinstance(drive, StaticDrive):
        return np.broadcast_to(drive.values[None], (drive.n_steps,) + drive.values.shape).astype(np.float32)
    return _dense(drive, n_in).astype(np.float32)


def layer_names(network: Network) -> list[str]:
    """What each layer of ``network`` is, for figure labels: ``15C3 conv``, ``AP2 pool,
    values`` (pooled values, no neurons), ``300 hidden``, ``10 output``."""
    names = []
    for k, layer in enumerate(network.layers):
        if not getattr(layer, "spiking", True):
            names.append(f"{layer.describe()} pool, values")
        elif hasattr(layer, "filters"):
            names.append(f"{layer.describe()} conv")
        else:
            names.append(f"{layer.describe()} {'output' if k == len(network.layers) - 1 else 'hidden'}")
    return names


def analog_outputs(rec: Recording, network: Network) -> list[bool]:
    """Per layer: whether it outputs analog values, not spikes or pooled spikes (a pooling
    of direct-encoded input: the same values at every step)."""
    return [counts.analog_input and not getattr(layer, "spiking", True)
            for counts, layer in zip(rec.energy.layers, network.layers)]


def plot_inspection(rec: Recording | Inspection, path: Path, labels: np.ndarray | None = None, rasters: int = 3,
                    title: str = "", layer_names: list[str] | None = None,
                    analog: list[bool] | None = None) -> None:
    """Spike rasters of the first ``rasters`` samples per layer, the histogram of firing
    rates over each layer's alive neurons, each layer's firing rate per time step, and
    the operations per time step; the format follows ``path``'s suffix. ``layer_names``
    (e.g. from :func:`layer_names`) says what each layer is; ``analog`` (from
    :func:`analog_outputs`) which layers output analog values, shown as values, not rates.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    n_layers, shown = len(rec.spikes), min(rasters, rec.spikes[0].shape[1])  # an Inspection keeps a few
    cols = shown + 2
    # Constrained layout keeps the suptitle above the top row's titles (tight_layout does not, on tall figures).
    fig = plt.figure(figsize=(3.0 * cols, 2.4 * (n_layers + 1) + 0.6), layout="constrained")
    grid = fig.add_gridspec(n_layers + 1, cols)
    rates, per_step = rec.firing_rates(), rec.rate_per_step()
    steps = np.arange(1, rec.time_steps + 1)
    predicted = np.argmax(rec.counts, axis=1)
    for k in range(n_layers):
        kind = layer_names[k] if layer_names else ("output" if k == n_layers - 1 else "hidden")
        name = f"L{k} ({kind}, {rec.alive[k].sum()}/{rec.alive[k].size} alive)"
        for b in range(shown):
            ax = fig.add_subplot(grid[k, b])
            # Spikes black; pruned neurons' rows pale grey (they are not simulated).
            image = np.where(rec.alive[k][None, :], 0.0, 0.12) + rec.spikes[k][:, b, :]
            ax.imshow(image.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, origin="lower", interpolation="nearest",
                      extent=(0.5, rec.time_steps + 0.5, -0.5, rec.alive[k].size - 0.5))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if k == 0:
                label = "" if labels is None else f"label {int(labels[b])}, "
                ax.set_title(f"sample {b}: {label}predicted {int(predicted[b])}", fontsize=9)
            if b == 0:
                ax.set_ylabel(f"{name}\nneuron", fontsize=8)
            if k == n_layers - 1:
                ax.set_xlabel("time step")
        values = bool(analog and analog[k])
        pooled = not rec.energy.layers[k].spiking  # a pooling has units, not neurons: its rate is its mean output
        scale, unit = (1, "") if values else (100, "%")
        rate = "mean output value" if values else "mean output (% of steps)" if pooled else "firing rate (% of steps)"
        ax = fig.add_subplot(grid[k, shown])
        alive_rates = scale * rates[k][rec.alive[k]]
        ax.hist(alive_rates, bins=min(30, max(5, alive_rates.size // 5)), color="tab:red")
        ax.set(xlabel=rate, ylabel="units" if pooled else "alive neurons")
        floor_at_zero(ax, alive_rates, "x")
        silent = int(np.sum(alive_rates == 0))
        ax.set_title(f"L{k}: mean {alive_rates.mean() if alive_rates.size else 0:.{3 if values else 1}f}{unit}, "
                     f"{silent} {'always 0' if pooled else 'silent'}", fontsize=9)
        ax = fig.add_subplot(grid[k, shown + 1])
        ax.plot(steps, scale * per_step[k], "o-", ms=3, color="tab:red")
        ax.set(xlabel="time step", ylabel=("mean output value" if values else "mean output (%)" if pooled
                                           else "% of alive neurons firing"))
        floor_at_zero(ax, per_step[k])
        ax.set_title(f"L{k}: {'mean output' if pooled else 'firing rate'} per step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[n_layers, :])
    n = max(rec.energy.samples, 1)
    for k, layer in enumerate(rec.energy.layers):
        kind = "MACs" if layer.analog_input else "SOPs"
        ax.plot(steps, layer.ops / n, "o-", ms=3,
                label=zero_noted(f"L{k} {layer.n_in}\u2192{layer.n_out} ({kind})", layer.ops))
    ops = np.concatenate([layer.ops for layer in rec.energy.layers]) / n
    _log_if_spread(ax, ops)
    floor_at_zero(ax, ops)
    ax.set(xlabel="time step", ylabel="operations per sample", title="synaptic operations per time step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle((title + ": " if title else "") + f"rates and operations over {rec.samples} samples", fontsize=10)
    save_figure(fig, path)
