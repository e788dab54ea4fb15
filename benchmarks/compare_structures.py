"""SD-SNN vs no pruning vs magnitude pruning vs SET, over several seeds, same trainer.

For each seed: train with ``sdsnn``, then ``none``, then ``magnitude`` and ``set`` with
their target sparsity set to the compression SD-SNN reached on that seed's developing
layers (so the baselines are compared at equal compression). Prints a markdown table
of mean +- std and writes every run's summary as JSON.

Run: python -m benchmarks.compare_structures --dataset nmnist --seeds 0 1 2 [--structures sdsnn none]
     [--epochs N] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from evsim.data import DataOptions, load_dataset
from evsim.config import preset
from evsim.structure import SDSNNConfig
from evsim.config import TrainConfig
from evsim.train import Trainer

STRUCTURES = ("sdsnn", "none", "magnitude", "set")


def base_config(dataset: str, epochs: int | None, seed: int) -> TrainConfig:
    p = preset(dataset)
    return TrainConfig(dataset=dataset, data=DataOptions(time_steps=p["time_steps"]), epochs=epochs or p["epochs"],
                       batch_size=p["batch_size"], time_steps=p["time_steps"], hidden=tuple(p["hidden"]), lr=p["lr"],
                       optimizer=p["optimizer"], loss=p["loss"], seed=seed, dev_interval=p["dev_interval"],
                       sdsnn=SDSNNConfig(rho_init=p["rho_init"], rho_max=p.get("rho_max", 65.0)))


def developing_sparsity(trainer: Trainer) -> float:
    layers = [layer for layer in trainer.network.layers if layer.develops]
    return 1 - sum(layer.store.nnz for layer in layers) / sum(layer.n_in * layer.n_out for layer in layers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nmnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--structures", nargs="+", choices=STRUCTURES, default=list(STRUCTURES),
                        help="subset to run; magnitude/set need sdsnn first (they match its compression)")
    parser.add_argument("--sparsity", type=float, default=None,
                        help="target sparsity for magnitude/set when sdsnn is not run first")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, base_config(args.dataset, args.epochs, 0).data)
    print(f"data: {dataset.name} ({dataset.source})", flush=True)
    results = {name: [] for name in args.structures}
    for seed in args.seeds:
        sparsity = args.sparsity
        for name in args.structures:
            config = dataclasses.replace(base_config(args.dataset, args.epochs, seed), structure=name,
                                         target_sparsity=sparsity or 0.5)
            trainer = Trainer(config, dataset)
            summary = trainer.fit(progress=False, echo=lambda line: None)
            if name == "sdsnn":
                sparsity = developing_sparsity(trainer)
            summary["seed"] = seed
            results[name].append(summary)
            print(f"seed {seed} {name:9s} test {100 * summary['test_acc']:.2f}%  "
                  f"compression {100 * summary['compression']:.1f}%  {summary['wall_s']:.0f}s", flush=True)
    print("\n| structure | test accuracy (%) | compression (%) | neurons pruned (%) | seeds |\n| --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        acc = np.array([r["test_acc"] for r in runs]) * 100
        comp = np.array([r["compression"] for r in runs]) * 100
        pruned = np.array([r["neurons_pruned"] for r in runs]) * 100
        print(f"| {name} | {acc.mean():.2f} ± {acc.std():.2f} | {comp.mean():.1f} ± {comp.std():.1f} | "
              f"{pruned.mean():.1f} | {len(runs)} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"data_source": dataset.source, "results": results}, indent=2))


if __name__ == "__main__":
    main()
