"""The example repository loads and answers through tritonclient.http."""

import numpy as np
import tritonclient.http as httpclient


def test_every_example_model_is_ready(client):
    index = client.get_model_repository_index()
    states = {row["name"]: row["state"] for row in index}
    assert states == {
        name: "READY"
        for name in (
            "add_sub",
            "batched_scale",
            "string_ops",
            "repeat_int32",
            "add_batch_dim",
            "ensemble_add_sub_scale",
            "simple_onnx",
            "simple_torchscript",
            "simple_sequence",
            "tiny_llm",
        )
    }


def test_add_sub_json_and_binary(client):
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([10, 20, 30, 40], dtype=np.float32)
    for binary in (False, True):
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(a, binary_data=binary)
        inputs[1].set_data_from_numpy(b, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        result = client.infer("add_sub", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_tiny_llm_answers_with_recognisable_text(example_server):
    import json
    import urllib.request

    body = json.dumps(
        {
            "text_input": "The capital of France is",
            "parameters": {"max_tokens": 8, "temperature": 0, "exclude_input_in_output": True},
        }
    )
    request = urllib.request.Request(
        f"http://{example_server.http_url}/v2/models/tiny_llm/generate",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert answer["text_output"].strip() == "Paris."
    assert answer["finish_reason"] == "stop"
