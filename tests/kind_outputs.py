"""The outputs of every register-blocked kernel on random, non-dyadic data:
``python -m tests.kind_outputs FILE.npz`` writes them under this process's machine kind
(``EVSIM_MACHINE_KIND``), so that tests/test_machine_kinds.py can compare two kinds bit
for bit."""
import sys

import numpy as np

from evsim.kernels.conv_forward import conv_currents_direct
from evsim.kernels.conv_geometry import conv_geometry
from evsim.kernels.conv_input_grad import conv_input_grad_direct, conv_input_grad_winograd
from evsim.kernels.conv_lif import conv_lif_direct, conv_lif_winograd
from evsim.kernels.conv_lif_pool import conv_lif_pool
from evsim.kernels.conv_weight_grad import conv_weight_grad_direct
from evsim.kernels.events import dense_to_events
from evsim.kernels.machine import KIND
from evsim.layers.linear import _input_grad_dense
from tests.test_conv_kernels import block_csr

# (channels, height, width, filters, pad): odd filter counts leave a last block of one,
# and heights not a multiple of 4 leave short row blocks.
SHAPES = [(3, 9, 8, 7, 1), (2, 16, 16, 13, 1), (5, 7, 19, 6, 0)]


def outputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(23)
    result = {"kind": np.array(KIND)}
    for n, (channels, height, width, filters, pad) in enumerate(SHAPES):
        n_steps, batch = 3, 2
        weight = rng.normal(0.0, 0.3, (filters, channels, 3, 3)).astype(np.float32)
        stored = rng.random((channels, filters)) < 0.8
        weight *= stored.T[:, :, None, None]
        indptr, columns, data = block_csr(weight, stored)
        x = ((rng.random((n_steps, batch, channels, height, width)) < 0.4)
             * rng.random((n_steps, batch, channels, height, width))).astype(np.float32)
        ev = dense_to_events(x.reshape(n_steps, batch, -1))
        geo = conv_geometry(channels, height, width, 3, 1, pad)
        bias = rng.normal(0.0, 0.1, filters).astype(np.float32)
        shape = (n_steps, batch, filters * geo.out_cells)
        currents = np.empty((n_steps * batch, shape[2]), np.float32)
        conv_currents_direct(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, currents)
        result[f"{n}_currents"] = currents
        for name, lif in (("direct", conv_lif_direct), ("winograd", conv_lif_winograd)):
            u, spikes = np.empty(shape, np.float32), np.empty(shape, np.uint8)
            lif(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, True, u, spikes)
            result[f"{n}_{name}_u"], result[f"{n}_{name}_spikes"] = u, spikes
            pooled = np.zeros((n_steps, batch, filters * (geo.out_height // 2) * (geo.out_width // 2)), np.uint8)
            conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, name, np.arange(filters), pooled)
            result[f"{n}_{name}_pooled"] = pooled
        grad_u = (rng.normal(0.0, 1.0, (n_steps * batch, shape[2]))
                  * (rng.random((n_steps * batch, shape[2])) < 0.3)).astype(np.float32)
        result[f"{n}_weight_grad"] = conv_weight_grad_direct(ev.ptr, ev.idx, ev.val, grad_u, indptr, columns, geo)
        for name, input_grad in (("direct", conv_input_grad_direct), ("winograd", conv_input_grad_winograd)):
            out = np.empty((n_steps * batch, geo.n_in), np.float32)
            input_grad(grad_u, indptr, columns, data, geo, out)
            result[f"{n}_{name}_input_grad"] = out
    # A fully connected layer's input gradient (evsim.kernels.grad.input_grad_rows), zero
    # rows and an odd count of the others included.
    grad_u = (rng.normal(0.0, 1.0, (37, 300)) * (rng.random((37, 300)) < 0.3)).astype(np.float32)
    grad_u[::4] = 0.0
    result["fc_input_grad"] = _input_grad_dense(grad_u, rng.normal(0.0, 0.1, (200, 300)).astype(np.float32))
    return result


if __name__ == "__main__":
    np.savez(sys.argv[1], **outputs())
