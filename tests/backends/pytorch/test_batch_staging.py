"""BatchStaging: a batch's inputs written into buffers reused from batch to batch, and outputs that would
alias them copied out before the next batch overwrites them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from modelgate.backends.pytorch.batch_staging import BatchStaging


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def test_parts_are_joined_in_order_into_one_buffer_reused_by_the_next_batch():
    staging = BatchStaging(pinned=False)
    first = staging.stage("X", [np.full((1, 3), 1, np.float32), np.full((2, 3), 2, np.float32)])
    assert first.tolist() == [[1] * 3, [2] * 3, [2] * 3]
    second = staging.stage("X", [_read_only(np.full((2, 3), 7, np.float32))])
    assert second.tolist() == [[7] * 3, [7] * 3]
    assert second.data_ptr() == first.data_ptr()  # the same memory, written in place
    assert staging.buffer_bytes == 3 * 3 * 4


def test_a_larger_batch_grows_the_buffer_and_each_input_has_its_own():
    staging = BatchStaging(pinned=False)
    staging.stage("X", [np.zeros((2, 4), np.int64)])
    grown = staging.stage("X", [np.arange(12, dtype=np.int64).reshape(3, 4)])
    other = staging.stage("Y", [np.ones((1, 2), np.float16)])
    assert grown.tolist() == np.arange(12).reshape(3, 4).tolist() and grown.dtype == torch.int64
    assert other.dtype == torch.float16 and other.tolist() == [[1.0, 1.0]]
    assert staging.buffer_bytes == 4 * 4 * 8 + 1 * 2 * 2  # room for twice the first batch's rows


def test_a_change_of_dtype_or_shape_gets_a_new_buffer():
    staging = BatchStaging(pinned=False)
    staging.stage("X", [np.zeros((4, 2), np.float32)])
    assert staging.stage("X", [np.ones((1, 5), np.float32)]).tolist() == [[1.0] * 5]
    assert staging.stage("X", [np.ones((1, 5), np.int32)]).dtype == torch.int32


def test_bfloat16_parts_keep_their_bits():
    values = np.array([[1.5, -2.25]], dtype=ml_dtypes.bfloat16)
    staged = BatchStaging(pinned=False).stage("X", [values, values])
    assert staged.dtype == torch.bfloat16 and staged.float().tolist() == [[1.5, -2.25]] * 2


def test_outputs_sharing_a_staged_buffer_are_copied_and_others_kept():
    staging = BatchStaging(pinned=False)
    staged = staging.stage("X", [np.ones((2, 2), np.float32), np.ones((1, 2), np.float32)])
    independent = torch.zeros(3)
    outputs = staging.unshare_outputs({"same": staged, "view": staged[:, 0], "own": independent})
    staging.stage("X", [np.full((3, 2), 9, np.float32)])  # the next batch overwrites the buffer
    assert outputs["same"].tolist() == [[1.0, 1.0]] * 3
    assert outputs["view"].tolist() == [1.0] * 3
    assert outputs["own"] is independent


@pytest.mark.gpu
def test_gpu_staging_is_pinned_for_asynchronous_copies():
    staged = BatchStaging(pinned=True).stage("X", [np.ones((2, 3), np.float32)])
    assert staged.is_pinned()
    assert staged.to("cuda", non_blocking=True).cpu().tolist() == [[1.0] * 3] * 2
