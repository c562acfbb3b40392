"""Candidates: one per distinct way of serving the model; their configs, to serve and to hand back; the space."""

import os

import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.clients.tune.candidate import make_candidate
from modelgate.clients.tune.candidate_config import chosen_config, write_repository
from modelgate.clients.tune.model_folder import read_model_folder
from modelgate.clients.tune.search_space import build_space
from modelgate.clients.tune.tune_errors import TuneInputError
from tests.server_harness import EXAMPLE_REPOSITORY, copy_example_model

TRACE_LINES = (
    'parameters { key: "trace_file" value { string_value: "/var/log/tiny.jsonl" } }\n'
    'parameters { key: "trace_backup_count" value { string_value: "2" } }\n'
)


@pytest.fixture
def model(tmp_path):
    folder = copy_example_model(tmp_path / "user_repository", "tiny_llm")
    with (folder / "config.pbtxt").open("a") as config:
        config.write(TRACE_LINES)
        config.write("version_policy { latest { num_versions: 2 } }\n")
    return read_model_folder(folder)


def test_a_candidate_is_its_effective_settings_however_spelt(model):
    base = model.settings
    assert base["max_num_seqs"] == "16" and base["kv_cache_dtype"] == "auto"  # the config's, then the engine's
    baseline = make_candidate(base, {})
    assert baseline.is_baseline and make_candidate(base, {"max_num_seqs": "016", "kv_cache_dtype": "auto"}) == baseline
    eight = make_candidate(base, {"max_num_seqs": "8", "block_size": "16"})
    assert eight.overrides == (("max_num_seqs", "8"),) and eight.key != baseline.key
    assert eight.label == "max_num_seqs=8" and eight.id == make_candidate(base, {"max_num_seqs": 8}).id


def test_the_serving_repository_links_the_version_and_leaves_the_users_folder_alone(model, tmp_path):
    before = sorted(p.name for p in model.path.rglob("*")), model.config_file.read_text()
    candidate = make_candidate(model.settings, {"max_num_seqs": "4"})
    repository = write_repository(tmp_path / "served", model, candidate, "cuda:1")
    served = text_format.Parse((repository / "tiny_llm" / "config.pbtxt").read_text(), ModelConfig())
    link = repository / "tiny_llm" / "1"
    assert link.is_symlink() and os.readlink(link) == str(model.version_dir)
    assert served.parameters["max_num_seqs"].string_value == "4"
    assert served.parameters["show_progress"].string_value == "false"
    assert not [key for key in served.parameters if key.startswith("trace_")]  # candidates write no trace
    assert not served.HasField("version_policy")
    group = served.instance_group[0]
    assert group.kind == ModelInstanceGroup.KIND_GPU and list(group.gpus) == [1]
    assert (sorted(p.name for p in model.path.rglob("*")), model.config_file.read_text()) == before


def test_the_config_handed_back_is_the_models_own_with_the_chosen_settings(model):
    config = chosen_config(model, make_candidate(model.settings, {"max_num_seqs": "4"}), "cuda:1")
    assert config.parameters["max_num_seqs"].string_value == "4"
    assert config.parameters["trace_file"].string_value == "/var/log/tiny.jsonl"
    assert config.version_policy.latest.num_versions == 2
    assert config.instance_group[0].kind == ModelInstanceGroup.KIND_GPU and not config.instance_group[0].gpus
    kept = chosen_config(model, make_candidate(model.settings, {}), None)
    assert kept == model.config


def test_the_default_space_scales_the_models_own_values(model):
    space = build_space({}, [], model)
    assert space.axes == {"max_num_seqs": ("8", "16", "32"), "max_num_batched_tokens": ("1024", "2048", "4096")}
    overrides = space.coarse_overrides()
    assert len(overrides) == 9 and overrides[0] == {"max_num_seqs": "8", "max_num_batched_tokens": "1024"}
    # the centre is the model's own config (its max_num_batched_tokens derived as the engine does): one candidate
    assert model.settings["max_num_batched_tokens"] == "2048" and "max_num_batched_tokens" not in model.parameters
    keys = {make_candidate(model.settings, o).key for o in overrides}
    assert len(keys) == 9 and make_candidate(model.settings, {}).key in keys


def test_a_space_as_given_grid_first_then_points(model):
    space = build_space({"max_num_seqs": ["4", "8", "4"]}, [{"kv_cache_dtype": "fp8", "max_num_seqs": "2"}], model)
    assert space.coarse_overrides() == [
        {"max_num_seqs": "4"},
        {"max_num_seqs": "8"},
        {"kv_cache_dtype": "fp8", "max_num_seqs": "2"},
    ]
    assert space.names == ["max_num_seqs", "kv_cache_dtype"]
    with pytest.raises(TuneInputError, match="not an engine setting"):
        build_space({"max_num_sequences": ["4"]}, [], model)
    with pytest.raises(TuneInputError, match="has no values"):
        build_space({"max_num_seqs": []}, [], model)


@pytest.mark.parametrize(
    ("folder", "says"),
    [
        ("missing", "does not exist"),
        ("add_sub", "tune serves LLM models"),
    ],
)
def test_model_folders_that_cannot_be_tuned(folder, says):
    with pytest.raises(TuneInputError, match=says):
        read_model_folder(EXAMPLE_REPOSITORY / folder)
