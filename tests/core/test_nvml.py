"""CUDA_VISIBLE_DEVICES read as CUDA reads it, to find the NVML GPU of a CUDA device number."""

from modelgate.core.nvml import _visible_indices, nvml_gpus

UUIDS = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]


def test_every_gpu_is_visible_when_the_variable_is_unset():
    assert _visible_indices(None, UUIDS) == [0, 1, 2]


def test_indices_and_uuid_prefixes_map_to_nvml_indices_in_cuda_order():
    assert _visible_indices("2,0", UUIDS) == [2, 0]
    assert _visible_indices("GPU-bbbb, 0", UUIDS) == [1, 0]


def test_an_entry_cuda_cannot_resolve_hides_it_and_those_after_it():
    assert _visible_indices("1,7,0", UUIDS) == [1]
    assert _visible_indices("", UUIDS) == []
    assert _visible_indices("-1", UUIDS) == []


def test_nvml_sees_the_gpus_cuda_sees():
    # CI has no NVIDIA driver: NVML is there as a package but finds no library, and so no GPUs.
    import torch

    assert len(nvml_gpus()) == torch.cuda.device_count()
