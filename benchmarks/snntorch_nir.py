"""evsim's NIR export, loaded and run by snnTorch's NIR import: do the spikes agree?

For the default 2312-800-10 network and the paper's N-MNIST convolutional network, on one
batch (T = 20, 8 samples, 6 % input activity, weights x4 so that every layer fires),
reports the LIF parameters snnTorch's import makes of the graph and how often its output
spike counts and predicted classes equal evsim's. snnTorch's importer reads NIR's
``Flatten`` dimensions (which exclude the batch) as torch dimensions; the script shifts
them by one so that the convolutional graph runs at all.
Needs torch, snntorch and nirtorch. Run: python -m benchmarks.snntorch_nir
"""
from __future__ import annotations

import numpy as np
import torch
from snntorch.import_nir import import_from_nir

import evsim
from evsim.nir_io import network_to_nir


def compare(spec: str, rng: np.random.Generator) -> None:
    net = evsim.Network.from_spec(spec, rng=1)
    for layer in net.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 4
    n_in = net.sizes[0]
    x = ((rng.random((20, 8, n_in)) < 0.06) * rng.integers(1, 4, (20, 8, n_in))).astype(np.float32)
    counts, _ = net.forward(x)
    module = import_from_nir(network_to_nir(net))
    for m in module.modules():
        if isinstance(m, torch.nn.Flatten):
            m.start_dim += 1
    leaky = [m for m in module.modules() if type(m).__name__ == "Leaky"]
    betas = sorted({round(float(v), 6) for m in leaky for v in torch.as_tensor(m.beta).flatten()})
    thresholds = sorted({round(float(v), 6) for m in leaky for v in torch.as_tensor(m.threshold).flatten()})
    shape = getattr(net.layers[0], "in_shape", (n_in,))
    out, state = [], None
    with torch.no_grad():
        for t in range(20):
            y, state = module(torch.from_numpy(x[t].reshape((8,) + tuple(shape))), state)
            out.append(y.numpy().reshape(8, -1))
    theirs = np.sum(out, axis=0)
    print(f"{spec}: snnTorch beta {betas}, threshold {thresholds} (evsim decay 0.2, threshold 0.5); output spikes "
          f"per sample evsim {counts.sum(1).astype(int).tolist()}, snnTorch {theirs.sum(1).astype(int).tolist()}; "
          f"equal counts {np.mean(theirs == counts):.1%}, equal predicted class "
          f"{np.mean(theirs.argmax(1) == counts.argmax(1)):.1%}")


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    for spec in ("2312-800-10", "2x32x32-15C3-AP2-40C3-AP2-300-10"):
        compare(spec, rng)
