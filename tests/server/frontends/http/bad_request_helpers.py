"""Helpers for the bad-request tests: the add_sub infer path, its inputs as JSON and as tritonclient inputs."""

import numpy as np
import tritonclient.http as httpclient

ADD_SUB = "/v2/models/add_sub/infer"
FP32_4 = np.array([1, 2, 3, 4], dtype=np.float32)


def fp32(name: str, shape: list, data=None, binary_size: int | None = None) -> dict:
    entry = {"name": name, "datatype": "FP32", "shape": shape}
    if data is not None:
        entry["data"] = data
    if binary_size is not None:
        entry["parameters"] = {"binary_data_size": binary_size}
    return entry


def good_add_sub_json(**changes) -> dict:
    body = {"inputs": [fp32("INPUT0", [4], [1, 2, 3, 4]), fp32("INPUT1", [4], [1, 1, 1, 1])]}
    body.update(changes)
    return body


def fp32_input(name: str, data: np.ndarray, datatype: str = "FP32", binary: bool = True):
    return httpclient.InferInput(name, list(data.shape), datatype).set_data_from_numpy(data, binary_data=binary)
