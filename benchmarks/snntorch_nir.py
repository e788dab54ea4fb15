"""evsim's NIR export of the paper's N-MNIST network, loaded and run by snnTorch's NIR import.

Reports the LIF parameters snnTorch's import makes of the graph and how closely its
output spikes agree with evsim's on one batch (T = 20, 8 samples, 6 % input activity).
Needs torch, snntorch and nirtorch. Run: python -m benchmarks.snntorch_nir
"""
import numpy as np, torch, evsim, nir
from snntorch.import_nir import import_from_nir
from evsim.nir_io import network_to_nir
rng = np.random.default_rng(0)
net = evsim.Network.from_spec("2x32x32-15C3-AP2-40C3-AP2-300-10", rng=1)
for layer in net.layers:  # weights that make every layer fire on a sample
    if hasattr(layer, "store"):
        layer.store.data[...] *= 4
x = ((rng.random((20, 8, 2048)) < 0.06) * rng.integers(1, 4, (20, 8, 2048))).astype(np.float32)
counts, traces = net.forward(x)
graph = network_to_nir(net)
module = import_from_nir(graph)
flattens = [m for m in module.modules() if isinstance(m, torch.nn.Flatten)]
for m in flattens:  # NIR's Flatten dims exclude the batch; snnTorch's import uses them as torch dims
    m.start_dim += 1
leaky = [m for m in module.modules() if type(m).__name__ == "Leaky"]
print("snnTorch Leaky betas:", sorted({round(float(v), 6) for m in leaky for v in m.beta.flatten()}), "thresholds:",
      sorted({round(float(v), 6) for m in leaky for v in torch.as_tensor(m.threshold).flatten()}), "(evsim: decay 0.2, threshold 0.5)")
out = []
state = None
with torch.no_grad():
    for t in range(20):
        frame = torch.from_numpy(x[t].reshape(8, 2, 32, 32))
        y, state = module(frame, state)
        out.append(y.numpy().reshape(8, -1))
snn_counts = np.sum(out, axis=0)
print("evsim output spikes per sample:", counts.sum(1)[:4], "snnTorch:", snn_counts.sum(1)[:4])
print("same counts:", np.mean(snn_counts == counts), "same argmax:", np.mean(snn_counts.argmax(1) == counts.argmax(1)))
