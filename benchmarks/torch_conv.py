"""The paper's N-MNIST convolutional SNN in plain PyTorch, as the authors' code runs it:
the baseline that evsim's convolution is measured against.

2x32x32 -> 15C3 (pad 1) -> LIF -> AP2 -> 40C3 (pad 1) -> LIF -> AP2 -> flatten ->
FC 2560-300 -> LIF -> FC 300-10 -> LIF, a Python loop over T = 20 steps, each step
running the whole network on that step's frame. STBP LIF: ``u = decay*u*(1 - o) + I``,
decay 0.2, threshold 0.5, spike ``u > 0.5``, rectangular surrogate ``|u - 0.5| < 0.5``
in a custom autograd Function; output = spike count / T; MSE against one-hot; Adam
(lr 1e-3). Input: frames with the activity of real N-MNIST (``--activity``, 6 % of
cells nonzero, counts 1-3).

The same network with snnTorch's ``Leaky`` neurons (beta 0.2, threshold 0.5, reset to
zero, the same rectangular surrogate), when snnTorch is installed: ``SnnTorchNet``.

Reports training (forward + backward + Adam step) and inference (forward under
``no_grad``) samples/s at batch 100, for each thread count (``torch.set_num_threads``),
best and median of ``--batches`` timed batches after two warm-up batches.

Run: python -m benchmarks.torch_conv [--threads 1,2] [--batches 5] [--json out.json]
(needs ``torch``; CPU only.)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DECAY, V_TH, WIDTH = 0.2, 0.5, 0.5
N_STEPS, BATCH = 20, 100


class SpikeFn(torch.autograd.Function):
    """Heaviside spike with the rectangular surrogate, as the authors' ``ActFun``."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return u.gt(V_TH).float()

    @staticmethod
    def backward(ctx, grad_output):
        (u,) = ctx.saved_tensors
        return grad_output * ((u - V_TH).abs() < WIDTH).float()


def mem_update(op, x, mem, spike):
    mem = mem * DECAY * (1.0 - spike) + op(x)
    return mem, SpikeFn.apply(mem)


class NMNISTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 15, 3, 1, 1)
        self.conv2 = nn.Conv2d(15, 40, 3, 1, 1)
        self.fc1 = nn.Linear(40 * 8 * 8, 300)
        self.fc2 = nn.Linear(300, 10)

    def forward(self, frames):
        """``frames`` [B, T, 2, 32, 32] -> output rates [B, 10]."""
        batch = frames.shape[0]
        c1_mem = c1_spike = torch.zeros(batch, 15, 32, 32)
        c2_mem = c2_spike = torch.zeros(batch, 40, 16, 16)
        h1_mem = h1_spike = torch.zeros(batch, 300)
        h2_mem = h2_spike = h2_sum = torch.zeros(batch, 10)
        for t in range(frames.shape[1]):
            c1_mem, c1_spike = mem_update(self.conv1, frames[:, t], c1_mem, c1_spike)
            x = F.avg_pool2d(c1_spike, 2)
            c2_mem, c2_spike = mem_update(self.conv2, x, c2_mem, c2_spike)
            x = F.avg_pool2d(c2_spike, 2).view(batch, -1)
            h1_mem, h1_spike = mem_update(self.fc1, x, h1_mem, h1_spike)
            h2_mem, h2_spike = mem_update(self.fc2, h1_spike, h2_mem, h2_spike)
            h2_sum = h2_sum + h2_spike
        return h2_sum / frames.shape[1]


class RectangularSurrogate(torch.autograd.Function):
    """snnTorch's ``spike_grad`` (called on ``mem - threshold``) with the rectangular
    surrogate of :class:`SpikeFn`."""

    @staticmethod
    def forward(ctx, shifted):
        ctx.save_for_backward(shifted)
        return shifted.gt(0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (shifted,) = ctx.saved_tensors
        return grad_output * (shifted.abs() < WIDTH).float()


def snntorch_net() -> nn.Module:
    """:class:`NMNISTNet` with snnTorch's ``Leaky`` neurons, stepped the way snnTorch's
    tutorials step a convolutional SNN."""
    import snntorch as snn

    class SnnTorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 15, 3, 1, 1), nn.Conv2d(15, 40, 3, 1, 1)
            self.fc1, self.fc2 = nn.Linear(40 * 8 * 8, 300), nn.Linear(300, 10)
            self.lifs = nn.ModuleList(snn.Leaky(beta=DECAY, threshold=V_TH, reset_mechanism="zero",
                                                spike_grad=RectangularSurrogate.apply) for _ in range(4))

        def forward(self, frames):
            batch = frames.shape[0]
            mems = [lif.init_leaky() for lif in self.lifs]
            total = 0
            for t in range(frames.shape[1]):
                spikes, mems[0] = self.lifs[0](self.conv1(frames[:, t]), mems[0])
                spikes, mems[1] = self.lifs[1](self.conv2(F.avg_pool2d(spikes, 2)), mems[1])
                spikes, mems[2] = self.lifs[2](self.fc1(F.avg_pool2d(spikes, 2).view(batch, -1)), mems[2])
                spikes, mems[3] = self.lifs[3](self.fc2(spikes), mems[3])
                total = total + spikes
            return total / frames.shape[1]

    return SnnTorchNet()


def nmnist_like(rng, activity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [B, T, 2, 32, 32] with ``activity`` of cells nonzero (counts 1-3), and labels."""
    shape = (BATCH, N_STEPS, 2, 32, 32)
    frames = (rng.random(shape) < activity) * rng.integers(1, 4, shape)
    return torch.from_numpy(frames.astype(np.float32)), torch.from_numpy(rng.integers(0, 10, BATCH))


def steps(n_threads: int, n_batches: int, activity: float, seed: int = 0, model=NMNISTNet) -> dict:
    """``{"train": step, "inference": step}`` for the network ``model()`` builds
    (:class:`NMNISTNet` or :func:`snntorch_net`): ``step(k)`` runs batch ``k`` of
    ``n_batches`` (two warm-up batches already run), so that a caller can interleave its
    timings with another contestant's."""
    torch.set_num_threads(n_threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = [nmnist_like(rng, activity) for _ in range(n_batches)]

    def train_step(k):
        frames, labels = batches[k]
        optimizer.zero_grad()
        rates = net(frames)
        loss = F.mse_loss(rates, F.one_hot(labels, 10).float())
        loss.backward()
        optimizer.step()

    def infer_step(k):
        with torch.no_grad():
            net(batches[k][0])

    for warm_up in range(2):
        train_step(warm_up % n_batches)
        infer_step(warm_up % n_batches)
    return {"train": train_step, "inference": infer_step}


def measure(n_threads: int, n_batches: int, activity: float, seed: int = 0, model=NMNISTNet) -> dict:
    """Samples/s of the network ``model()`` builds, best and median of ``n_batches``."""
    run = steps(n_threads, n_batches, activity, seed, model)
    out = {"threads": n_threads}
    for name, step in run.items():
        times = []
        for k in range(n_batches):
            start = time.perf_counter()
            step(k)
            times.append(time.perf_counter() - start)
        out[f"{name}_samples_s_best"] = BATCH / min(times)
        out[f"{name}_samples_s_median"] = BATCH / float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--activity", type=float, default=0.06)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    for n_threads in (int(t) for t in args.threads.split(",")):
        r = measure(n_threads, args.batches, args.activity)
        results.append(r)
        print(f"torch {torch.__version__} threads {n_threads}: training {r['train_samples_s_best']:.0f} "
              f"(median {r['train_samples_s_median']:.0f}) samples/s, inference {r['inference_samples_s_best']:.0f} "
              f"(median {r['inference_samples_s_median']:.0f}) samples/s", flush=True)
    if args.json:
        import json
        from pathlib import Path
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
