"""evsim.record and evsim inspect: the recordings are the forward pass's own spikes and
potentials, mapped back to every neuron; the command draws and writes them."""
import json

import numpy as np
import pytest

import evsim
from evsim.energy import count_network
from evsim.errors import ConfigError, ShapeError
from evsim.inspect import record_dataset
from evsim.network import Network
from tests.conftest import make_layer, one_line_error, run
from tests.runs import TINY_MNIST, toy_dataset


@pytest.fixture
def pruned_network(rng):
    first, _, _ = make_layer(rng, 20, 12, density=0.8)
    second, _, _ = make_layer(rng, 12, 4)
    first.kill(np.array([2, 7]))
    return Network([first, second])


def test_record_maps_alive_columns_back_to_neurons(pruned_network, rng):
    drive = (rng.random((6, 5, 20)) < 0.4).astype(np.float32)
    rec = evsim.record(pruned_network, drive, membrane=True)
    counts, traces = pruned_network.forward(drive)
    np.testing.assert_array_equal(rec.counts, counts)
    assert [s.shape for s in rec.spikes] == [(6, 5, 12), (6, 5, 4)] and rec.spikes[0].dtype == np.uint8
    alive = pruned_network.layers[0].alive_index
    np.testing.assert_array_equal(rec.spikes[0][:, :, alive], traces[0].spikes)
    assert not rec.spikes[0][:, :, [2, 7]].any()
    assert np.isnan(rec.u[0][:, :, [2, 7]]).all()
    np.testing.assert_array_equal(rec.u[0][:, :, alive], traces[0].u[:, :, :alive.size])
    np.testing.assert_array_equal(rec.spikes[1].sum(axis=0), counts)  # the output counts are its spikes
    assert rec.alive[0].sum() == 10 and rec.time_steps == 6 and rec.samples == 5


def test_recording_statistics(pruned_network, rng):
    drive = (rng.random((6, 5, 20)) < 0.4).astype(np.float32)
    rec = evsim.record(pruned_network, drive)
    assert rec.u is None
    rates = rec.firing_rates()
    np.testing.assert_allclose(rates[0], rec.spikes[0].mean(axis=(0, 1)))
    alive = rec.alive[0]
    np.testing.assert_allclose(rec.rate_per_step()[0], rec.spikes[0][:, :, alive].mean(axis=(1, 2)))
    reference = count_network(pruned_network, pruned_network.forward(drive)[1], False, 5).summary()
    summary = rec.summary()
    assert [layer["ops_per_step"] for layer in summary["layers"]] == [l["ops_per_step"] for l in reference["layers"]]
    assert summary["layers"][0]["alive"] == 10 and summary["layers"][0]["neurons"] == 12


def test_record_refuses_a_drive_that_does_not_fit(pruned_network):
    with pytest.raises(ShapeError, match="input must be"):
        evsim.record(pruned_network, np.zeros((3, 2, 7), np.float32))


def test_record_dataset_checks_the_split_and_the_network(pruned_network):
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        record_dataset(pruned_network, toy_dataset(), "dev")
    with pytest.raises(ConfigError, match=r"does not fit toy \(30 inputs, 4 classes\)"):
        record_dataset(pruned_network, toy_dataset(), "test", time_steps=4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run(["train", *TINY_MNIST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_inspect_command_writes_the_figure_in_its_format_and_json(tiny_run, tmp_path):
    result = run(["inspect", str(tiny_run), "--samples", "40", "--rasters", "2", "--plot", str(tmp_path / "i.svg"),
                  "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "i.svg").read_bytes().startswith(b"<?xml")
    summary = json.loads((tmp_path / "i.json").read_text())
    assert summary["samples"] == 40 and summary["time_steps"] == 4 and len(summary["layers"]) == 2
    assert len(summary["layers"][0]["firing_rate_per_step"]) == 4
    assert "L0 (24 hidden): " in result.output and "neurons alive, mean firing rate" in result.output


def test_inspect_says_a_pooling_layer_has_units_not_neurons(tmp_path):
    out = tmp_path / "conv"
    result = run(["train", "--dataset", "mnist", "--arch", "1x28x28-2C3-AP4-10", "--epochs", "1", "--time-steps", "2",
                  "--structure", "none", "--threads", "1", "--no-progress", "--checkpoints", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = run(["inspect", str(out), "--samples", "20"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("L")]
    assert lines[0].startswith("L0 (2C3 conv): 1568/1568 neurons alive, mean firing rate")
    assert lines[1].startswith("L1 (AP4 pool, values): 98 units, mean output") and "neurons" not in lines[1]
    assert lines[2].startswith("L2 (10 output): 10/10 neurons alive")


def test_a_pooling_of_direct_input_is_shown_as_values_not_rates(tmp_path, monkeypatch):
    """Pooled analog input was printed as "% of steps", drawn as rates and, in data show,
    summed over the steps under a "spikes" colour bar."""
    out = tmp_path / "direct"
    result = run(["train", "--dataset", "mnist", "--encoding", "direct", "--arch", "1x28x28-AP2-2C3-AP2-10",
                  "--epochs", "1", "--time-steps", "3", "--structure", "none", "--threads", "1", "--no-progress",
                  "--checkpoints", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = []
    monkeypatch.setattr("evsim.inspect.save_figure", lambda fig, path: figures.append(fig))
    result = run(["inspect", str(out), "--samples", "20"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("L")]
    assert lines[0].startswith("L0 (AP2 pool, values): 196 units, mean output value 0.") and "%" not in lines[0]
    assert lines[2].startswith("L2 (AP2 pool, values): 98 units, mean output") and "% of steps" in lines[2]
    labels = [ax.get_xlabel() for ax in figures[0].axes]
    assert "mean output value" in labels and labels.count("firing rate (% of steps)") == 2
    assert labels.count("mean output (% of steps)") == 1  # L2: a pooling of spikes

    from evsim.checkpoint import load_network
    from evsim.data import DataOptions, load_dataset
    from evsim.feature_maps import layer_pictures
    from evsim.inspect import record_sample

    network = load_network(out / "network.npz")
    dataset = load_dataset("mnist", DataOptions(time_steps=3, encoding="direct"))
    rec, drive = record_sample(network, dataset, "test", 0, 3, 0)
    pooled = layer_pictures(rec, network)[0]
    image = dataset.test.inputs[0].reshape(28, 28).astype(np.float64)
    np.testing.assert_allclose(pooled.values[0], image.reshape(14, 2, 14, 2).mean(axis=(1, 3)), rtol=1e-6)
    assert pooled.scale == "input value, window mean" and "the same at every step" in pooled.title


def test_inspect_default_figure_and_bad_suffix(tiny_run, tmp_path):
    result = run(["inspect", str(tiny_run), "--samples", "10"])
    assert result.exit_code == 0, result.output
    assert (tiny_run / "inspect-latest-test.png").read_bytes().startswith(b"\x89PNG")
    assert "cannot write a figure as .txt" in one_line_error(run(["inspect", str(tiny_run), "--plot",
                                                                  str(tmp_path / "i.txt")]))


def test_layer_names_say_what_each_layer_of_a_conv_network_is():
    import evsim
    from evsim.inspect import layer_names

    network = evsim.Network.from_spec("2x8x8-3C3-AP2-6-4")
    assert layer_names(network) == ["3C3 conv", "AP2 pool, values", "6 hidden", "4 output"]


@pytest.mark.parametrize("pool", ["AP2", "MP2"])
def test_a_pooling_layers_firing_rate_is_its_mean_output_in_profile_and_inspect(pool, rng):
    """One definition in both commands: a pooling's rate is its mean output per unit and
    step (average pooling's outputs are shares of a window, not spikes to count)."""
    network = evsim.Network.from_spec(f"2x8x8-3C3-{pool}-6-4", rng=rng)
    drive = (rng.random((5, 4, 128)) < 0.4).astype(np.float32)
    inspected = evsim.record(network, drive)
    pooled = inspected.spikes[1]
    profiled = [layer["firing_rate"] for layer in evsim.profile(network, [drive]).summary()["layers"]]
    assert profiled == pytest.approx([layer["firing_rate_alive"] for layer in inspected.summary()["layers"]])
    assert profiled[1] == pytest.approx(pooled.mean()) and profiled[1] > 0
    if pool == "AP2":  # outputs below 1: the share of nonzero outputs is another, larger number
        assert 0 < pooled[pooled > 0].min() < 1 and (pooled != 0).mean() > 1.5 * profiled[1]


@pytest.mark.parametrize("command,option,name", [
    (["eval"], "--json", "config.json"),
    (["eval"], "--plot", "training.png"),
    (["inspect"], "--json", "summary.json"),
    (["profile"], "--png", "training.png"),
    (["data", "show", "--dataset", "mnist"], "--out", "training.png"),
])
def test_no_command_writes_over_a_runs_own_files(tiny_run, command, option, name):
    before = {path.name: path.read_bytes() for path in tiny_run.iterdir() if path.is_file()}
    target = tiny_run / name
    args = [*command, *([] if command[0] == "data" else [str(tiny_run)]), option, str(target)]
    message = one_line_error(run(args))
    assert str(target) in message and f"is a run's {name}" in message and "choose another file name" in message
    assert {path.name: path.read_bytes() for path in tiny_run.iterdir() if path.is_file()} == before


CONV6 = "2x12x12-4C3-AP2-8C3-AP2-16-10"  # six layers, two of them pooling: the tallest figure


def _inspection_figure(monkeypatch, rng, density: float = 0.4):
    from evsim.inspect import analog_outputs, layer_names, plot_inspection

    figures = []
    monkeypatch.setattr("evsim.inspect.save_figure", lambda fig, path: figures.append(fig))
    network = evsim.Network.from_spec(CONV6, rng=rng)
    rec = evsim.record(network, (rng.random((4, 3, 288)) < density).astype(np.float32))
    plot_inspection(rec, "i.png", rasters=2, title="a run", layer_names=layer_names(network),
                    analog=analog_outputs(rec, network))
    fig = figures[0]
    fig.canvas.draw()
    return fig, {ax.get_title(): ax for ax in fig.axes}


def test_inspection_figure_title_is_clear_of_the_panel_titles(monkeypatch, rng):
    fig, axes = _inspection_figure(monkeypatch, rng)
    suptitle = fig._suptitle.get_window_extent()
    assert len(axes) > 6 and not [title for title, ax in axes.items()
                                  if title and ax.title.get_window_extent().overlaps(suptitle)]


def test_inspection_figure_labels_a_pooling_of_spikes_as_units(monkeypatch, rng):
    """The README: a pooling layer has no neurons, its firing rate is its mean output."""
    _, axes = _inspection_figure(monkeypatch, rng)
    for k in (1, 3):
        histogram = next(ax for title, ax in axes.items() if title.startswith(f"L{k}: mean "))
        assert (histogram.get_xlabel(), histogram.get_ylabel()) == ("mean output (% of steps)", "units")
        assert histogram.get_title().endswith("always 0")
        assert axes[f"L{k}: mean output per step"].get_ylabel() == "mean output (%)"
    assert axes["L0: firing rate per step"].get_ylabel() == "% of alive neurons firing"


def test_inspection_figure_of_a_silent_network_has_no_negative_axes(monkeypatch, rng):
    _, axes = _inspection_figure(monkeypatch, rng, density=0.0)
    plots = [ax for title, ax in axes.items() if title.startswith("L") or title.startswith("synaptic")]
    assert len(plots) == 12 + 1
    for ax in plots:
        assert min(ax.get_xlim()) >= 0 and min(ax.get_ylim()) >= 0, ax.get_title()


def test_inspection_legend_says_which_layers_did_no_operations(monkeypatch, rng):
    """Zeros draw nothing on a log scale: the pooling layers (no synapses) were listed, not drawn."""
    _, axes = _inspection_figure(monkeypatch, rng)
    ops = axes["synaptic operations per time step"]
    legend = [text.get_text() for text in ops.get_legend().get_texts()]
    assert legend[1].endswith("(SOPs): 0") and legend[3].endswith("(SOPs): 0")
    assert legend[0].endswith("(SOPs)") and legend[2].endswith("(SOPs)")
