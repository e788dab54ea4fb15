"""``evsim train`` refuses bad input with one line, before it loads data or writes anything:
seeds, threads, config-file value types, impossible sizes, options of another dataset
(refused the same way by ``evsim.data.check_options`` and every command that loads data),
folders holding a run; and it records data folders as absolute paths."""
import json

import click
import numba
import numpy as np
import pytest

import evsim.train
from evsim.cli.eval import eval_command
from evsim.cli.options import DATASET_OPTION_NAMES, data_options_from, dataset_options, option_names
from evsim.cli.profile import profile
from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, save_network
from evsim.config import CONFIG_TOML
from evsim.data import DATASETS, DataOptions, check_options, load_dataset
from evsim.errors import ConfigError
from evsim.network import Network
from evsim.config import TrainConfig
from tests.conftest import one_line_error, run

TINY = ["--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4", "--no-progress"]


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if a dataset is loaded."""
    def load(*args):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(evsim.train, "load_dataset", load)


@pytest.mark.parametrize("args,fragment", [
    (["--arch", "2x34x34-4C3-AP4-10"], "--arch 2x34x34-4C3-AP4-10 takes input 2x34x34 but mnist gives 1x28x28"),
    (["--arch", "784-32-11"], "--arch 784-32-11 ends with 11 outputs but mnist has 10 classes"),
    # as many inputs as mnist's, in a map of another shape: it would train on scrambled pixels
    (["--arch", "1x14x56-4C3-AP2-10"], "--arch 1x14x56-4C3-AP2-10 takes input 1x14x56 but mnist gives 1x28x28"),
    (["--dataset", "nmnist", "--arch", "2x32x32-4C3-AP4-10", "--no-crop"],
     "takes input 2x32x32 but nmnist gives 2x34x34 (add --crop for N-MNIST's 32x32 frames)"),
    (["--arch", "784-32-10", "--develop", "conv2"], "--develop conv2: this network has no layer conv2; it has fc1"),
    # a structure with nothing to develop would report development steps that edit nothing
    (["--arch", "1x28x28-4C3-AP4-10", "--structure", "magnitude", "--target-sparsity", "0.9"],
     "--structure magnitude with --develop auto: no layer of this network develops (auto: every convolution but the "
     "first, and the hidden fully connected layers); name the layers, e.g. --develop conv1, or give --structure none"),
    (["--arch", "1x28x28-4C3-AP4-10", "--develop", "fc"], "--structure sdsnn with --develop fc: no layer of this "
                                                           "network develops; name the layers, e.g. --develop conv1"),
])
def test_a_network_that_cannot_fit_the_dataset_is_refused_before_the_data_loads(tmp_path, no_data, args, fragment):
    out = tmp_path / "run"
    assert fragment in one_line_error(run(["train", "--dataset", "mnist", "--epochs", "1", "--no-progress", *args,
                                           "--out", str(out)]))
    assert not out.exists()


def test_a_command_line_hidden_beats_the_files_arch(tmp_path):
    from evsim.config import resolve_options
    saved = {"arch": "1x28x28-4C3-AP4-10", "hidden": [800]}  # a run's config.toml holds both
    assert resolve_options({"dataset": "mnist", "hidden": (64,)}, saved)["arch"] == ""
    assert resolve_options({"dataset": "mnist"}, saved)["arch"] == "1x28x28-4C3-AP4-10"
    assert resolve_options({"dataset": "mnist", "arch": "784-5-10"}, saved)["arch"] == "784-5-10"
    # every option a saved run holds, structure none included, reads back without complaint
    assert resolve_options({}, {"structure": "none", "rho_init": 10.0, "step_epochs": 3})["structure"] == "none"


# ---------------------------------------------------------------- failed runs write nothing

@pytest.mark.parametrize("args,fragment", [
    (["--seed", "-1"], "'--seed': must be >= 0, got -1"),
    (["--threads", "1000"], f"'--threads': must be in 0..{numba.config.NUMBA_NUM_THREADS}, got 1000; this machine "
                            f"has {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)"),
    (["--structure", "set", "--target-sparsity", "nan"], "--target-sparsity"),
    (["--crop"], "--crop applies to nmnist only, not mnist"),
    (["--hidden", "100000000", "--time-steps", "2"], "reduce --hidden, --time-steps or --batch-size"),
    (["--arch", "784-32-10"], "--arch and --hidden both give the network; give one of them"),
    (["--structure", "none", "--rho-init", "10"],
     "--rho-init applies only with --structure sdsnn, and this run has --structure none; leave --rho-init out"),
    (["--structure", "magnitude", "--rho-max", "20"], "--rho-max applies only with --structure sdsnn, and this run "
                                                      "has --structure magnitude"),
    (["--structure", "none", "--develop", "fc1"], "--develop applies only with --structure sdsnn, magnitude or set"),
    (["--structure", "none", "--dev-interval", "3"], "--dev-interval applies only with --structure sdsnn"),
    (["--target-sparsity", "0.9"], "--target-sparsity applies only with --structure magnitude or set, and this run "
                                   "has --structure sdsnn"),
    (["--step-epochs", "3"], "--step-epochs applies only with --schedule step, and this run has --schedule constant"),
    (["--schedule", "step", "--warmup-epochs", "1"], "--warmup-epochs applies only with --schedule cosine"),
    (["--schedule", "cosine", "--warmup-epochs", "1"], "--warmup-epochs 1 is not shorter than --epochs 1"),
    (["--kernel-regrow-steps", "5"], "--kernel-regrow-steps applies only with a network with convolutions, and this "
                                     "run has --hidden 16, no convolution"),
    (["--filter-rho-init", "2"], "--filter-rho-init applies only with a network with convolutions"),
    (["--structure", "none", "--no-constrain-output"], "--constrain-output/--no-constrain-output applies only with "
                                                       "--structure sdsnn"),
    (["--structure", "none", "--filter-rho-init", "2"],
     "--filter-rho-init applies only with --structure sdsnn, and this run has --structure none"),
    (["--structure", "magnitude", "--kernel-regrow-steps", "5"],
     "--kernel-regrow-steps applies only with --structure sdsnn, and this run has --structure magnitude"),
    (["--rho-max", "20"], "got rho_init 35.0 (--rho-init) and rho_max 20.0 (--rho-max); a dataset's preset sets both"),
])
def test_bad_options_are_refused_before_the_data_and_the_run_folder(tmp_path, no_data, args, fragment):
    out = tmp_path / "run"
    assert fragment in one_line_error(run(["train", *TINY, *args, "--out", str(out)]))
    assert not out.exists()


@pytest.mark.parametrize("arch,fragment", [
    ("1x28x28-100000C3-10", "reduce the layer sizes of --arch, --time-steps or --batch-size"),
    # an input the data cannot give is named before the memory it would need
    ("2147483647x28x28-4C3-10", "--arch 2147483647x28x28-4C3-10 takes input 2147483647x28x28 but mnist gives 1x28x28"),
])
def test_an_architecture_is_refused_with_what_to_change_in_it(tmp_path, no_data, arch, fragment):
    out = tmp_path / "run"
    assert fragment in one_line_error(run(["train", "--dataset", "mnist", "--arch", arch, "--epochs", "1",
                                           "--out", str(out)]))
    assert not out.exists()


@pytest.mark.parametrize("args", [["--dataset", "cifar10"], ["--source", "real"]])
def test_missing_data_leaves_no_run_folder(tmp_path, args):
    out = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    one_line_error(run(["train", *TINY, *args, "--data-dir", str(tmp_path / "empty"), "--out", str(out)]))
    assert not out.exists()


# -------------------------------------------------------------------- seeds and threads

def test_the_library_refuses_negative_seeds_and_too_many_threads():
    with pytest.raises(ConfigError, match=r"--seed must be >= 0, got -1"):
        TrainConfig(seed=-1).validate()
    with pytest.raises(ConfigError, match=rf"--threads must be in 0..{numba.config.NUMBA_NUM_THREADS}"):
        TrainConfig(threads=numba.config.NUMBA_NUM_THREADS + 1).validate()


# -------------------------------------------------------------- config-file value types

@pytest.mark.parametrize("text,fragment", [
    ("data_dir = 5", "data_dir = 5: expected a string path"),
    ("out = 5", "out = 5: expected a string path"),
    ("cache_dir = [1]", "cache_dir = [1]: expected a string path"),
    ("lr = [1]", "lr = [1]: expected a number"),
    ("lr = 1979-05-27", "lr = datetime.date(1979, 5, 27): expected a number"),
    ("weight_decay = true", "weight_decay = True: expected a number"),
    ("crop = 5", "crop = 5: expected true or false"),
    ("progress = 3", "progress = 3: expected true or false"),
    ("hidden = [1.5]", "hidden = [1.5]: must be positive layer sizes up to 2147483647 like 800 or 800,400"),
    ("lr = nan", "lr = nan: must be a finite number"),
    ("weight_decay = inf", "weight_decay = inf: must be a finite number"),
    ("seed = -1", "seed = -1: must be >= 0, got -1"),
    ("threads = 1000", "threads = 1000: must be in 0.."),
    ('dataset = "mnist"\ncrop = true', "--crop applies to nmnist only, not mnist"),
])
def test_config_file_values_of_the_wrong_kind_give_one_line(tmp_path, captured, no_data, text, fragment):
    file = tmp_path / "bad.toml"
    file.write_text(text + "\n")
    line = one_line_error(run(["train", "--config", str(file), "--out", str(tmp_path / "run")]))
    assert fragment in line
    assert captured == [] and not (tmp_path / "run").exists()


# --------------------------------------------------------------------- impossible sizes

def test_a_run_too_big_for_memory_is_refused_with_its_size(tmp_path, monkeypatch, no_data):
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 30)
    # 110 neurons (100 hidden, 10 output) x 10^6 steps x 100 training samples x 16 B: 163.9 GiB of traces.
    line = one_line_error(run(["train", *TINY, "--hidden", "100", "--time-steps", "1000000",
                               "--out", str(tmp_path / "run")]))
    assert "needs about 163.9 GiB of memory" in line and "the machine has 1.0 GiB" in line


def test_the_input_layer_counts_before_the_data_loads(tmp_path, monkeypatch):
    # 784-20000-10 at T = 1 under SD-SNN: 0.05 GiB of traces and 1.8 GiB of weights, the dataset's sizes known beforehand.
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 28)
    out = tmp_path / "run"
    result = run(["train", *TINY, "--hidden", "20000", "--time-steps", "1", "--out", str(out)])
    assert result.exit_code == 2 and not result.output.startswith("data: mnist")
    assert result.output.splitlines()[-1].startswith("Error: this run needs about 1.8 GiB of memory (weights 1.8 GiB")
    assert not out.exists()


# ------------------------------------------------------- options of another dataset

def _static(dataset):
    takers = {"slicing": "nmnist, dvsgesture, shd, pokerdvs, cifar10dvs and folder", "crop": "nmnist",
              "denoise_us": "nmnist, dvsgesture, pokerdvs, cifar10dvs and folder", "downsample": "dvsgesture, cifar10dvs and folder"}
    rows = [(dataset, {field: value}, args, f"{args[0]} applies to {takers[field]} only, not {dataset}; "
                                            f"leave {args[0]} unset")
            for field, value, args in (("slicing", "time", ["--slicing", "time"]), ("crop", True, ["--crop"]),
                                       ("denoise_us", 3, ["--denoise-us", "3"]),
                                       ("downsample", 16, ["--downsample", "16"]))]
    return rows + [(dataset, {"encoding": "frames"}, ["--encoding", "frames"], "is static images: use encoding")]


# Each dataset and each option it does not take: (dataset, DataOptions fields, CLI args, message).
FOREIGN = _static("mnist") + _static("cifar10") + [
    ("cifar10", {"source": "emulated"}, ["--source", "emulated"], "there is no emulated CIFAR-10"),
    ("nmnist", {"downsample": 32}, ["--downsample", "32"],
     "--downsample applies to dvsgesture, cifar10dvs and folder only, not nmnist; leave --downsample unset (N-MNIST offers --crop"),
    ("nmnist", {"encoding": "rate"}, ["--encoding", "rate"], "encoding 'rate' does not apply (leave --encoding unset)"),
    ("dvsgesture", {"crop": True}, ["--crop"], "--crop applies to nmnist only, not dvsgesture; leave --crop unset"),
    ("dvsgesture", {"encoding": "direct"}, ["--encoding", "direct"],
     "encoding 'direct' does not apply (leave --encoding unset)"),
    ("dvsgesture", {"source": "emulated"}, ["--source", "emulated"], "there is no emulated DVS-Gesture"),
]
FOREIGN_IDS = [f"{dataset}-{'-'.join(args).lstrip('-')}" for dataset, _, args, _ in FOREIGN]


@pytest.fixture
def no_loader(monkeypatch):
    """Fail the test if any registered loader runs."""
    for name in list(DATASETS):
        monkeypatch.setitem(DATASETS, name, lambda options, name=name: pytest.fail(f"{name} loaded"))


@pytest.mark.parametrize("dataset,fields,args,fragment", FOREIGN, ids=FOREIGN_IDS)
def test_check_options_refuses_each_option_of_another_dataset_in_one_line(no_loader, dataset, fields, args,
                                                                             fragment):
    options = DataOptions(**fields)
    for refuse in (check_options, load_dataset, lambda d, o: TrainConfig(dataset=d, data=o).validate()):
        with pytest.raises(ConfigError) as info:
            refuse(dataset, options)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_check_options_names_the_datasets_of_an_unknown_one():
    for refuse in (check_options, load_dataset):
        with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; choose one of: cifar10, cifar10dvs, "
                                              "dvsgesture, folder, mnist, nmnist, pokerdvs, shd$"):
            refuse("imagenet", DataOptions())


def test_options_that_apply_pass_check_options():
    check_options("nmnist", DataOptions(slicing="time", crop=True, denoise_us=5, encoding="frames"))
    check_options("dvsgesture", DataOptions(slicing="time", denoise_us=5, downsample=32))
    check_options("mnist", DataOptions(encoding="direct", crop=False, downsample=0))
    check_options("cifar10", DataOptions(encoding="rate", source="real"))
    # a dataset held in memory (Trainer(config, dataset)) is named by the caller, not the registry
    TrainConfig(dataset="toy", data=DataOptions(crop=True)).validate()


@pytest.mark.parametrize("dataset,fields,args,fragment", FOREIGN, ids=FOREIGN_IDS)
def test_options_of_another_dataset_are_refused(tmp_path, no_data, dataset, fields, args, fragment):
    assert fragment in one_line_error(run(["train", "--dataset", dataset, *args, "--out", str(tmp_path / "r")]))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("dataset,fields,args,fragment", FOREIGN, ids=FOREIGN_IDS)
def test_data_info_and_show_refuse_options_of_another_dataset(tmp_path, no_loader, dataset, fields, args,
                                                             fragment):
    picture = tmp_path / "x.png"
    assert fragment in one_line_error(run(["data", "info", "--dataset", dataset, *args]))
    assert fragment in one_line_error(run(["data", "show", "--dataset", dataset, *args, "--out", str(picture)]))
    assert not picture.exists()


@pytest.fixture(scope="module")
def network_only(tmp_path_factory):
    """A folder holding only network.npz (as ``evsim import-nir`` writes): eval and profile
    take the dataset options there."""
    folder = tmp_path_factory.mktemp("imported")
    save_network(folder / NETWORK_FILE, Network.mlp([784, 8, 10], np.random.default_rng(0)))
    return folder


@pytest.mark.parametrize("dataset,fields,args,fragment", FOREIGN, ids=FOREIGN_IDS)
def test_eval_and_profile_refuse_options_of_another_dataset(network_only, no_loader, dataset, fields, args,
                                                            fragment):
    for command in ("eval", "profile"):
        assert fragment in one_line_error(run([command, str(network_only), "--dataset", dataset, *args]))
    assert sorted(p.name for p in network_only.iterdir()) == [NETWORK_FILE]


def test_options_left_at_their_defaults_or_that_apply_are_accepted(tmp_path, captured):
    assert run(["train", *TINY, "--no-crop", "--slicing", "events", "--out", str(tmp_path / "a")]).exit_code == 0
    assert run(["train", "--dataset", "nmnist", "--crop", "--denoise-us", "5", "--slicing", "time",
                "--out", str(tmp_path / "b")]).exit_code == 0
    assert (captured[-1].data.crop, captured[-1].data.denoise_us, captured[-1].data.slicing) == (True, 5, "time")


# ------------------------------------------------------- the dataset options, listed once

def test_the_dataset_option_names_come_from_their_decorator():
    names = option_names(dataset_options)
    assert DATASET_OPTION_NAMES == names and names[0] == "dataset" and len(set(names)) == len(names)
    for command in (eval_command, profile):
        assert [p.name for p in command.params if p.name in names] == list(names)
    rest = {name: None for name in names}
    data_options_from(rest, time_steps=4)
    assert rest == {"dataset": None}  # every other option becomes a DataOptions field


def _command_line(param: click.Parameter) -> list[str]:
    """``param`` given on the command line with some valid value."""
    if param.is_flag:
        return [param.opts[0]]
    kind = getattr(getattr(param.type, "option", None), "kind", None)
    value = param.type.choices[0] if isinstance(param.type, click.Choice) else \
        "1" if kind == "int" else "somewhere"
    return [param.opts[0], value]


def test_a_run_with_its_own_configuration_refuses_every_dataset_option(tmp_path, no_loader):
    save_network(tmp_path / NETWORK_FILE, Network.mlp([784, 8, 10], np.random.default_rng(0)))
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(dev_interval=4).to_dict()))
    params = [p for p in eval_command.params if p.name in DATASET_OPTION_NAMES]
    for command in ("eval", "profile"):
        for param in params:
            if command == "eval" and param.name == "time_steps":  # eval --time-steps T: accuracy after T steps
                continue
            if param.name in ("source", "data_dir"):  # other data, or its data moved (tests/test_run_data.py)
                continue
            line = one_line_error(run([command, str(tmp_path), *_command_line(param)]))
            flag = "--" + param.name.replace("_", "-")
            assert f"has its own configuration, which fixes the dataset; leave out {flag}" in line


# ------------------------------------------------------------ folders holding a run

@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "training.png", NETWORK_FILE,
                                  CHECKPOINT_LATEST, CHECKPOINT_BEST])
def test_a_new_run_refuses_a_folder_with_any_result(tmp_path, captured, name):
    (tmp_path / name).write_bytes(b"a run")
    line = one_line_error(run(["train", *TINY, "--out", str(tmp_path)]))
    if name == CHECKPOINT_LATEST:
        assert f"already holds a training run; continue it with --resume {tmp_path}, or choose another --out" in line
    else:  # --resume would find nothing to continue: the message must not send the user there
        assert f"{tmp_path} holds files of a training run ({name}) but no run configuration (config.json) or " \
               f"{CHECKPOINT_LATEST}; choose another --out, or delete them" in line
    assert captured == [] and (tmp_path / name).read_bytes() == b"a run"


def test_a_new_run_refuses_a_run_without_a_checkpoint_without_offering_resume(tmp_path, captured):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    line = one_line_error(run(["train", *TINY, "--out", str(tmp_path)]))
    assert f"already holds a training run (metrics.jsonl) without {CHECKPOINT_LATEST}" in line
    assert "--resume" not in line and "choose another --out" in line


def test_a_run_stopped_before_its_first_epoch_restarts_in_its_folder(tmp_path, captured):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / CONFIG_TOML).write_text("")
    assert run(["train", *TINY, "--out", str(tmp_path)]).exit_code == 0 and len(captured) == 1


# ----------------------------------------------------------------- absolute data paths

def test_data_folders_are_recorded_as_absolute_paths(tmp_path, monkeypatch, captured):
    monkeypatch.chdir(tmp_path)
    assert run(["train", *TINY, "--data-dir", "data", "--cache-dir", "cache", "--out", "a"]).exit_code == 0
    assert (captured[-1].data.data_dir, captured[-1].data.cache_dir) == (tmp_path / "data", tmp_path / "cache")
    assert f'data_dir = "{tmp_path / "data"}"' in (tmp_path / "a" / CONFIG_TOML).read_text()

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run(["train", "--config", str(tmp_path / "a" / CONFIG_TOML), "--out", "b"]).exit_code == 0
    assert captured[-1].data.data_dir == tmp_path / "data"
    (tmp_path / "run.toml").write_text('data_dir = "data"\n')
    monkeypatch.setenv("EVSIM_DATA", "env")
    (tmp_path / "elsewhere" / "env").mkdir()  # one that is no folder is left to the loader, which names it
    assert run(["train", *TINY, "--config", str(tmp_path / "run.toml"), "--out", "c"]).exit_code == 0
    assert captured[-1].data.data_dir == tmp_path / "elsewhere" / "data"
    assert run(["train", *TINY, "--out", "d"]).exit_code == 0
    assert captured[-1].data.data_dir == tmp_path / "elsewhere" / "env"


def test_a_finished_tiny_run_records_its_absolute_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none").mkdir()
    assert run(["train", *TINY, "--batch-size", "500", "--data-dir", "none", "--out", "r"]).exit_code == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["data_dir"] == str(tmp_path / "none")


def test_an_option_from_a_config_file_that_the_dataset_does_not_take_names_the_file_too(tmp_path):
    (tmp_path / "run.toml").write_text('dataset = "nmnist"\ncrop = true\n')  # a run's config.toml, reused
    line = one_line_error(run(["train", "--config", str(tmp_path / "run.toml"), "--dataset", "mnist",
                               "--out", str(tmp_path / "run")]))
    assert line.endswith("leave --crop unset, and crop out of a config file"), line
