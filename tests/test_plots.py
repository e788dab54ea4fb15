"""Figures: the format follows the file's suffix; training.png, profile.png and data show
hold what a talk needs (checked on the matplotlib figures themselves)."""
import json

import pytest

import evsim.plots as plots
from evsim.errors import ConfigError
from tests.conftest import one_line_error, run
from tests.runs import TINY_MNIST_NETWORK

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


def _epoch(epoch, **extra):
    return {"type": "epoch", "epoch": epoch, "train_loss": 0.1 / epoch, "train_acc": 0.5 + 0.05 * epoch,
            "test_acc": 0.6 + 0.04 * epoch, "compression": 0.0, "neurons_pruned": 0.0, "lr": 1e-3, **extra}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions would save, kept open for inspection."""
    kept = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: kept.append(fig))
    yield kept
    for fig in kept:
        plots._pyplot().close(fig)


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_figure_writes_the_format_its_suffix_names(tmp_path, suffix):
    fig = plots._pyplot().figure()
    plots.save_figure(fig, tmp_path / f"f{suffix.upper()}")
    assert (tmp_path / f"f{suffix.upper()}").read_bytes().startswith(MAGIC[suffix])


@pytest.mark.parametrize("name", ["f.txt", "f"])
def test_save_figure_refuses_other_suffixes(tmp_path, name):
    with pytest.raises(ConfigError, match=r"cannot write a figure as .*end the name with .png, .pdf or .svg"):
        plots.save_figure(plots._pyplot().figure(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_training_figure_without_structure_has_no_structure_panel(figures):
    rows = [_epoch(e, val_acc=0.55 + 0.03 * e) for e in (1, 2, 3)]
    plots.plot_training(rows, "x.png", "mnist-5k", {"name": "my-run", "dataset": "mnist", "hidden": [24],
                                                    "structure": "none", "lr": 1e-3, "optimizer": "adam"})
    fig = figures[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert "structure" not in titles and "accuracy" in titles and "loss and learning rate" in titles
    suptitle = fig._suptitle.get_text()
    assert suptitle.startswith("my-run: mnist, hidden 24, structure none, adam lr 0.001") and "mnist-5k" in suptitle
    accuracy = fig.axes[0]
    labels = [line.get_label() for line in accuracy.get_lines()]
    assert "train (running mean)" in labels and "validation" in labels and "test" in labels
    assert any(label.startswith("test at best val.") for label in labels)
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_training_figure_with_development_places_steps_on_the_epoch_axis(figures):
    rows = [_epoch(1, compression=0.2), {"type": "development", "step": 1, "epoch": 1, "batch": 5,
                                         "compression": 0.2, "neurons_pruned": 0.1}, _epoch(2, compression=0.2)]
    plots.plot_training(rows, "x.png", "emulated", {"name": "r", "batches_per_epoch": 10})
    structure = [ax for ax in figures[0].axes if ax.get_title() == "structure"][0]
    assert structure.get_xlabel() == "epoch" and list(structure.get_lines()[0].get_xdata()) == [0.5]


def test_profile_figure_uses_log_scales_micro_joules_and_shows_steps_and_rates(figures):
    layer = {"n_in": 784, "n_out": 800, "sops_per_sample": 2e6, "macs_per_sample": 0.0,
             "sops_unpruned_per_sample": 5e6, "ops_per_step": [1e5] * 4, "firing_rate": 0.05}
    small = {**layer, "n_in": 800, "n_out": 10, "sops_per_sample": 400.0, "sops_unpruned_per_sample": 500.0,
             "ops_per_step": [100.0] * 4, "firing_rate": 0.1}
    summary = {"layers": [layer, small], "samples": 10, "time_steps": 4, "data_source": "emulated",
               "energy_model": {"e_ac_pj": 0.9, "e_mac_pj": 4.6},
               "rows": [{"energy_uj": 1.8}, {"energy_uj": 4.5}, {"energy_uj": 2.9}]}
    plots.plot_energy(summary, "p.png")
    axes = {ax.get_title(): ax for ax in figures[0].axes}
    assert axes["synaptic operations per layer"].get_yscale() == "log"
    assert axes["operations per time step"].get_yscale() == "log"
    assert "\u00b5J" in axes["energy estimate: 0.9 pJ/AC, 4.6 pJ/MAC"].get_xlabel()
    assert "firing rate per layer (all neurons; pooling: mean output)" in axes
    # The legend sits above the bars, outside the axes.
    legend = axes["synaptic operations per layer"].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().y0 > axes["synaptic operations per layer"].bbox.y1 - 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run(["train", *TINY_MNIST_NETWORK, "--structure", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_profile_plot_option_writes_the_suffix_format_and_png_is_an_alias(tiny_run, tmp_path):
    for option, name in (("--plot", "p.pdf"), ("--png", "p.svg")):
        result = run(["profile", str(tiny_run), "--samples", "50", option, str(tmp_path / name),
                      "--json", str(tmp_path / "p.json")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_bytes().startswith(MAGIC[name[-4:]])
    line = one_line_error(run(["profile", str(tiny_run), "--plot", str(tmp_path / "p.txt")]))
    assert "cannot write a figure as .txt" in line and not (tmp_path / "p.json").with_name("q.json").exists()


def test_training_png_of_a_run_without_structure(tiny_run):
    assert (tiny_run / "training.png").read_bytes().startswith(MAGIC[".png"])
    assert json.loads((tiny_run / "summary.json").read_text())["structure"]["name"] == "none"


def test_data_show_titles_frames_in_ms_with_one_title_and_a_count_scale(tmp_path, monkeypatch, figures):
    monkeypatch.setattr("evsim.cli.data.save_figure", lambda fig, path: figures.append(fig))
    result = run(["data", "show", "--dataset", "mnist", "--time-steps", "4", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    fig = figures[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert [t for t in titles if t.startswith("step")] == ["step 1", "step 2", "step 3", "step 4"]
    assert "the spikes the network receives in T = 4 steps" in fig._suptitle.get_text()
    assert not any("label" in t for t in titles)  # the label is in the figure's title only
    assert any(ax.get_ylabel() == "spikes per pixel" for ax in fig.axes)


def test_frame_times_follow_the_slicing():
    import numpy as np

    from evsim.cli.data import _frame_times_ms

    events = {"t": np.arange(0, 10_000, 1000)}  # 10 events, 1 ms apart
    assert _frame_times_ms(events, 2, "events") == [(0.0, 4.0), (5.0, 9.0)]
    assert _frame_times_ms(events, 3, "time") == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]


def _covered_points(fig) -> list[str]:
    """The curves with a data point under a legend (inside the axes or beside them)."""
    fig.canvas.draw()
    boxes = [legend.get_window_extent() for legend in fig.legends + [ax.get_legend() for ax in fig.axes]
             if legend is not None]
    covered = []
    for ax in fig.axes:
        for line in ax.get_lines():
            points = line.get_transform().transform(line.get_xydata())
            if any(box.contains(x, y) for box in boxes for x, y in points):
                covered.append(line.get_label())
    return covered


def _invisible_curves(fig) -> list[str]:
    """Labelled curves that draw nothing: one point, and no marker."""
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()
            if len(line.get_xydata()) == 1 and line.get_marker() in (None, "", "None", " ")
            and not line.get_label().startswith("_")]


@pytest.mark.parametrize("epochs", [1, 5])
def test_training_figure_legends_hide_no_data_and_a_single_epoch_is_drawn(figures, epochs):
    """A run whose accuracy falls toward the lower right (where the legend was), with a
    learning rate and compression of one point after one epoch."""
    rows = [_epoch(e, train_acc=0.5 - 0.05 * e, test_acc=0.5 - 0.05 * e, val_acc=0.9 - 0.1 * e,
                   compression=0.1 * e, lr=1e-3 * 0.5 ** e) for e in range(1, epochs + 1)]
    plots.plot_training(rows, "x.png", "mnist-5k", {"name": "run", "structure": "sdsnn"})
    fig = figures[0]
    assert _covered_points(fig) == [] and _invisible_curves(fig) == []
    assert [tick for tick in fig.axes[0].get_xticks() if 1 <= tick <= epochs] == list(range(1, epochs + 1))


def test_compare_figure_names_runs_of_the_same_folder_name_apart_and_hides_no_data(monkeypatch, figures):
    from evsim.cli import runs_cmd

    monkeypatch.setattr(runs_cmd, "save_figure", lambda fig, path: figures.append(fig))
    paths = ["/s/a/structure=none,seed=0", "/s/b/structure=none,seed=0", "/s/c/run", "/s/d/run"]
    found = [{"run": path, "data_source": "toy",
              "metrics": [_epoch(e, test_acc=0.9 - 0.2 * e + 0.02 * k, val_acc=0.2 + 0.01 * k, compression=0.1 * e)
                          for e in (1, 2, 3)]} for k, path in enumerate(paths)]
    runs_cmd._plot_compare(found, "c.png")
    fig = figures[0]
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert labels == ["a/structure=none,seed=0", "b/structure=none,seed=0", "c/run", "d/run"]
    assert _covered_points(fig) == []
    runs_cmd._plot_compare(found[:1], "c.png")  # one epoch of one run: still drawn
    assert _invisible_curves(figures[1]) == []


@pytest.mark.parametrize("n", [11, 25, 150])
def test_compare_figure_draws_every_run_in_a_style_of_its_own(monkeypatch, figures, n):
    from matplotlib.colors import to_rgba

    from evsim.cli import runs_cmd

    monkeypatch.setattr(runs_cmd, "save_figure", lambda fig, path: figures.append(fig))
    found = [{"run": f"/s/run{k}", "data_source": "toy", "metrics": [_epoch(e, val_acc=0.5) for e in (1, 2)]}
             for k in range(n)]
    runs_cmd._plot_compare(found, "c.png")
    fig = figures[0]
    legend = fig.legends[0]
    entries = [(text.get_text(), to_rgba(handle.get_color()), handle.get_marker())
               for text, handle in zip(legend.get_texts(), legend.legend_handles)]
    assert len(entries) == n and len({entry[0] for entry in entries}) == n
    assert len({entry[1:] for entry in entries}) == n  # run 11 is not run 1
    for ax in fig.axes:  # each panel draws each run as the legend names it
        styles = [(to_rgba(line.get_color()), line.get_marker()) for line in ax.get_lines()]
        assert {entry[1:] for entry in entries} == set(styles)


def test_run_labels_are_the_shortest_distinguishing_ends_of_the_paths():
    from evsim.cli.runs_cmd import run_labels

    assert run_labels(["/x/a/run", "/x/b/run", "/y/b/run"]) == ["a/run", "x/b/run", "y/b/run"]
    assert run_labels(["/x/a", "/x/b"]) == ["a", "b"]
    assert run_labels(["/x/a", "/x/a"]) == ["a #1", "a #2"]
    assert run_labels(["/x/a", "/a"]) == ["x/a", "a"]


def _profile_figure(figures, density: float, names: bool):
    import numpy as np

    import evsim
    from evsim.inspect import layer_names

    rng = np.random.default_rng(0)
    network = evsim.Network.from_spec("2x34x34-4C3-AP2-8C3-AP2-16-10", rng=rng)  # labels of 4 digits
    summary = evsim.profile(network, [(rng.random((4, 3, 2312)) < density).astype(np.float32)]).summary()
    plots.plot_energy(summary, "p.png", *([layer_names(network)] if names else []))
    fig = figures[-1]
    fig.canvas.draw()
    return {ax.get_title(): ax for ax in fig.axes}


@pytest.mark.parametrize("names", [True, False])
def test_profile_layer_labels_of_a_conv_network_do_not_collide(figures, names):
    axes = _profile_figure(figures, 0.4, names)
    for title in ("synaptic operations per layer", "firing rate per layer (all neurons; pooling: mean output)"):
        boxes = [label.get_window_extent() for label in axes[title].get_xticklabels()]
        assert len(boxes) == 6 and not [(a, b) for a in range(6) for b in range(a + 1, 6)
                                        if boxes[a].overlaps(boxes[b])], title
    if names:
        assert axes["synaptic operations per layer"].get_xticklabels()[1].get_text() == "L1\nAP2\npool,\nvalues"


def test_profile_steps_legend_says_which_layers_did_no_operations(figures):
    steps = _profile_figure(figures, 0.4, True)["operations per time step"]
    legend = [text.get_text() for text in steps.get_legend().get_texts()]
    assert legend[1] == "L1 AP2 pool, values: 0" and legend[0] == "L0 4C3 conv"


def test_profile_of_a_silent_network_has_no_negative_axes(figures):
    for title, ax in _profile_figure(figures, 0.0, False).items():
        assert min(ax.get_xlim() if title.startswith("energy") else ax.get_ylim()) >= 0, title
