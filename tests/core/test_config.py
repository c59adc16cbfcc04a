"""The config schema: YAML files, dotted overrides, and clear errors for typos."""

import pytest

from medssl.config import dump_config, load_config, parse_override
from medssl.errors import ConfigError


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    cfg = load_config(None)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(None, ["pretrain.optimizer.lr=0.05", "study.budgets=[2, 4]", "pretrain.method=vicreg"])
    assert cfg.pretrain.optimizer.lr == pytest.approx(0.05)
    assert cfg.study.budgets == [2, 4]
    assert cfg.pretrain.method == "vicreg"


def test_unknown_key_is_an_error_naming_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pretrain:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "pretrain.lerning_rate" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="pretrain.steps"):
        load_config(None, ["pretrain.steps=many"])


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_override_without_equals_sign_is_refused():
    with pytest.raises(ConfigError, match="key.subkey=value"):
        parse_override("pretrain.steps")


def test_budgets_must_be_positive():
    with pytest.raises(ConfigError, match="budgets"):
        load_config(None, ["study.budgets=[0, 2]"])


def test_unknown_key_lists_the_sections_keys_and_the_closest_match():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["finetune.patchsize=[32,32,32]"])
    message = str(info.value)
    assert "did you mean 'patch_size'?" in message
    assert "finetune accepts:" in message and "pos_fraction" in message and "steps" in message
    with pytest.raises(ConfigError) as info:  # nested section, no close match: the accepted keys only
        load_config(None, ["pretrain.augmentation.zzz=1"])
    assert "pretrain.augmentation accepts: args, device_side" in str(info.value)
    assert "did you mean" not in str(info.value)
