"""Records: strict JSON that round-trips NaN and infinities, per-example arrays, provenance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaebench.records import (dumps, environment, loads, read_record, read_values, record_path, scan_records,
                              write_record, write_values)

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
values = st.recursive(st.none() | st.booleans() | st.integers() | finite_or_not | st.text(max_size=5),
                      lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


@given(values)
def test_strict_json_round_trips_every_float(value):
    text = dumps({"v": value})
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in strict JSON"))
    assert _same(loads(text)["v"], value)


def test_nan_and_infinities_are_explicit_and_distinct_from_missing():
    text = dumps({"a": float("nan"), "b": float("inf"), "c": -float("inf")})
    assert "NaN" not in text and "Infinity" not in text
    back = loads(text)
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf
    assert "d" not in back


def test_a_bare_nan_file_is_not_a_record(tmp_path):
    path = record_path(tmp_path, "x")
    path.parent.mkdir(parents=True)
    path.write_text('{"cell_id": "x", "status": "ok", "config": {}, "metrics": {"elbo": NaN}}')
    assert read_record(path) is None
    records, broken = scan_records(tmp_path)
    assert records == [] and broken == [path]


def test_records_and_per_example_values_round_trip(tmp_path):
    config = {"dataset": "mnist", "latent_dim": 2, "label": "vae", "seed": 0}
    record = {"cell_id": "c", "status": "ok", "config": config, "metrics": {"elbo": float("nan")}}
    arrays = {"indices": np.arange(5), "elbo": np.linspace(-3, -1, 5).astype(np.float32)}
    record["per_example"] = write_values(tmp_path, "c", arrays)
    write_record(tmp_path, record)
    back = read_record(record_path(tmp_path, "c"))
    assert math.isnan(back["metrics"]["elbo"])
    got = read_values(tmp_path, back)
    np.testing.assert_array_equal(got["indices"], arrays["indices"])
    np.testing.assert_array_equal(got["elbo"], arrays["elbo"])
    (tmp_path / "records" / "c.npz").write_bytes(b"damaged")
    assert read_values(tmp_path, back) is None  # a checksum mismatch is not silently used


def test_environment_names_code_packages_and_machine():
    env = environment()
    assert env["packages"]["torch"] and env["cpu"] and env["cores"] >= 1
    assert "commit" in env and "dirty" in env
