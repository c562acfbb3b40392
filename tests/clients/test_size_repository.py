"""`modelgate size repository`: repositories built here, planned on named GPUs, against figures computed from the
same inputs (the server's rules: declared sizes, file estimates, an LLM's share of what the others leave)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from modelgate.cli import main
from modelgate.clients.size import gpu_models
from modelgate.clients.size.checkpoint_shape import CheckpointShape
from modelgate.clients.size.gpu_models import GPU_MEMORY_BYTES, parse_gpus
from modelgate.clients.size.memory import kv_bytes_per_token, weight_bytes
from modelgate.core.config_files import read_config_file
from modelgate.core.nvml import NvmlGpu
from modelgate.server.loaded_model import instance_specs
from modelgate.server.memory.ledger import InsufficientMemoryError, MemoryLedger
from modelgate.server.memory.placement import plan_memory
from tests.clients.test_size_memory import LLAMA3_8B
from tests.server.memory.fake_memory import GIB, FakeMemory

MIB = 2**20
CHECKPOINT = dict(LLAMA3_8B, max_position_embeddings=8192, torch_dtype="bfloat16")


def write_model(root: Path, name: str, config: str, files: dict[str, int] | None = None, checkpoint=None) -> Path:
    """`<root>/<name>/config.pbtxt` and version 1 with files of the given sizes (sparse: no disk is spent)."""
    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\n{config}')
    for file_name, size in (files or {}).items():
        with open(version / file_name, "wb") as handle:
            handle.truncate(size)
    if checkpoint is not None:
        (version / "config.json").write_text(json.dumps(checkpoint))
    return root / name


def parameters(**values: str) -> str:
    return "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in values.items())


def gpu_group(count: int = 1, gpus: tuple[int, ...] = (), name: str = "") -> str:
    listed = f" gpus: {list(gpus)}" if gpus else ""
    named = f' name: "{name}"' if name else ""
    return f"instance_group [ {{ kind: KIND_GPU count: {count}{listed}{named} }} ]\n"


def plan(root: Path, *flags: str, tmp_path: Path) -> tuple[int, dict]:
    out = tmp_path / "plan.json"
    code = main(["size", "repository", str(root), *flags, "--json", str(out)])
    return code, json.loads(out.read_text())


def instances_of(document: dict, model: str) -> list[dict]:
    return [i for i in document["instances"] if i["model"] == model]


def test_declared_estimated_and_the_llms_share_on_one_h100(tmp_path, capsys):
    root = tmp_path / "repo"
    write_model(root, "vision", 'backend: "python"\n' + gpu_group(2) + parameters(gpu_memory_bytes="3GiB"))
    write_model(root, "resnet", 'platform: "pytorch_libtorch"\n' + gpu_group(), {"model.pt": 300 * MIB})
    llm = parameters(quantization="fp8", kv_cache_dtype="fp8", max_num_seqs="1024")
    write_model(root, "llama", 'backend: "llm"\n' + llm, checkpoint=CHECKPOINT)

    code, document = plan(root, "--gpu", "H100-80GB", "--isl", "1000", "--osl", "1000", tmp_path=tmp_path)

    assert code == 0 and document["fits"]
    total = GPU_MEMORY_BYTES["H100-80GB"]
    assert [(i["device"], i["bytes"], i["source"]) for i in instances_of(document, "vision")] == [
        ("GPU 0", 3 * GIB, "declared as gpu_memory_bytes")
    ] * 2
    [resnet] = instances_of(document, "resnet")
    assert (resnet["bytes"], resnet["source"]) == (300 * MIB, "estimated from its files")
    share = int(total - (6 * GIB + 300 * MIB) - 0.1 * total)  # what the others leave, less 10% headroom
    [llama] = instances_of(document, "llama")
    assert (llama["bytes"], llama["source"]) == (share, "an LLM's share of what is free")
    shape = CheckpointShape.from_dict(CHECKPOINT)
    budget = share - weight_bytes(shape, "fp8")
    blocks = budget // (kv_bytes_per_token(shape, "fp8") * 16)
    [fit] = document["llms"]
    assert fit["kv_budget_bytes"] == budget and fit["kv_tokens"] == blocks * 16
    assert fit["sequences_by_kv"] == blocks // math.ceil(2000 / 16)
    assert fit["concurrent_sequences"] == min(blocks // 125, 1024) and fit["max_model_len"] == 8192
    assert document["gpus"][0]["free_bytes"] == total - 6 * GIB - 300 * MIB - share
    text = capsys.readouterr().out
    assert f"{blocks * 16:,}" in text and "H100-80GB" in text and "llama_0_0" in text


def test_instances_go_to_the_gpu_with_most_room_or_where_told(tmp_path):
    root = tmp_path / "repo"
    write_model(root, "a", 'backend: "python"\n' + gpu_group(3) + parameters(gpu_memory_bytes="4GiB"))
    write_model(root, "b", 'backend: "python"\n' + gpu_group(2, gpus=(1,)) + parameters(gpu_memory_bytes="1GiB"))

    code, document = plan(root, "--gpu", "2x10GiB", tmp_path=tmp_path)

    assert code == 0
    # a_0_0 to GPU 0 (a tie goes to the lowest number), a_0_1 to GPU 1 (6 GiB free against 10), a_0_2 to GPU 0
    assert [i["device"] for i in instances_of(document, "a")] == ["GPU 0", "GPU 1", "GPU 0"]
    assert [i["device"] for i in instances_of(document, "b")] == ["GPU 1", "GPU 1"]
    assert [g["held_bytes"] for g in document["gpus"]] == [8 * GIB, 6 * GIB]


def test_an_llm_is_sized_after_the_others_whatever_its_name(tmp_path):
    root = tmp_path / "repo"
    write_model(root, "aaa_llm", 'backend: "llm"\n' + parameters(gpu_memory_utilization="0.8"), checkpoint=CHECKPOINT)
    write_model(root, "zzz_vision", 'backend: "python"\n' + gpu_group() + parameters(gpu_memory_bytes="5GiB"))
    declared = parameters(gpu_memory_bytes="20GiB", kv_cache_dtype="fp8")
    write_model(root, "mmm_sized_llm", 'backend: "llm"\n' + declared, checkpoint=CHECKPOINT)

    code, document = plan(root, "--gpu", "80GiB", "--isl", "512", "--osl", "512", tmp_path=tmp_path)

    assert code == 0
    [llm] = instances_of(document, "aaa_llm")
    assert llm["bytes"] == int(80 * GIB - 25 * GIB - (1 - 0.8) * 80 * GIB)  # after both others, at utilization 0.8
    [sized] = instances_of(document, "mmm_sized_llm")
    assert (sized["bytes"], sized["source"]) == (20 * GIB, "declared as gpu_memory_bytes")
    shape = CheckpointShape.from_dict(CHECKPOINT)
    by_model = {fit["placement"]["model"]: fit for fit in document["llms"]}
    assert by_model["mmm_sized_llm"]["kv_budget_bytes"] == 20 * GIB - weight_bytes(shape, "bf16")
    assert by_model["mmm_sized_llm"]["kv_bytes_per_token"] == kv_bytes_per_token(shape, "fp8")
    assert by_model["aaa_llm"]["kv_bytes_per_token"] == kv_bytes_per_token(shape, "bf16")


def test_a_refusal_reads_as_the_servers_and_keeps_nothing(tmp_path, capsys):
    root = tmp_path / "repo"
    write_model(
        root, "a_small", 'backend: "python"\n' + gpu_group(name="a_small_0") + parameters(gpu_memory_bytes="2GiB")
    )
    huge = 'backend: "python"\n' + gpu_group(2, name="huge_0") + parameters(gpu_memory_bytes="4GiB")
    huge_dir = write_model(root, "huge", huge)

    code = main(["size", "repository", str(root), "--gpu", "8GiB"])

    output = capsys.readouterr().out
    assert code == 1
    # The server's ledger, holding what `small` holds, refuses `huge` in these words:
    ledger = MemoryLedger(FakeMemory([8 * GIB]))
    for name in ("a_small", "huge"):  # the planner's order too: by name
        config = read_config_file(root / name / "config.pbtxt")
        try:
            plan_memory(ledger, config, instance_specs(config, root / name, 1))
        except InsufficientMemoryError as exc:
            server_says = exc.message
    assert server_says.startswith("model 'huge' version 1 (huge_0_1) needs 4.0 GiB on GPU 0")
    assert f"does not fit:\n  {server_says}" in output
    assert re.search(r"^huge +1 +python +GPU +2 +- +- +refused \(below\)$", output, re.MULTILINE)
    # the first huge instance was let go: the GPU holds a_small's 2 GiB alone
    assert re.search(r"^GPU 0 +8GiB +8\.0 GiB +2\.0 GiB +6\.0 GiB$", output, re.MULTILINE)
    assert huge_dir.is_dir()


def test_an_llm_that_does_not_work_at_this_isl_osl_exits_1(tmp_path, capsys):
    root = tmp_path / "repo"
    write_model(root, "bf16_llm", 'backend: "llm"\n' + parameters(max_model_len="4096"), checkpoint=CHECKPOINT)

    assert main(["size", "repository", str(root), "--gpu", "L4-24GB", "--isl", "4000", "--osl", "1000"]) == 1
    assert "a sequence of 5000 tokens (isl + osl) is longer than max_model_len 4096" in capsys.readouterr().out

    weights = weight_bytes(CheckpointShape.from_dict(CHECKPOINT), "bf16")
    assert main(["size", "repository", str(root), "--gpu", "T4-16GB"]) == 1
    text = capsys.readouterr().out
    assert f"its weights ({weights / GIB:.1f} GiB, bf16) do not fit its" in text
    assert "(an LLM's share of what is free)" in text


def test_gpu_memory_limit_and_versions_and_cpu_instances(tmp_path):
    root = tmp_path / "repo"
    write_model(root, "both", 'backend: "python"\nversion_policy { all { } }\n' + gpu_group(), {"model.py": 10 * MIB})
    (root / "both" / "2").mkdir()
    (root / "both" / "2" / "model.py").write_bytes(b"x" * 1000)
    write_model(root, "cpu_model", 'backend: "python"\n', {"model.py": 5 * MIB})

    code, document = plan(root, "--gpu", "H100-80GB", "--gpu-memory-limit", "25%", tmp_path=tmp_path)

    assert code == 0
    assert document["gpus"][0]["limit_bytes"] == int(0.25 * GPU_MEMORY_BYTES["H100-80GB"])
    assert [(i["version"], i["bytes"]) for i in instances_of(document, "both")] == [(1, 10 * MIB), (2, 1000)]
    [cpu] = instances_of(document, "cpu_model")
    assert (cpu["kind"], cpu["device"], cpu["bytes"]) == ("CPU", "CPU", 5 * MIB)
    assert document["gpus"][0]["held_bytes"] == 10 * MIB + 1000  # the host is listed, not accounted


def test_a_config_that_cannot_be_read_is_a_refusal(tmp_path, capsys):
    root = tmp_path / "repo"
    write_model(root, "broken", 'backend: "python"\n' + parameters(gpu_memory_bytes="lots") + gpu_group())
    assert main(["size", "repository", str(root), "--gpu", "H100"]) == 1
    assert "parameters.gpu_memory_bytes" in capsys.readouterr().out


def test_gpus_by_name_count_and_size():
    gpus = parse_gpus(["2xH100-80GB", "40GiB", "nvidia h200"])
    assert [(g.id, g.total_bytes) for g in gpus] == [
        (0, GPU_MEMORY_BYTES["H100-80GB"]),
        (1, GPU_MEMORY_BYTES["H100-80GB"]),
        (2, 40 * GIB),
        (3, GPU_MEMORY_BYTES["H200-141GB"]),
    ]
    with pytest.raises(ValueError, match="A100-80GB, A100-40GB"):
        parse_gpus(["A100"])  # two cards of that family: it must say which
    with pytest.raises(ValueError, match="H100-80GB"):
        parse_gpus(["B300"])


def test_without_gpu_flags_the_plan_uses_this_machines_gpus(tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    write_model(root, "m", 'backend: "python"\n' + gpu_group() + parameters(gpu_memory_bytes="1GiB"))
    monkeypatch.setattr(gpu_models, "nvml_gpus", lambda: ())
    assert main(["size", "repository", str(root)]) == 2
    assert "no GPU found through NVML" in capsys.readouterr().err

    found = (NvmlGpu(0, "GPU-a", "NVIDIA H100 80GB HBM3", None), NvmlGpu(1, "GPU-b", "NVIDIA H100 80GB HBM3", None))
    monkeypatch.setattr(gpu_models, "nvml_gpus", lambda: found)
    monkeypatch.setattr(gpu_models, "gpu_total_bytes", lambda gpu: 12 * GIB)
    code, document = plan(root, tmp_path=tmp_path)
    assert code == 0
    assert [(g["id"], g["name"], g["limit_bytes"]) for g in document["gpus"]] == [
        (0, "NVIDIA H100 80GB HBM3", 12 * GIB),
        (1, "NVIDIA H100 80GB HBM3", 12 * GIB),
    ]


def test_size_memory_takes_a_card_by_name(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(CHECKPOINT))
    assert main(["size", "memory", "--config", str(tmp_path), "--gpu", "H200"]) == 0
    assert "of H200-141GB (140.4 GiB)" in capsys.readouterr().out


def test_a_bad_llm_utilization_is_refused_as_the_server_refuses_it(tmp_path):
    # The planner and the ledger read one parameter, one way (modelgate/core/memory_rules.py).
    root = tmp_path / "repo"
    write_model(root, "x", 'backend: "llm"\n' + parameters(gpu_memory_utilization="1.5"), checkpoint=CHECKPOINT)
    code, document = plan(root, "--gpu", "H100", tmp_path=tmp_path)
    assert code == 1 and "'parameters.gpu_memory_utilization': '1.5' is not in (0, 1]" in document["problems"][0]
