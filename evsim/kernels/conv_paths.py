"""Which variant of each convolution kernel a layer runs, chosen once per call from densities.

The crossovers are measured by ``benchmarks/bench_conv_kernels.py`` on the paper's N-MNIST
shapes (2x32x32 -> 15C3 and 15x16x16 -> 40C3, pad 1; T = 20, batch 100) at 1 and 2
threads, recorded in ``benchmarks/RESULTS.md`` ("Convolution kernels: event against
dense paths"). On the shared 2-core machine the dense GEMM paths degraded far more under
load than the event paths, so the constants below are the *lower* ends of the measured
ranges (where a quiet machine makes dense most competitive).
"""
from __future__ import annotations

import numpy as np

from evsim.kernels.conv_forward import conv_currents_csr, conv_currents_dense, conv_currents_events
from evsim.kernels.conv_input_grad import (conv_input_grad_dense, conv_input_grad_gather, conv_input_grad_gather_csr,
                                           conv_input_grad_scatter, conv_input_grad_scatter_csr)
from evsim.kernels.conv_weight_grad import conv_weight_grad_csr, conv_weight_grad_dense, conv_weight_grad_events

# Path name -> kernel; every pair of a table gives the same result (tests/test_conv_kernels.py).
FORWARD_PATHS = {"events": conv_currents_events, "csr": conv_currents_csr, "dense": conv_currents_dense}
WEIGHT_GRAD_PATHS = {"events": conv_weight_grad_events, "csr": conv_weight_grad_csr, "dense": conv_weight_grad_dense}
INPUT_GRAD_PATHS = {"scatter": conv_input_grad_scatter, "scatter_csr": conv_input_grad_scatter_csr,
                    "gather": conv_input_grad_gather, "gather_csr": conv_input_grad_gather_csr,
                    "dense": conv_input_grad_dense}

# Forward currents: the row-layout event path beat im2col + GEMM up to 28.0 % (conv1) and
# 27.7 % (conv2) input activity at 1 thread; at 2 threads under load, at every activity
# measured (<= 30 %).
FORWARD_EVENTS_BELOW = 0.25
# Weight gradient: an event path beat the GEMM at every activity measured (1-30 %) on both
# shapes, at 1 and 2 threads (conv2, 30 %, 1 thread: 258 against 350 ms).
WEIGHT_GRAD_EVENTS_BELOW = 0.30
# A gather of one 16-lane vector per tap from dL/du (the csr variant) beat transposing
# every slot's dL/du into the row layout when the blocks fit one vector: conv1's 15
# filters, 7-33 against 37-53 ms at 1-10 % (1 thread); conv2's 40 filters lost
# (100-254 against 62-139 ms at 2-10 %).
WEIGHT_GRAD_CSR_MAX_BLOCKS = 16
# Input gradient (conv2): gather at the marked cells beat the GEMM + col2im up to 23.8 %
# of cells marked (1 thread); scatter from dL/du's nonzeros up to 17.1 %.
INPUT_GRAD_GATHER_BELOW = 0.20
INPUT_GRAD_SCATTER_BELOW = 0.15


def event_density(ptr: np.ndarray, n_units: int) -> float:
    """Events per (slot x unit) of an event batch (``ptr`` int64 ``[T*B + 1]``)."""
    n_slots = ptr.shape[0] - 1
    return float(ptr[-1] - ptr[0]) / max(1, n_slots * n_units)


def forward_path(input_density: float) -> str:
    """``"events"`` (:func:`evsim.kernels.conv_forward.conv_currents_events`) or ``"dense"``
    (:func:`evsim.kernels.conv_forward.conv_currents_dense`) for input events of this
    density."""
    return "events" if input_density < FORWARD_EVENTS_BELOW else "dense"


def weight_grad_path(input_density: float, n_blocks: int) -> str:
    """``"csr"``, ``"events"`` or ``"dense"`` (the ``conv_weight_grad_*`` functions of
    :mod:`evsim.kernels.conv_weight_grad`) for input events of this density and a
    ``grad_u`` of ``n_blocks`` blocks."""
    if input_density >= WEIGHT_GRAD_EVENTS_BELOW:
        return "dense"
    return "csr" if n_blocks <= WEIGHT_GRAD_CSR_MAX_BLOCKS else "events"


def input_grad_path(grad_density: float, mask_density: float | None = None) -> str:
    """``"gather"``, ``"scatter"`` or ``"dense"`` (the ``conv_input_grad_*`` functions of
    :mod:`evsim.kernels.conv_input_grad`): gather when the layer below gives a mask of
    the cells that use the error (``mask_density``, the fraction marked) and few are
    marked, else scatter when dL/du is sparse (``grad_density``, its fraction of
    nonzeros), else dense."""
    if mask_density is not None and mask_density < INPUT_GRAD_GATHER_BELOW:
        return "gather"
    return "scatter" if grad_density < INPUT_GRAD_SCATTER_BELOW else "dense"
