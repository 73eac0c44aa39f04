"""params.yaml validation: the schema is the single source of truth, errors name the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mssync.core.config import CropSettings, load_params, load_section, validate_params
from mssync.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(REPO / "params.yaml")


def test_shipped_params_are_valid(params):
    assert params["features"]["n_mels"] == 26 and params["crop"]["fps"] == 25


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("crop", "box_scale"), 12, "crop.box_scale"),
        (("features", "hop_ms"), 15, "features.hop_ms"),
        (("features", "n_mels"), "26", "features.n_mels"),
        (("syncers", "device"), "tpu", "syncers.device"),
        (("dataset", "test_fraction"), 0.9, "dataset.test_fraction"),
    ],
)
def test_wrong_value_names_the_key(params, path, value, key):
    bad = copy.deepcopy(params)
    target = bad
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate_params(bad)


def test_unknown_key_is_rejected(params):
    bad = copy.deepcopy(params)
    bad["features"]["bands"] = 30
    with pytest.raises(ConfigError, match="'bands' was unexpected"):
        validate_params(bad)


def test_missing_section_is_rejected(params):
    bad = {k: v for k, v in params.items() if k != "crop"}
    with pytest.raises(ConfigError, match="'crop' is a required property"):
        validate_params(bad)


def test_section_settings_from_json_are_validated(params):
    import json

    crop = load_section("crop", json.dumps(params["crop"]), None)
    assert isinstance(crop, CropSettings) and crop.size == 256
    broken = dict(params["crop"], size=8)
    with pytest.raises(ConfigError, match="crop.size"):
        load_section("crop", json.dumps(broken), None)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_section("crop", "{size:", None)
