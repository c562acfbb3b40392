"""The `ModelConfig` object handed to `TritonPythonModel.auto_complete_config`.

It wraps the configuration in Triton's JSON form; a model may set max_batch_size, add inputs
and outputs, choose the dynamic batcher and set the transaction policy. Conflicts with what
the configuration file already says are ValueErrors, as in Triton.
"""

from __future__ import annotations

import json

_INPUT_KEYS = {"name", "data_type", "dims", "optional"}
_OUTPUT_KEYS = {"name", "data_type", "dims"}


class ModelConfig:
    def __init__(self, model_config):
        self._model_config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    def as_dict(self) -> dict:
        return self._model_config

    def max_batch_size(self) -> int:
        return int(self._model_config.get("max_batch_size", 0))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        configured = self.max_batch_size()
        if configured > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {configured}, but in auto-complete-config "
                f"function for model '{self._name()}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but auto-complete-config "
                    f"function for model '{self._name()}' tries to set scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict) -> None:
        self._add_tensor("input", input, _INPUT_KEYS)

    def add_output(self, output: dict) -> None:
        self._add_tensor("output", output, _OUTPUT_KEYS)

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        unknown = set(transaction_policy_dict) - {"decoupled"}
        if unknown:
            raise ValueError(
                f"model transaction property in auto-complete-config function for model '{self._name()}' "
                f"contains property other than 'decoupled': {sorted(unknown)}"
            )
        current = self._model_config.setdefault("model_transaction_policy", {})
        wanted = bool(transaction_policy_dict.get("decoupled", False))
        if "decoupled" in current and bool(current["decoupled"]) != wanted:
            raise ValueError(
                f"trying to change decoupled property in auto-complete-config for model '{self._name()}', "
                f"which is initially set to '{current['decoupled']}'."
            )
        current["decoupled"] = wanted

    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def _add_tensor(self, kind: str, tensor: dict, allowed: set[str]) -> None:
        label = tensor.get("name", "<unnamed>")
        extra = set(tensor) - allowed
        if extra:
            raise ValueError(
                f"{kind} '{label}' in auto-complete-config function for model '{self._name()}' contains "
                f"property other than {sorted(allowed)}: {sorted(extra)}"
            )
        for required in ("name", "data_type", "dims"):
            if required not in tensor:
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model '{self._name()}' "
                    f"is missing '{required}' property."
                )
        for existing in self._model_config[kind]:
            if existing["name"] == tensor["name"]:
                self._merge_tensor(kind, existing, tensor)
                return
        self._model_config[kind].append(dict(tensor))

    def _merge_tensor(self, kind: str, existing: dict, tensor: dict) -> None:
        configured_type = existing.get("data_type", "TYPE_INVALID")
        if configured_type not in ("TYPE_INVALID", tensor["data_type"]):
            raise ValueError(
                f"unable to load model '{self._name()}', configuration expects datatype {configured_type} "
                f"for {kind} '{tensor['name']}', model provides {tensor['data_type']}"
            )
        configured_dims = [int(d) for d in existing.get("dims", [])]
        if configured_dims and configured_dims != [int(d) for d in tensor["dims"]]:
            raise ValueError(
                f"model '{self._name()}', tensor '{tensor['name']}': the model expects dims "
                f"{list(tensor['dims'])} but the model configuration specifies dims {configured_dims}"
            )
        existing["data_type"] = tensor["data_type"]
        existing["dims"] = list(tensor["dims"])
        if "optional" in tensor:
            existing["optional"] = tensor["optional"]
