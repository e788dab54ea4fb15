"""Which variant of each convolution kernel a layer runs, chosen once per call from densities.

The crossovers are measured by ``benchmarks/bench_conv_kernels.py`` on the paper's N-MNIST
shapes (2x32x32 -> 15C3 and 15x16x16 -> 40C3, pad 1; T = 20, batch 100) at 1 and 2
threads, recorded in ``benchmarks/RESULTS.md`` ("Convolution kernels: event against
dense paths"). On the shared 2-core machine the dense GEMM paths degraded far more under
load than the event paths (OpenBLAS threads spin-waiting), so the constants below are
taken at 1 thread, where the GEMM was most competitive, below the measured crossovers.
Each kind of machine (:mod:`evsim.kernels.machine`) has its register blocks for the dense
paths and its table (:data:`AVX512`, :data:`AVX2`), and a machine takes its own
(:data:`HOST`): the event paths cost about the same on both kinds measured, the dense
paths' multiply-adds about twice as much on AVX2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evsim.kernels import conv_winograd4
from evsim.kernels.conv_forward import (conv_currents_csr, conv_currents_dense, conv_currents_direct,
                                        conv_currents_events)
from evsim.kernels.conv_direct import direct_multiply_adds
from evsim.kernels.conv_winograd import applies as winograd_applies
from evsim.kernels.conv_winograd import multiply_adds as winograd_multiply_adds
from evsim.kernels.conv_winograd import tile_layout as winograd_tile_layout
from evsim.kernels.conv_geometry import ConvGeometry, padded_lanes
from evsim.kernels.conv_input_grad import (conv_input_grad_dense, conv_input_grad_direct, conv_input_grad_gather,
                                           conv_input_grad_gather_csr, conv_input_grad_scatter,
                                           conv_input_grad_scatter_csr, conv_input_grad_winograd)
from evsim.kernels.conv_weight_grad import (conv_weight_grad_csr, conv_weight_grad_dense, conv_weight_grad_direct,
                                            conv_weight_grad_events)
from evsim.kernels.machine import KIND
from evsim.kernels.simd import LANES

# Path name -> kernel; every pair of a table gives the same result (tests/test_conv_kernels.py).
FORWARD_PATHS = {"events": conv_currents_events, "csr": conv_currents_csr, "direct": conv_currents_direct,
                 "dense": conv_currents_dense}
WEIGHT_GRAD_PATHS = {"events": conv_weight_grad_events, "csr": conv_weight_grad_csr, "direct": conv_weight_grad_direct,
                     "dense": conv_weight_grad_dense}
INPUT_GRAD_PATHS = {"scatter": conv_input_grad_scatter, "scatter_csr": conv_input_grad_scatter_csr,
                    "gather": conv_input_grad_gather, "gather_csr": conv_input_grad_gather_csr,
                    "direct": conv_input_grad_direct, "winograd": conv_input_grad_winograd,
                    "dense": conv_input_grad_dense}

@dataclass(frozen=True)
class PathCosts:
    """The measured crossovers and per-slot costs that choose a kernel's path, on one kind
    of machine (:data:`AVX512`, :data:`AVX2`; :data:`HOST` is this machine's)."""

    name: str  # the kind of machine, as a run's config.json records it
    # Forward currents on dense input or strided convolutions: events below, GEMM above.
    forward_events_below: float
    # Per-slot cost of the stride-1 forward paths, ns: the event path pays per output unit
    # and per 16-lane add of a tap's weight row; the direct convolution and Winograd's per
    # output unit and per 16-lane multiply-add of their register blocks.
    events_ns_per_unit: float
    events_ns_per_add: float
    direct_ns_per_unit: float
    direct_ns_per_fma: float
    winograd_ns_per_unit: float
    winograd_ns_per_fma: float
    # Weight gradient: events below the first, the GEMM above; stride 1 takes the direct
    # products above the second (None: where the forward's cost model, events against
    # direct, picks direct for the layer); the csr gather where the blocks fit this many
    # vectors and the input is sparser than the last.
    weight_grad_events_below: float
    weight_grad_direct_above: float | None
    weight_grad_csr_max_blocks: int
    weight_grad_csr_below: float
    # Input gradient: gather at the cells the layer below marks below the first, scatter
    # from dL/du's nonzeros below the second, else the transposed convolution.
    input_grad_gather_below: float
    input_grad_scatter_below: float
    # Inference through a convolution, its LIF step and 2 x 2 average pooling in one pass
    # (evsim.kernels.conv_lif_pool): per dense kernel (ns an output computed, ns a 16-lane
    # multiply-add; pooled_work), for the event path (ns an output stepped, ns a 16-lane
    # add; pooled_events_work), fitted to that pass; a dense kernel not named is not run.
    pooled: dict[str, tuple[float, float]]


# Each number is the measured crossover, or a fit to the measured times, of the runs of
# ``python -m benchmarks.bench_conv_kernels`` (and ``bench_winograd``) that RESULTS.md
# numbers (1 thread unless said; "fit": where least-squares lines of time against activity
# cross). conv2's input in the paper's N-MNIST network (conv1's spikes after AP2) is denser
# than spikes: 37 % at initialisation.
AVX512 = PathCosts(
    name="avx512",
    # The row-layout event path beat im2col + GEMM at every activity measured, to 65 %
    # (fit 99.8 %, run 5), so the GEMM is left to strided convolutions on dense input.
    forward_events_below=0.5,
    # Fit to run 9, conv1 and conv2 at 2-45 % (it picks the measured winner at all 12
    # points): crossovers conv2 7.7-9.3 %; on conv1 (2 channels in) direct from below 2 %.
    events_ns_per_unit=1.13, events_ns_per_add=1.70, direct_ns_per_unit=0.35, direct_ns_per_fma=0.23,
    # Winograd's F(2x2, 3x3) against the direct convolution's one-pass forward over ten
    # layer shapes (bench_winograd): it wins on conv2 (17.2 against 24.0 us a slot), loses
    # on conv1 (2 channels in) and on 8 x 8 maps.
    winograd_ns_per_unit=0.82, winograd_ns_per_fma=0.30,
    # Events beat the GEMM at every activity measured, to 65 %; the direct products beat
    # the faster event variant from 10.0-12.1 % (runs 7-10, both layers); the csr gather
    # beat the row layout on conv1's 15 filters below about 3.5-5 % (run 10).
    weight_grad_events_below=0.5, weight_grad_direct_above=0.11, weight_grad_csr_max_blocks=16,
    weight_grad_csr_below=0.035,
    # Against the direct transposed convolution (51-53 ms at every density, run 9): gather
    # wins below 9.2-9.4 %, scatter below 3.7-4.0 %; the GEMM + col2im lost to both.
    input_grad_gather_below=0.095, input_grad_scatter_below=0.04,
    # bench_pooled_paths at 1 thread on an AMD EPYC with AVX-512 (runs s50-a, b and c, the
    # mean of the three fits), ten shapes, the event path at 2, 6 and 15 % input: it picks
    # the fastest kernel for 26-27 of the 30 (shape, density) points of each run. conv1 of
    # the paper's network takes the events at N-MNIST's 6 % (5.7-6.7 us a slot against
    # 9.0-10.3 for the dense kernels), conv2 F(4x4) on its 37 % (13.4-14.0 against
    # 17.6-18.0 for F(2x2)).
    pooled={"events": (0.30, 1.58), "direct": (0.40, 0.33), "winograd": (0.59, 0.35), "winograd4": (0.59, 0.39)},
)
# An AMD EPYC with AVX2 (RESULTS.md, "An AVX2 machine" and "Register blocks for AVX2"): the
# event paths cost about what they cost with AVX-512, the dense paths' multiply-adds about
# twice as much, in their 2 x 2 blocks.
AVX2 = PathCosts(
    name="avx2",
    forward_events_below=0.5,  # not measured there: strided layers as on AVX-512
    # Events: least squares over conv1 and conv2 at 2-40 % (bench_conv_kernels run s39-2);
    # direct (AVX2's 2 x 2 register blocks): bench_winograd's fit of the one-pass forward
    # that records the membrane (what training runs, run s40), ten shapes. Winograd's (1 x 4
    # blocks): its fit in runs s42-a and s42-b on the direct kernel's scale
    # (bench_winograd.table_scale), the mean of the two; conv2's crossover from the events
    # moves from 13-14 % to 9 %.
    events_ns_per_unit=1.00, events_ns_per_add=1.47, direct_ns_per_unit=0.31, direct_ns_per_fma=0.50,
    winograd_ns_per_unit=0.71, winograd_ns_per_fma=0.42,
    # Events beat the GEMM at every activity measured (to 40 %). The direct products beat
    # the events on conv1 at every activity (26.8 against 37.9 ms at 2 %) and on conv2 from
    # 20.7-21.9 % (bench_conv_kernels run s40): as the forward's do, where the event path's
    # cost per output unit (conv1: 15 k units, few events) or per add outweighs them, so
    # the forward's model decides (it puts conv2's crossover at 24 %). The csr gather never
    # beat the row layout (conv1 at 2 %: 36.6 against 30.9 ms, run s39-2).
    weight_grad_events_below=0.5, weight_grad_direct_above=None, weight_grad_csr_max_blocks=16,
    weight_grad_csr_below=0.0,
    # Gather and scatter against the transposed convolution: forcing gather at every
    # density changed a training step by 1 % (bench_conv_paths), so as on AVX-512.
    input_grad_gather_below=0.095, input_grad_scatter_below=0.04,
    # bench_pooled_paths at 1 thread (runs s43-a and s43-b, the mean of the two fits), ten
    # shapes, the event path at 2, 6 and 15 % input: it picks the fastest kernel for 27 of
    # the 30 (shape, density) points of each run. conv1 of the paper's network takes the
    # events below about 20 % input (7.6-7.8 us a slot at 6 % against 12.0-14.4 for the
    # dense kernels), conv2 below about 7 %, F(4x4) above (17.7-19.1 us a slot).
    pooled={"events": (0.39, 1.89), "direct": (0.31, 0.60), "winograd": (0.62, 0.48), "winograd4": (0.81, 0.51)},
)


HOST = {table.name: table for table in (AVX512, AVX2)}[KIND]

# The largest input F(4x4, 3x3) takes: its currents' error grows with the largest input in
# a tile's window, not with the unit's own inputs (about 5e-7 x that input, measured by the
# audit of 2026-12-08: units 0.35-0.78 from the threshold flipped at 1e6), so beyond spike
# and frame counts the fused pass takes the kernels whose error follows the unit's own sums.
WINOGRAD4_INPUT_LIMIT = 16.0

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


def dense_multiply_adds(in_channels: int, kernel: int, n_out: int, out_height: int, out_width: int,
                        kind: str = KIND) -> dict[str, int]:
    """16-lane multiply-adds a slot of each dense kernel that computes this convolution
    (stride 1) on a ``kind`` machine: the direct convolution's, and for 3 x 3 kernels
    Winograd's F(2x2, 3x3) and F(4x4, 3x3)."""
    fmas = {"direct": direct_multiply_adds(in_channels, kernel, n_out, out_height, out_width, kind)}
    if kernel == 3:
        fmas["winograd"] = winograd_multiply_adds(in_channels, n_out, out_height, out_width, kind)
        fmas["winograd4"] = conv_winograd4.multiply_adds(in_channels, n_out, out_height, out_width)
    return fmas


def pooled_work(in_channels: int, n_out: int, out_height: int, out_width: int,
                kind: str = KIND) -> dict[str, tuple[int, int]]:
    """Per dense kernel of the fused inference pass (3 x 3, stride 1), ``(outputs computed,
    16-lane multiply-adds)`` a slot on a ``kind`` machine: Winograd's kernels compute
    whole tile vectors, so a map that fills few of their lanes costs them more than its
    units (an 8 x 8 map is half of F(4x4, 3x3)'s one vector)."""
    fmas = dense_multiply_adds(in_channels, 3, n_out, out_height, out_width, kind)
    return {"direct": (n_out * out_height * out_width, fmas["direct"]),
            "winograd": (n_out * winograd_tile_layout(out_height, out_width, kind)[1] * 4 * LANES, fmas["winograd"]),
            "winograd4": (n_out * conv_winograd4.tile_layout(out_height, out_width)[1] * 16 * LANES,
                          fmas["winograd4"])}


def pooled_events_work(geometry: ConvGeometry, n_filters: int, input_density: float) -> tuple[float, float]:
    """``(outputs stepped, 16-lane adds)`` a slot of the fused pass's event path
    (:func:`evsim.kernels.conv_lif_pool.conv_lif_pool`, ``"events"``) with ``n_filters``
    alive filters, at this input density: the cells inside a pooling window times the
    filters' padded lanes, and each (event, tap) pair's weight row (borders counted as
    whole kernels, as the forward's model counts them)."""
    g = geometry
    lanes = padded_lanes(n_filters)
    stepped = 4 * (g.out_height // 2) * (g.out_width // 2) * lanes
    return stepped, input_density * g.n_in * g.taps * lanes / LANES


def pooled_path(geometry: ConvGeometry, n_filters: int, input_density: float,
                costs: PathCosts | None = None, largest_input: float = 1.0) -> str | None:
    """``"events"``, ``"direct"``, ``"winograd"`` or ``"winograd4"``: the kernel of
    :func:`evsim.kernels.conv_lif_pool.conv_lif_pool` (a ``geometry``,
    ``n_filters`` alive filters, input of this density) with the least modelled time
    (``costs``: as for :func:`forward_path`; its ``pooled`` costs, :func:`pooled_work`
    and :func:`pooled_events_work`): the event path, or a dense kernel its table names that
    computes this convolution (only the direct convolution for kernels other than 3 x 3;
    F(4x4, 3x3) only for inputs of magnitude up to :data:`WINOGRAD4_INPUT_LIMIT`, the
    ``largest_input``). None for a stride: no fused pass."""
    c = costs or HOST
    g = geometry
    if g.stride != 1:
        return None
    per_output, per_add = c.pooled["events"]
    stepped, adds = pooled_events_work(g, n_filters, input_density)
    modelled = {"events": per_output * stepped + per_add * adds}
    if not winograd_applies(g):
        per_output, per_fma = c.pooled["direct"]
        fmas = direct_multiply_adds(g.in_channels, g.kernel, n_filters, g.out_height, g.out_width, c.name)
        modelled["direct"] = per_output * n_filters * g.out_cells + per_fma * fmas
    else:
        work = pooled_work(g.in_channels, n_filters, g.out_height, g.out_width, c.name)
        modelled.update({name: per_output * work[name][0] + per_fma * work[name][1]
                         for name, (per_output, per_fma) in c.pooled.items()
                         if name in work and (name != "winograd4" or (conv_winograd4.applies(g)
                                                                      and largest_input <= WINOGRAD4_INPUT_LIMIT))})
    return min(modelled, key=modelled.get)


def _dense_costs(in_channels: int, kernel: int, n_out: int, out_height: int, out_width: int,
                 winograd: bool, c: PathCosts) -> dict[str, float]:
    """Modelled ns a slot of the direct convolution and (``winograd``) Winograd's, from
    ``in_channels`` source channels to ``n_out`` output channels of ``out_height x out_width``."""
    units = n_out * out_height * out_width
    fmas = dense_multiply_adds(in_channels, kernel, n_out, out_height, out_width, c.name)
    costs = {"direct": c.direct_ns_per_unit * units + c.direct_ns_per_fma * fmas["direct"]}
    if winograd:
        costs["winograd"] = c.winograd_ns_per_unit * units + c.winograd_ns_per_fma * fmas["winograd"]
    return costs


def forward_path(input_density: float, geometry: ConvGeometry | None = None, n_filters: int = 0,
                 costs: PathCosts | None = None) -> str:
    """``"events"``, ``"direct"``, ``"winograd"`` or ``"dense"`` for input events of this
    density: for a stride-1 ``geometry`` with ``n_filters`` alive filters, the cheapest
    of the event path, the direct convolution and (3 x 3 kernels) Winograd's by the
    measured cost model (``costs``: this machine's, :data:`HOST`, unless given);
    otherwise events below its ``forward_events_below``, else the GEMM. ``"events"``,
    ``"direct"`` and ``"dense"`` name the ``conv_currents_*`` functions of
    :mod:`evsim.kernels.conv_forward`; ``"winograd"`` runs only fused with the LIF step
    (:func:`evsim.kernels.conv_lif.conv_lif_winograd`)."""
    c = costs or HOST
    if geometry is None or geometry.stride != 1:
        return "events" if input_density < c.forward_events_below else "dense"
    modelled = _stride1_costs(input_density, geometry, n_filters, winograd_applies(geometry), c)
    return min(modelled, key=modelled.get)


def _stride1_costs(input_density: float, geometry: ConvGeometry, n_filters: int, winograd: bool,
                   c: PathCosts) -> dict[str, float]:
    """Modelled ns a slot of a stride-1 convolution's forward paths, at this input density."""
    g = geometry
    taps = input_density * g.n_in * g.taps  # (event, tap) pairs, borders included
    modelled = _dense_costs(g.in_channels, g.kernel, n_filters, g.out_height, g.out_width, winograd, c)
    modelled["events"] = (c.events_ns_per_unit * n_filters * g.out_cells
                          + c.events_ns_per_add * taps * padded_lanes(n_filters) / 16)
    return modelled


def weight_grad_path(input_density: float, n_blocks: int, stride: int = 1, costs: PathCosts | None = None,
                     geometry: ConvGeometry | None = None) -> str:
    """``"csr"``, ``"events"``, ``"direct"`` or ``"dense"`` (the ``conv_weight_grad_*``
    functions of :mod:`evsim.kernels.conv_weight_grad`) for input events of this density,
    a ``grad_u`` of ``n_blocks`` blocks and the convolution's ``stride`` (``costs``: as
    for :func:`forward_path`; a table without a direct threshold needs the ``geometry``
    for its cost model)."""
    c = costs or HOST
    if stride == 1:
        if c.weight_grad_direct_above is not None:
            if input_density >= c.weight_grad_direct_above:
                return "direct"
        elif geometry is not None:
            modelled = _stride1_costs(input_density, geometry, n_blocks, False, c)
            if modelled["direct"] < modelled["events"]:
                return "direct"
    if input_density >= c.weight_grad_events_below:
        return "dense"
    if n_blocks <= c.weight_grad_csr_max_blocks and input_density < c.weight_grad_csr_below:
        return "csr"
    return "events"


def scatter_below(costs: PathCosts | None = None) -> float:
    """The share of nonzero entries of dL/du below which :func:`input_grad_path` scatters."""
    return (costs or HOST).input_grad_scatter_below


def input_grad_path(grad_density: float, mask_density: float | None = None, stride: int = 1,
                    geometry: ConvGeometry | None = None, n_filters: int = 0, costs: PathCosts | None = None) -> str:
    """``"gather"``, ``"scatter"``, ``"direct"``, ``"winograd"`` or ``"dense"`` (the
    ``conv_input_grad_*`` functions of :mod:`evsim.kernels.conv_input_grad`): gather when
    the layer below gives a mask of the cells that use the error (``mask_density``, the
    fraction marked) and few are marked, else scatter when dL/du is sparse
    (``grad_density``, its fraction of nonzeros), else the transposed convolution:
    direct or, for a 3 x 3 stride-1 ``geometry`` with ``n_filters`` alive filters where
    the forward's cost model says so, Winograd's (stride 1), or the GEMM (``costs``: as
    for :func:`forward_path`)."""
    c = costs or HOST
    if mask_density is not None and mask_density < c.input_grad_gather_below:
        return "gather"
    if grad_density < c.input_grad_scatter_below:
        return "scatter"
    if stride != 1:
        return "dense"
    if geometry is not None and winograd_applies(geometry):
        g = geometry
        modelled = _dense_costs(n_filters, g.kernel, g.in_channels, g.height, g.width, True, c)
        return min(modelled, key=modelled.get)
    return "direct"
