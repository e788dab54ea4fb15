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

# Runs of ``python -m benchmarks.bench_conv_kernels`` (ranges over the runs; 1-4 at 1-30 %,
# 1 and 2 threads; run 5 at 30-65 %, conv2, 1 thread, ``--layers conv2 --threads 1
# --activities 30,40,50,65``). "fit": where least-squares lines of time against
# activity cross. In the paper's N-MNIST network conv2's input (conv1's spikes after
# AP2) is denser than the spikes: 37 % at initialisation, where a window of four cells
# holds one spike.
#
# Forward currents: the row-layout event path beat im2col + GEMM at every activity
# measured with the final kernels: to 30 % in run 4 on both layers and thread counts,
# to 65 % in run 5 (186 against 230 ms at 50 %, 305 against 390 ms at 65 %; fit 99.8 %).
# Runs 1-3, before the per-unit tables, crossed at 28.5 % or above (conv2, 1 thread).
# That crossover stands for strided convolutions; stride 1 chooses between the event path
# and the direct convolution by the cost model below.
FORWARD_EVENTS_BELOW = 0.5
# Per-slot cost of the two stride-1 paths, ns, least-squares fit to run 9 (1 thread,
# conv1 and conv2 at 2-45 %, the direct convolution in 4 x 5 register blocks; the model
# picks the measured winner at all 12 points, as the fits to runs 7 and 8 did): the
# event path pays per output unit (zeroing its cell-major scratch, transposing it out)
# and per 16-lane add of a tap's weight row; the direct convolution per output unit and
# per 16-lane multiply-add of its register blocks (output channels padded to a whole
# block), which do not depend on the activity. Measured crossovers: conv2 (15 channels
# in) 8.2-8.8 % (run 7), 9.3 % (run 8), 7.7-8.0 % (run 9); conv1 (2 channels) below 2 %:
# the direct path won there at every activity.
EVENTS_NS_PER_UNIT = 1.13
EVENTS_NS_PER_ADD = 1.70
DIRECT_NS_PER_UNIT = 0.35
DIRECT_NS_PER_FMA = 0.23
# Winograd's F(2x2, 3x3) (3 x 3 kernels): fitted with the direct convolution's one-pass
# forward over ten layer shapes (``benchmarks/bench_winograd.py``, 1 thread, inference),
# which gave the direct path 0.41 ns per unit and 0.24 per multiply-add, close to the
# constants above. Its transforms cost per unit; its multiply-adds are 16 per tile and
# channel pair against 36 (but padded to whole blocks of 4 x 16 tiles): it wins on conv2
# of the paper's network (17.2 against 24.0 us a slot) and loses on conv1 (2 channels in)
# and on 8 x 8 maps.
WINOGRAD_NS_PER_UNIT = 0.82
WINOGRAD_NS_PER_FMA = 0.30
# Weight gradient: the event paths beat the GEMM at every activity measured with the final
# kernels (run 5: 161 against 421 ms at 50 %, 322 against 432 ms at 65 %); runs 1-3 crossed
# at 22.9 % or above (conv2, 1 thread, fit).
WEIGHT_GRAD_EVENTS_BELOW = 0.5
# Stride 1: the direct products (conv_weight_grad_direct) against the faster event
# variant crossed at 11.4-11.8 % (conv1) and 10.8-12.1 % (conv2) in run 7 (1 thread,
# 2-45 %; first and fitted), 11.1-12.0 % (conv2) in run 8, 10.0-10.4 % in run 9,
# 11.1-11.2 % (conv1) in run 10.
WEIGHT_GRAD_DIRECT_ABOVE = 0.11
# A gather of one 16-lane vector per tap from dL/du (the csr variant) beat transposing
# each slot's dL/du into the row layout when the blocks fit one vector: conv1's 15
# filters, 10-31 against 38-59 ms at 1-10 % (run 4, 1 thread). With conv2's 40 filters
# the row layout won from 2-5 % on (at 10 %: 59-198 against 117-254 ms, runs 1-4).
# In run 7 (row layout tables, the transpose into them in 16 x 16 register blocks) the
# row layout beat the gathers on conv1 too from 5 % on (16.9 against 18.8 ms; 12.4
# against 13.6 ms for the gathers at 2 %): they keep only sparser input. Runs 8 and 9
# measured the row layout at 45-56 ms on conv1 after its transpose had become a scalar
# loop; with the register transpose back, run 10 (conv1, 1 thread): row layout 16.8,
# 18.5, 25.8, 36.8 ms at 2, 5, 10, 20 %, gathers 14.5, 19.7, 33.8, 60.5, direct 25.7-27.2
# (crossovers: gathers below 7.0-7.5 % against the direct products, row layout below
# 11.1-11.2 %).
WEIGHT_GRAD_CSR_MAX_BLOCKS = 16
WEIGHT_GRAD_CSR_BELOW = 0.035
# Input gradient (conv2, 1 thread): gather at the marked cells against the GEMM + col2im
# crossed at 42 % in run 5 and at 19.5 % or above in runs 1-4 (pointwise; fit 22.8 % or
# above); scatter from dL/du's nonzeros at 17.1-26.7 % (runs 1-4) and below 30 % in
# run 5. At 2 threads: gather from 49.9 %, scatter from 24.3 % (fit).
# Against the direct transposed convolution (stride 1), register-blocked since run 7
# (53-56 ms at every density; the earlier one, one weight against 8 unaligned row
# loads, took 115-119 ms), scatter crossed at 4.9-5.3 % and gather at 12.4-13.0 %
# (run 7, conv2, 1 thread; run 8: 4.6-4.9 % and 11.2-11.8 %); in 4 x 5 register blocks
# (run 9, 51-53 ms) at 3.7-4.0 % and 9.2-9.4 %. The direct path's time does not depend on
# the density, and it runs on Numba's threads where the GEMM runs on one BLAS thread.
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
