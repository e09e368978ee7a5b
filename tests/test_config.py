"""The typed config parser: nested components from the registries, key and type errors that
name the key, precedence merging, and configs written by vaekit 0.1."""

from __future__ import annotations

import pytest

from vaekit import __version__
from vaekit.config import ModelConfig, RunConfig, TrainConfig, merge, parse
from vaekit.errors import ConfigError


def test_components_parse_from_names_and_mappings():
    cfg = RunConfig.from_dict({"model": {"likelihood": "gaussian-gamma",
                                         "arch": {"hidden": [8, 4], "activation": "tanh"},
                                         "prior": {"name": "mog", "components": 3}},
                               "train": {"objective": {"name": "iwae", "k": 7}, "lr": 1}})
    assert cfg.model.likelihood.name == "gaussian-gamma" and cfg.model.likelihood.gamma_init is None
    assert cfg.model.arch.name == "mlp" and cfg.model.arch.hidden == [8, 4]  # default name kept
    assert cfg.model.prior.components == 3 and cfg.train.objective.k == 7
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int is a valid float
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # config.json round trip
    assert ModelConfig(likelihood="gaussian").likelihood == ModelConfig(
        likelihood={"name": "gaussian", "sigma": 1.0}).likelihood  # Python callers too


@pytest.mark.parametrize(("d", "fragment"), [
    ({"model": {"latent_dim": "two"}}, "config.model.latent_dim = 'two' is not of type int"),
    ({"model": {"latent_dim": True}}, "is not of type int"),  # a bool is not a number
    ({"model": {"arch": {"hidden": [8, 2.5]}}}, "config.model.arch.hidden[1] = 2.5"),
    ({"model": {"arch": {"hidden": 8}}}, "config.model.arch.hidden = 8 is not of type list"),
    ({"model": {"likelihood": {"name": "gaussian", "gamma_init": 2}}},
     "likelihood 'gaussian' takes no option(s) ['gamma_init']"),
    ({"model": {"likelihood": {"name": "nope"}}}, "unknown likelihood 'nope'"),
    ({"model": {"likelihood": 3}}, "must be a name or a mapping"),
    ({"model": {"prior": {"name": "mog", "components": 0}}}, "components"),
    ({"train": {"objective": {"name": "elbo", "kl": "exact"}}}, "unknown KL estimator"),
    ({"train": {"lr": float("nan")}}, "learning rate"),
    ({"train": {"beta": -1}}, "beta"),
    ({"train": {"seed": None}}, "config.train.seed = None"),
    ({"data": {"nme": "x"}}, "unknown key(s) ['nme'] in config section 'config.data'"),
    ({"optim": {}}, "unknown key(s) ['optim']"),
    ({"model": {"gamma_init": 0.1}}, "'gamma_init' is an option of config.model.likelihood"),
    ({"model": []}, "must be a mapping"),
])
def test_bad_values_name_the_offending_key(d, fragment):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(d).validate()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_parse_handles_unions_lists_and_scalars():
    assert parse(int | None, None, "k") is None and parse(int | None, 3, "k") == 3
    assert parse(list[int], [1, 2], "k") == [1, 2]
    with pytest.raises(ConfigError, match="k = 'x'"):
        parse(int | None, "x", "k")
    assert parse(TrainConfig, {"epochs": 3}, "train").epochs == 3


def test_merge_replaces_a_renamed_component_and_updates_the_same_one():
    base = {"model": {"likelihood": {"name": "gaussian", "sigma": 0.1}, "latent_dim": 4}}
    same = merge(base, {"model": {"likelihood": {"sigma": 0.5}}})
    assert same["model"]["likelihood"] == {"name": "gaussian", "sigma": 0.5}
    renamed = merge(base, {"model": {"likelihood": {"name": "bernoulli"}}})
    assert renamed["model"] == {"likelihood": {"name": "bernoulli"}, "latent_dim": 4}
    assert merge(base, {"model": {"likelihood": "gaussian"}})["model"]["likelihood"] == {
        "name": "gaussian", "sigma": 0.1}  # a bare name that does not change it keeps options


def test_a_config_written_by_vaekit_0_1_still_loads():
    old = {"version": "0.1.0",
           "data": {"name": "ring:n=300", "transform": "auto", "val_fraction": 0.1,
                    "eval_seed": 0, "limit": 0},
           "model": {"arch": "mlp", "latent_dim": 2, "hidden": [16], "activation": "relu",
                     "likelihood": "gaussian-gamma", "sigma": 1.0, "gamma_init": 0.5,
                     "data_shape": [2]},
           "train": {"epochs": 2, "objective": "iwae", "iwae_k": 3, "kl": "analytic"}}
    cfg = RunConfig.from_dict(old)
    assert cfg.model.arch.hidden == [16] and cfg.model.likelihood.gamma_init == 0.5
    assert cfg.train.objective.name == "iwae" and cfg.train.objective.k == 3
    assert cfg.version == __version__ and cfg.model.data_shape == [2]


def test_flags_override_plain_values_of_presets_and_files(tmp_path):
    from vaekit.config import configure

    cfg = configure({"train": {"lr_schedule": "constant"}, "data": {"name": "ring"}},
                    preset="fast")
    assert cfg.train.lr_schedule == "constant" and cfg.data.name == "ring"
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3, beta: 5e-1}\ndata: {name: digits}\n")  # YAML 1.1 floats
    cfg = configure({"data": {"name": "ring"}}, config_file=path)
    assert cfg.train.lr == 1e-3 and cfg.train.beta == 0.5 and cfg.data.name == "ring"


@pytest.mark.parametrize("device", ["meta", "mps", "tpu"])
def test_unsupported_devices_are_one_line_errors(device):
    from vaekit.train import resolve_device

    with pytest.raises(ConfigError, match="unsupported device"):
        resolve_device(device)
