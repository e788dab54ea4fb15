"""A process forked after evsim's kernels ran is refused in one line instead of killed
(GNU OpenMP is not fork-safe: the child's first parallel loop sent it SIGTERM, and a
multiprocessing pool waited for it forever); spawned workers and forks made before any
kernel ran work."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import numba
    import numpy as np
    import evsim
    from evsim.errors import ConfigError

    def count(network):
        x = np.zeros((4, 2, network.layers[0].n_in), np.float32)
        x[:, :, ::3] = 3.0
        try:
            return float(network.forward(x, record=False)[0].sum())
        except ConfigError as exc:
            return str(exc)

    def other_entry_points(network):  # dense_to_events and an optimizer step run parallel kernels too
        said = []
        x = np.zeros((4, 2, network.layers[0].n_in), np.float32)
        x[:, :, ::3] = 3.0
        for call in (lambda: evsim.dense_to_events(x),
                     lambda: evsim.Optimizer("adam", 1e-3).step([(np.zeros(3, np.float32), np.ones(3, np.float32),
                                                                  {})])):
            try:
                call()
                said.append("ran")
            except ConfigError as exc:
                said.append(str(exc)[:40])
        return " | ".join(said)

    if __name__ == "__main__":
        network = evsim.Network.from_spec("2x12x12-6C3-AP2-10", rng=0)
        for layer in network.layers:
            if hasattr(layer, "store"):
                layer.store.data[...] *= 4.0  # spikes to count
        with multiprocessing.get_context("fork").Pool(1) as pool:  # before any kernel ran: runs
            print("fork before:", pool.apply(count, (network,)), flush=True)
        print("parent:", count(network), flush=True)
        print("layer:", numba.threading_layer(), flush=True)
        with multiprocessing.get_context(sys.argv[1]).Pool(1) as pool:
            print("after:", pool.apply(count, (network,)), flush=True)
            print("others:", pool.apply(other_entry_points, (network,)), flush=True)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="fork after OpenMP is a Linux matter")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_fork_after_the_kernels_ran_is_refused_and_spawn_runs(tmp_path, method):
    script = tmp_path / "workers.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), method], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert float(lines["parent"]) > 0 and lines["fork before"] == lines["parent"]
    assert "Terminating" not in done.stderr
    refused = "this process was forked from one that had run evsim's kernels"
    if method == "spawn":
        assert lines["after"] == lines["parent"] and lines["others"] == "ran | ran"
    elif lines["layer"] == "omp":
        assert lines["after"].startswith(refused) and "multiprocessing.get_context('spawn')" in lines["after"]
        assert lines["others"] == f"{refused[:40]} | {refused[:40]}"
    else:  # TBB or workqueue: fork-safe
        assert lines["after"] == lines["parent"] and lines["others"] == "ran | ran"
