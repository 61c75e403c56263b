from dataclasses import dataclass
from typing import Literal

import pytest

from vaebench.config import from_dict, require, to_dict
from vaebench.errors import ConfigError
from vaebench.training import TrainConfig


@dataclass(frozen=True)
class Example:
    n: int = 1
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None

    def __post_init__(self):
        require(self.n > 0, f"n must be positive, got {self.n}")


def test_from_dict_converts_and_round_trips():
    cfg = from_dict(Example, {"n": 3, "rate": 1, "sizes": [4, 5], "mode": "b", "limit": None})
    assert cfg == Example(n=3, rate=1.0, mode="b", sizes=(4, 5), limit=None)
    assert isinstance(cfg.rate, float)
    assert from_dict(Example, to_dict(cfg)) == cfg


@pytest.mark.parametrize("data, message", [
    ({"m": 1}, "unknown key 'm'"),
    ({"n": "3"}, "expected an integer"),
    ({"n": True}, "expected an integer"),
    ({"rate": "x"}, "expected a number"),
    ({"mode": "c"}, "expected one of 'a', 'b'"),
    ({"sizes": 3}, "expected a list of integers"),
    ({"sizes": [1, "x"]}, "sizes[1]: expected an integer"),
    ({"n": 0}, "n must be positive"),
])
def test_from_dict_refuses_bad_input_with_the_key_named(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Example, data, where="ex")
    assert message in str(info.value)
    assert str(info.value).startswith("ex")


def test_train_budget_is_exactly_one_of_epochs_or_steps():
    assert TrainConfig(steps=10).steps == 10 and TrainConfig(steps=10).epochs is None
    assert TrainConfig().epochs == 10
    with pytest.raises(ConfigError, match="exactly one"):
        TrainConfig(epochs=2, steps=10)
    with pytest.raises(ConfigError, match="positive"):
        TrainConfig(epochs=0)
