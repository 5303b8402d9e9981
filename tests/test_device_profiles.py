"""Tests for device_profiles: every built-in profile, and every kind of bad input a user can write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edge_compress.device_profiles import (
    CostModel,
    DeviceProfile,
    Fact,
    ProfileError,
    SshTarget,
    list_profiles,
    load_profile,
    profile_names,
)
from edge_compress.device_profiles.schema import CONFIDENCES

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "edge_compress" / "device_profiles"
EXPECTED = ["host", "jetson-agx-orin", "jetson-nano", "jetson-orin-nano", "jetson-xavier-nx",
            "raspberry-pi-4", "raspberry-pi-5"]


def write(tmp_path: Path, data: dict | str, name: str = "my.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def nano_dict() -> dict:
    return load_profile("jetson-nano").to_dict()


def assert_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


# ---- built-ins ------------------------------------------------------------------------------------

def test_builtin_names_are_the_yaml_files():
    assert profile_names() == EXPECTED
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_builtin_loads_with_its_file_name(name):
    profile = load_profile(name)
    assert isinstance(profile, DeviceProfile)
    assert profile.name == name
    assert profile.source_file == str(BUILTIN_DIR / f"{name}.yaml")
    assert profile.runtime.opset <= profile.runtime.max_opset
    assert profile.extends is None


@pytest.mark.parametrize("name", EXPECTED)
def test_to_dict_round_trips_through_yaml(name, tmp_path):
    profile = load_profile(name)
    plain = profile.to_dict()
    json.dumps(plain)  # JSON-able, for reports
    assert "source_file" not in plain
    dumped = write(tmp_path, yaml.safe_dump(plain, sort_keys=False))
    again = load_profile(str(dumped))
    assert again == profile
    assert again.source_file == str(dumped)


def test_list_profiles_is_sorted_by_name():
    assert [p.name for p in list_profiles()] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_fact_carries_source_and_confidence(name):
    hardware = load_profile(name).hardware
    facts = [getattr(hardware, name) for name in type(hardware).model_fields]
    numeric = [f for f in facts if f is not None and not isinstance(f.value, str)]
    assert len(numeric) >= 6
    for fact in facts:
        if fact is None:
            continue
        assert isinstance(fact, Fact)
        assert fact.source.strip()
        assert fact.confidence in CONFIDENCES
        assert fact.value is None or isinstance(fact.value, (int, float, str))
        assert not isinstance(fact.value, bool)
    assert isinstance(hardware.dla_cores.value, int)


def test_jetson_nano_facts():
    nano = load_profile("jetson-nano")
    assert nano.runtime.engine == "tensorrt"
    assert nano.runtime.version == "8.2.1"
    assert (nano.runtime.opset, nano.runtime.max_opset) == (13, 13)
    assert nano.runtime.precision == "fp16"
    assert nano.hardware.fp16_gflops.value == pytest.approx(471.6)
    assert nano.hardware.fp32_gflops.value == pytest.approx(235.8)
    assert nano.hardware.memory_bandwidth_gbps.value == pytest.approx(25.6)
    assert nano.hardware.int8_tops.value is None
    assert "Maxwell" in nano.hardware.int8_tops.source
    assert nano.hardware.dla_cores.value == 0
    assert nano.runtime.trtexec_path == "/usr/src/tensorrt/bin/trtexec"
    assert (nano.pruning.channel_multiple, nano.pruning.min_channels) == (8, 8)
    assert nano.measurement.method == "none"
    assert any("jetson_clocks" in note for note in nano.notes)


def test_host_runs_locally_on_one_thread():
    host = load_profile("host")
    assert host.runtime.engine == "onnxruntime"
    assert host.runtime.execution_providers == ("CPUExecutionProvider",)
    assert host.runtime.require_provider is True
    assert host.measurement.method == "local"
    assert host.measurement.threads == 1
    assert host.budget.latency_ms is None
    assert host.hardware.fp32_gflops.value is None
    assert host.hardware.fp32_gflops.confidence == "estimate"


def test_dla_cores_of_the_jetsons():
    dla = {n: load_profile(n).hardware.dla_cores.value for n in EXPECTED if n.startswith("jetson")}
    assert dla == {"jetson-agx-orin": 2, "jetson-nano": 0, "jetson-orin-nano": 0,
                   "jetson-xavier-nx": 2}


def test_profiles_are_frozen_and_hashable():
    nano = load_profile("jetson-nano")
    with pytest.raises(ValidationError, match="frozen"):
        nano.runtime.opset = 17
    assert hash(nano) == hash(load_profile("jetson-nano"))


# ---- names --------------------------------------------------------------------------------------

def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ProfileError) as info:
        load_profile("jetson-nan")
    message = str(info.value)
    assert message.startswith("unknown target 'jetson-nan'; known targets: host, jetson-agx-orin")
    assert all(name in message for name in EXPECTED)
    assert "path to a profile YAML file" in message


def test_missing_file(tmp_path):
    assert_error(tmp_path / "nope.yaml", "file not found")


# ---- bad files ----------------------------------------------------------------------------------

def test_unknown_key_names_dotted_path_and_allowed_keys(tmp_path):
    data = nano_dict()
    data["runtime"]["opsett"] = 13
    message = assert_error(write(tmp_path, data), "unknown key 'runtime.opsett'",
                           "did you mean 'runtime.opset'", "allowed: engine, version")


def test_unknown_top_level_key(tmp_path):
    data = nano_dict()
    data["budgets"] = {}
    assert_error(write(tmp_path, data), "unknown key 'budgets'")


def test_missing_required_key(tmp_path):
    data = nano_dict()
    del data["pruning"]["channel_multiple"]
    assert_error(write(tmp_path, data), "missing required key 'pruning.channel_multiple'")


def test_missing_required_section(tmp_path):
    data = nano_dict()
    del data["cost_model"]
    assert_error(write(tmp_path, data), "missing required key 'cost_model'")


def test_wrong_type_names_key_rule_and_value(tmp_path):
    data = nano_dict()
    data["pruning"]["channel_multiple"] = "eight"
    assert_error(write(tmp_path, data),
                 "key 'pruning.channel_multiple' must be an integer >= 1, got 'eight'")


def test_out_of_range_value(tmp_path):
    data = nano_dict()
    data["cost_model"]["compute_efficiency"] = 1.5
    assert_error(write(tmp_path, data), "key 'cost_model.compute_efficiency'", "(0, 1]", "1.5")


def test_bool_is_not_an_integer(tmp_path):
    data = nano_dict()
    data["measurement"]["batch_size"] = True
    assert_error(write(tmp_path, data), "key 'measurement.batch_size'", "got True")


def test_int_is_accepted_for_a_float_key(tmp_path):
    data = nano_dict()
    data["budget"]["latency_ms"] = 12
    profile = load_profile(str(write(tmp_path, data)))
    assert profile.budget.latency_ms == 12.0
    assert isinstance(profile.budget.latency_ms, float)


def test_unquoted_version_number_suggests_quoting(tmp_path):
    data = nano_dict()
    data["runtime"]["version"] = 8.2
    assert_error(write(tmp_path, data), "key 'runtime.version' must be a non-empty string", 'quote it')


def test_list_item_of_wrong_type(tmp_path):
    data = nano_dict()
    data["runtime"]["execution_providers"] = ["CPUExecutionProvider", 3]
    assert_error(write(tmp_path, data), "key 'runtime.execution_providers[1]' must be a string")


def test_section_that_is_not_a_mapping(tmp_path):
    data = nano_dict()
    data["runtime"] = ["tensorrt"]
    assert_error(write(tmp_path, data), "key 'runtime' must be a mapping")


@pytest.mark.parametrize("key, bad, fragment", [
    ("precision", "fp64", "one of fp32, fp16, int8"),
    ("engine", "tflite", "one of onnxruntime, tensorrt"),
])
def test_fixed_choices(tmp_path, key, bad, fragment):
    data = nano_dict()
    data["runtime"][key] = bad
    assert_error(write(tmp_path, data), f"key 'runtime.{key}'", fragment, repr(bad))


def test_bad_confidence(tmp_path):
    data = nano_dict()
    data["hardware"]["fp16_gflops"]["confidence"] = "sure"
    assert_error(write(tmp_path, data), "key 'hardware.fp16_gflops.confidence'", "one of high")


def test_fact_without_source(tmp_path):
    data = nano_dict()
    del data["hardware"]["fp16_gflops"]["source"]
    assert_error(write(tmp_path, data), "missing required key 'hardware.fp16_gflops.source'")


def test_bare_number_instead_of_fact(tmp_path):
    data = nano_dict()
    data["hardware"]["fp16_gflops"] = 471.6
    assert_error(write(tmp_path, data), "key 'hardware.fp16_gflops' must be a mapping")


def test_fact_value_must_suit_the_key(tmp_path):
    data = nano_dict()
    data["hardware"]["dla_cores"]["value"] = 1.5
    assert_error(write(tmp_path, data), "key 'hardware.dla_cores.value' must be an integer")


def test_opset_above_max_opset(tmp_path):
    data = nano_dict()
    data["runtime"]["opset"] = 17
    assert_error(write(tmp_path, data), "key 'runtime.opset' is 17", "runtime.max_opset is 13")


def test_ssh_method_requires_ssh_block(tmp_path):
    data = nano_dict()
    data["measurement"]["method"] = "ssh"
    assert_error(write(tmp_path, data), "'measurement.ssh'", "method is 'ssh'")


def test_wrong_schema_version(tmp_path):
    data = nano_dict()
    data["schema_version"] = 2
    assert_error(write(tmp_path, data), "key 'schema_version'", "got 2")


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, "schema_version: 1\nname: x\nruntime:\n  engine: [tensorrt\n  opset: 13\n")
    message = assert_error(path, "not valid YAML (line ")
    assert ", column " in message


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "schema_version: 1\nname: a\nname: b\n")
    assert_error(path, "duplicate key 'name' (line 3)")


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_top_level_not_a_mapping(tmp_path, text, fragment):
    assert_error(write(tmp_path, text), fragment)


# ---- extends ------------------------------------------------------------------------------------

def test_extends_overrides_one_nested_key(tmp_path):
    path = write(tmp_path, {
        "extends": "jetson-nano",
        "measurement": {"method": "ssh",
                        "ssh": {"host": "nano.local", "user": "me", "port": 22,
                                "workdir": "/tmp/edge-compress"}},
        "budget": {"latency_ms": 8},
    })
    mine, nano = load_profile(str(path)), load_profile("jetson-nano")
    assert mine.extends == "jetson-nano"
    assert mine.source_file == str(path)
    assert mine.measurement.method == "ssh"
    assert mine.measurement.ssh == SshTarget(host="nano.local", user="me", port=22,
                                             workdir="/tmp/edge-compress")
    assert mine.measurement.ssh.python == "python3"
    assert mine.measurement.timed_runs == nano.measurement.timed_runs
    assert mine.budget.latency_ms == 8.0
    assert mine.budget.memory_mb == nano.budget.memory_mb
    assert mine.hardware == nano.hardware and mine.runtime == nano.runtime


def test_extends_replaces_lists_and_can_null_optional_keys(tmp_path):
    path = write(tmp_path, {"extends": "raspberry-pi-5", "name": "my-pi",
                            "runtime": {"execution_providers": ["XnnpackExecutionProvider",
                                                                "CPUExecutionProvider"]},
                            "budget": {"latency_ms": None}})
    mine = load_profile(str(path))
    assert mine.name == "my-pi"
    assert mine.runtime.execution_providers == ("XnnpackExecutionProvider", "CPUExecutionProvider")
    assert mine.cost_model == load_profile("raspberry-pi-5").cost_model


def test_extends_errors_name_the_users_file(tmp_path):
    path = write(tmp_path, {"extends": "jetson-nano", "runtime": {"opsett": 12}})
    assert_error(path, "unknown key 'runtime.opsett'")


def test_extends_unknown_name(tmp_path):
    path = write(tmp_path, {"extends": "jetson-nan"})
    assert_error(path, "key 'extends' is 'jetson-nan'", "known targets: host")


def test_round_trip_of_extended_profile(tmp_path):
    path = write(tmp_path, {"extends": "host", "measurement": {"threads": 2}})
    mine = load_profile(str(path))
    again = load_profile(str(write(tmp_path, mine.to_dict(), name="again.yaml")))
    assert again == mine and again.measurement.threads == 2


def test_cost_model_says_whether_and_how_it_was_fitted():
    fitted = set()
    for profile in list_profiles():
        cm = profile.cost_model
        assert isinstance(cm, CostModel)
        if cm.fitted:
            assert cm.fit is not None and cm.fit.data and cm.fit.command and cm.fit.samples >= 3
            fitted.add(profile.name)
        else:
            assert cm.fit is None and "not fitted" in cm.source
    assert {"host", "jetson-nano"} <= fitted


def test_ssh_workdir_is_optional(tmp_path):
    path = write(tmp_path, {"extends": "jetson-nano",
                            "measurement": {"method": "ssh", "ssh": {"host": "fe80::1", "user": "me", "port": 2222}}})
    ssh = load_profile(str(path)).measurement.ssh
    assert ssh.workdir is None and ssh.python == "python3"
    assert (ssh.destination, str(ssh)) == ("me@fe80::1", "me@[fe80::1]:2222")


def test_source_file_is_not_a_yaml_key(tmp_path):
    data = nano_dict()
    data["source_file"] = "elsewhere.yaml"
    assert_error(write(tmp_path, data), "unknown key 'source_file'")
