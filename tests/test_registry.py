from dataclasses import dataclass

import pytest
import torch

from vaebench.datasets import DATASETS, list_datasets
from vaebench.errors import ConfigError
from vaebench.methods import METHODS, create_method, list_methods, method_config, register
from vaebench.methods.vae import VAE, VAEConfig
from vaebench.registry import Registry


def test_builtin_registries_list_their_entries():
    assert "vae" in list_methods()
    assert {"mnist", "fashion-mnist", "toy4"} <= set(list_datasets())
    assert list_methods() == sorted(list_methods())


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown method 'nope'; registered methods: .*vae"):
        METHODS.get("nope")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; registered datasets: .*mnist"):
        DATASETS.get("nope")


def test_registering_a_name_twice_is_refused():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)


def test_a_new_method_is_one_decorated_class():
    @dataclass(frozen=True)
    class TinyConfig(VAEConfig):
        extra: int = 3

    @register("test-tiny-vae")
    class TinyVAE(VAE):
        config_class = TinyConfig

    try:
        model = create_method("test-tiny-vae", {"extra": 5}, data_shape=(4,), latent_dim=2)
        assert isinstance(model, TinyVAE) and model.config.extra == 5 and model.name == "test-tiny-vae"
        assert model.posterior(torch.rand(3, 4), 2).z.shape == (2, 3, 2)
    finally:
        METHODS._entries.pop("test-tiny-vae")


def test_method_hyperparameters_are_checked():
    with pytest.raises(ConfigError, match="methods.vae: unknown key 'lrr'"):
        method_config("vae", {"lrr": 0.1})
    with pytest.raises(ConfigError, match="lr must be positive"):
        method_config("vae", {"lr": -1.0})


@pytest.mark.parametrize("attrs", [{"columns": ("widget",)}, {"objective_name": "not a name"}])
def test_a_method_with_undeclarable_columns_or_objective_is_refused_at_registration(attrs):
    with pytest.raises(TypeError):
        register("test-bad-declaration")(type("Bad", (VAE,), attrs))
    assert "test-bad-declaration" not in list_methods()
