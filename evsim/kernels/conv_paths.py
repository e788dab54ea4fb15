"""Which variant of each convolution kernel a layer runs, chosen once per call from densities.

The crossovers are measured by ``benchmarks/bench_conv_kernels.py`` on the paper's N-MNIST
shapes (2x32x32 -> 15C3 and 15x16x16 -> 40C3, pad 1; T = 20, batch 100) at 1 and 2
threads, recorded in ``benchmarks/RESULTS.md`` ("Convolution kernels: event against
dense paths"). On the shared 2-core machine the dense GEMM paths degraded far more under
load than the event paths (OpenBLAS threads spin-waiting), so the constants below are
taken at 1 thread, where the GEMM was most competitive, below the measured crossovers.
"""
from __future__ import annotations

import numpy as np

from evsim.kernels.conv_forward import (conv_currents_csr, conv_currents_dense, conv_currents_direct,
                                        conv_currents_events)
from evsim.kernels.conv_direct import direct_multiply_adds
from evsim.kernels.conv_winograd import applies as winograd_applies
from evsim.kernels.conv_winograd import multiply_adds as winograd_multiply_adds
from evsim.kernels.conv_geometry import ConvGeometry, padded_lanes
from evsim.kernels.conv_input_grad import (conv_input_grad_dense, conv_input_grad_direct, conv_input_grad_gather,
                                           conv_input_grad_gather_csr, conv_input_grad_scatter,
                                           conv_input_grad_scatter_csr, conv_input_grad_winograd)
from evsim.kernels.conv_weight_grad import (conv_weight_grad_csr, conv_weight_grad_dense, conv_weight_grad_direct,
                                            conv_weight_grad_events)

# Path name -> kernel; every pair of a table gives the same result (tests/test_conv_kernels.py).
FORWARD_PATHS = {"events": conv_currents_events, "csr": conv_currents_csr, "direct": conv_currents_direct,
                 "dense": conv_currents_dense}
WEIGHT_GRAD_PATHS = {"events": conv_weight_grad_events, "csr": conv_weight_grad_csr, "direct": conv_weight_grad_direct,
                     "dense": conv_weight_grad_dense}
INPUT_GRAD_PATHS = {"scatter": conv_input_grad_scatter, "scatter_csr": conv_input_grad_scatter_csr,
                    "gather": conv_input_grad_gather, "gather_csr": conv_input_grad_gather_csr,
                    "direct": conv_input_grad_direct, "winograd": conv_input_grad_winograd,
                    "dense": conv_input_grad_dense}

# Each constant is the measured crossover, or a fit to the measured times, of the runs of
# ``python -m benchmarks.bench_conv_kernels`` that RESULTS.md numbers (1 thread unless
# said; "fit": where least-squares lines of time against activity cross). conv2's input
# in the paper's N-MNIST network (conv1's spikes after AP2) is denser than spikes: 37 %
# at initialisation.
#
# Forward currents: the row-layout event path beat im2col + GEMM at every activity
# measured, to 65 % (fit 99.8 %, run 5), so the GEMM is left to strided convolutions on
# dense input; stride 1 chooses between events and the direct convolution by cost.
FORWARD_EVENTS_BELOW = 0.5
# Per-slot cost of the two stride-1 paths, ns (fit to run 9, conv1 and conv2 at 2-45 %;
# it picks the measured winner at all 12 points): the event path pays per output unit
# (zeroing and transposing its cell-major scratch) and per 16-lane add of a tap's weight
# row; the direct convolution per output unit and per 16-lane multiply-add of its
# register blocks, independent of the activity. Crossovers: conv2 7.7-9.3 %; on conv1
# (2 channels in) the direct path wins from below 2 %.
EVENTS_NS_PER_UNIT = 1.13
EVENTS_NS_PER_ADD = 1.70
DIRECT_NS_PER_UNIT = 0.35
DIRECT_NS_PER_FMA = 0.23
# Winograd's F(2x2, 3x3), fitted against the direct convolution's one-pass forward over
# ten layer shapes (``benchmarks/bench_winograd.py``): its transforms cost per unit, its
# multiply-adds are 16 a tile and channel pair against 36 (padded to whole blocks of
# 4 x 16 tiles). It wins on conv2 (17.2 against 24.0 us a slot), loses on conv1 (2
# channels in) and on 8 x 8 maps.
WINOGRAD_NS_PER_UNIT = 0.82
WINOGRAD_NS_PER_FMA = 0.30
# Weight gradient: the event paths beat the GEMM at every activity measured, to 65 %.
WEIGHT_GRAD_EVENTS_BELOW = 0.5
# Stride 1: the direct products beat the faster event variant from 10.0-12.1 % (runs 7-10,
# both layers).
WEIGHT_GRAD_DIRECT_ABOVE = 0.11
# Gathering one 16-lane vector a tap from dL/du (csr) beats transposing each slot's dL/du
# into the row layout only where the blocks fit one vector and the input is sparse:
# conv1's 15 filters below 7.0-7.5 % against the direct products and about 3.5-5 % against
# the row layout (run 10: 14.5 against 16.8 ms at 2 %, 19.7 against 18.5 ms at 5 %).
WEIGHT_GRAD_CSR_MAX_BLOCKS = 16
WEIGHT_GRAD_CSR_BELOW = 0.035
# Input gradient (conv2): against the direct transposed convolution (51-53 ms at every
# density, run 9), scatter from dL/du's nonzeros wins below 3.7-4.0 % and gather at the
# cells the layer below marks below 9.2-9.4 %; the GEMM + col2im lost to both.
INPUT_GRAD_GATHER_BELOW = 0.095
INPUT_GRAD_SCATTER_BELOW = 0.04


def event_density(ptr: np.ndarray, n_units: int) -> float:
    """Events per (slot x unit) of an event batch (``ptr`` int64 ``[T*B + 1]``)."""
    n_slots = ptr.shape[0] - 1
    return float(ptr[-1] - ptr[0]) / max(1, n_slots * n_units)


# Rows between those a density estimate counts: 33 of conv2's 2,000 rows of dL/du (338 k
# entries) give the two digits a path choice needs; every 16th took 2.75 ms a training
# step at 1 thread (a strided count), 1 % of the step. Prime, so that the rows counted
# (slot t*B + b) fall on every sample b of a batch, not on the same few.
DENSITY_SAMPLE_STRIDE = 61


def nonzero_density(rows: np.ndarray, stride: int = DENSITY_SAMPLE_STRIDE) -> float:
    """Fraction of nonzero entries of ``rows`` ``[n, m]``, counted in every ``stride``-th
    row: a path choice needs about two digits, not a pass over the whole array (80 MB
    for conv2's dL/du of a batch)."""
    sample = rows[::stride]
    return np.count_nonzero(sample) / max(sample.size, 1)


def _dense_costs(in_channels: int, kernel: int, n_out: int, out_height: int, out_width: int,
                 winograd: bool) -> dict[str, float]:
    """Modelled ns a slot of the direct convolution and (``winograd``) Winograd's, from
    ``in_channels`` source channels to ``n_out`` output channels of ``out_height x out_width``."""
    units = n_out * out_height * out_width
    costs = {"direct": DIRECT_NS_PER_UNIT * units + DIRECT_NS_PER_FMA * direct_multiply_adds(
        in_channels, kernel, n_out, out_height, out_width)}
    if winograd:
        costs["winograd"] = WINOGRAD_NS_PER_UNIT * units + WINOGRAD_NS_PER_FMA * winograd_multiply_adds(
            in_channels, n_out, out_height, out_width)
    return costs


def forward_path(input_density: float, geometry: ConvGeometry | None = None, n_filters: int = 0) -> str:
    """``"events"``, ``"direct"``, ``"winograd"`` or ``"dense"`` for input events of this
    density: for a stride-1 ``geometry`` with ``n_filters`` alive filters, the cheapest
    of the event path, the direct convolution and (3 x 3 kernels) Winograd's by the
    measured cost model; otherwise events below :data:`FORWARD_EVENTS_BELOW`, else the
    GEMM. ``"events"``, ``"direct"`` and ``"dense"`` name the ``conv_currents_*``
    functions of :mod:`evsim.kernels.conv_forward`; ``"winograd"`` runs only fused with
    the LIF step (:func:`evsim.kernels.conv_lif.conv_lif_winograd`)."""
    if geometry is None or geometry.stride != 1:
        return "events" if input_density < FORWARD_EVENTS_BELOW else "dense"
    g = geometry
    taps = input_density * g.n_in * g.taps  # (event, tap) pairs, borders included
    costs = _dense_costs(g.in_channels, g.kernel, n_filters, g.out_height, g.out_width, winograd_applies(g))
    costs["events"] = (EVENTS_NS_PER_UNIT * n_filters * g.out_cells
                       + EVENTS_NS_PER_ADD * taps * padded_lanes(n_filters) / 16)
    return min(costs, key=costs.get)


def weight_grad_path(input_density: float, n_blocks: int, stride: int = 1) -> str:
    """``"csr"``, ``"events"``, ``"direct"`` or ``"dense"`` (the ``conv_weight_grad_*``
    functions of :mod:`evsim.kernels.conv_weight_grad`) for input events of this density,
    a ``grad_u`` of ``n_blocks`` blocks and the convolution's ``stride``."""
    if stride == 1 and input_density >= WEIGHT_GRAD_DIRECT_ABOVE:
        return "direct"
    if input_density >= WEIGHT_GRAD_EVENTS_BELOW:
        return "dense"
    if n_blocks <= WEIGHT_GRAD_CSR_MAX_BLOCKS and input_density < WEIGHT_GRAD_CSR_BELOW:
        return "csr"
    return "events"


def input_grad_path(grad_density: float, mask_density: float | None = None, stride: int = 1,
                    geometry: ConvGeometry | None = None, n_filters: int = 0) -> str:
    """``"gather"``, ``"scatter"``, ``"direct"``, ``"winograd"`` or ``"dense"`` (the
    ``conv_input_grad_*`` functions of :mod:`evsim.kernels.conv_input_grad`): gather when
    the layer below gives a mask of the cells that use the error (``mask_density``, the
    fraction marked) and few are marked, else scatter when dL/du is sparse
    (``grad_density``, its fraction of nonzeros), else the transposed convolution:
    direct or, for a 3 x 3 stride-1 ``geometry`` with ``n_filters`` alive filters where
    the forward's cost model says so, Winograd's (stride 1), or the GEMM."""
    if mask_density is not None and mask_density < INPUT_GRAD_GATHER_BELOW:
        return "gather"
    if grad_density < INPUT_GRAD_SCATTER_BELOW:
        return "scatter"
    if stride != 1:
        return "dense"
    if geometry is not None and winograd_applies(geometry):
        g = geometry
        costs = _dense_costs(n_filters, g.kernel, g.in_channels, g.height, g.width, True)
        return min(costs, key=costs.get)
    return "direct"
