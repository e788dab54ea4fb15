"""How much memory a batch takes, checked before training or evaluation starts: a run
that cannot fit is refused in one line instead of being killed by the OS hours in, or
failing with a traceback deep inside an allocation.

Bytes per synapse in training, measured (peak resident memory of 2312-7000-10, 16.3
million synapses, less a small run's: benchmarks/RESULTS.md): 42-49 without SD-SNN
(float32 weight, int32 column index, float32 gradient, Adam's two float32 moments, the
rows path's float32 execution copy, a checkpoint's copy of them, temporaries), 117 with
it (its eight per-synapse state arrays, their copy, its would-be gradients). Per
neuron, time step and sample of a batch: training keeps the BPTT trace (float32 potential, uint8 spike) with
the float32 potential and spike gradients and the spike events (about 16 B). Evaluation
(``forward(record=False)``) keeps each layer's uint8 spikes and their events, and a
float32 membrane only for the layer it is computing where that layer's path needs one:
measured (peak resident memory of evaluate() at two batch sizes, less the difference of
samples x steps x neurons) 1.7-1.8 B on a trained DVS-Gesture paper network with frames
(B 8-64, T 8-32), 2.0-2.1 B on the MNIST paper network with rate coding (B 100-400, T
16 and 32). Spikes cost their events too, so a network that fires more needs more: 2.9 B
for the DVS-Gesture network with its initial weights on frames of N-MNIST's activity
(``benchmarks/bench_eval_memory.py``). 3 B covers every network measured: the check
refuses only a batch beyond physical memory, so an estimate below what a batch takes
would let it through to the OS's killer. Direct (analog) input is more:
its first layer keeps a float32 membrane (3.6-3.9 B on the MNIST paper network, whose
conv1 holds half its neurons), counted apart (:func:`direct_membrane_bytes`). Inspection (:mod:`evsim.inspect`) adds
the recording's own copy over every neuron (uint8, float32 for average pooling) and its
events' slots: measured 2.2-2.3 B more (3.9 B in all on the DVS-Gesture network, 4.4 B on
MNIST's). Per input event a sample can give: rate coding's float32 draw of the cell,
then the event's int32 index and float32 value (12 B).
"""
from __future__ import annotations

import numpy as np

from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError
from evsim.host import physical_memory

SYNAPSE_BYTES = 50
SDSNN_SYNAPSE_BYTES = 120
TRAIN_STEP_BYTES = 16
EVAL_STEP_BYTES = 3.0
INSPECT_STEP_BYTES = EVAL_STEP_BYTES + 3
INPUT_EVENT_BYTES = 12
MEMBRANE_BYTES = 4  # float32
GIB = 2 ** 30


def input_events(inputs, encoding: str, time_steps: int) -> int:
    """The most input events one sample of ``inputs`` gives in ``time_steps`` steps (an upper
    bound): stored frames, their own; rate coding, T x the sample's nonzero cells (zeros never
    fire); direct input and dense frames, their cells (held once, not per step)."""
    if len(inputs) == 0:
        return 0
    if isinstance(inputs, SparseFrames):
        ptr, rows = inputs.ptr, inputs.samples * inputs.n_steps
        return int((ptr[rows + inputs.n_steps] - ptr[rows]).max())
    flat = np.asarray(inputs).reshape(len(inputs), -1)
    if encoding == "rate":
        return time_steps * int(np.count_nonzero(flat, axis=1).max())
    return flat.shape[1]


def batch_bytes(neurons: int, time_steps: int, batch: int, step_bytes: float,
                events_per_sample: int) -> tuple[int, int]:
    """``(traces, input events)``: the bytes of one batch's per-step traces of ``neurons``
    (every layer but the input) and of its input events."""
    return int(step_bytes * time_steps * batch * neurons), INPUT_EVENT_BYTES * batch * events_per_sample


def direct_membrane_bytes(sizes: list[int], time_steps: int, batch: int, encoding: str | None) -> int:
    """The first layer's float32 membrane over a batch's steps, which evaluation keeps for
    direct (analog) input only (``sizes``: the network's, input first)."""
    return MEMBRANE_BYTES * sizes[1] * time_steps * batch if encoding == "direct" and len(sizes) > 1 else 0


def refuse_beyond_memory(what: str, parts: dict[str, int], fix: str) -> None:
    """Raise ConfigError if ``parts`` (name -> bytes) add up to more than physical memory.

    Raises
    ------
    ConfigError
        "``what`` needs about X GiB of memory (name Y GiB, ...) but the machine has Z GiB; ``fix``".
    """
    need, have = sum(parts.values()), physical_memory()
    if need > have:
        detail = ", ".join(f"{name} {size / GIB:,.1f} GiB" for name, size in parts.items())
        raise ConfigError(f"{what} needs about {need / GIB:,.1f} GiB of memory ({detail}) but the machine has "
                          f"{have / GIB:,.1f} GiB; {fix}")
