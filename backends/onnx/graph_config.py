"""Auto-complete of a ModelConfig from an ONNX graph signature, as Triton's ORT backend does.

Only what the config leaves out is filled: missing inputs (every required graph input),
outputs (all of the graph's, when the config lists none; a listed subset is kept), each
tensor's `data_type` and `dims`, and `max_batch_size`. What the config states is checked
against the graph; a contradiction is a ConfigError naming the file, the field and what
the model has.

`max_batch_size` (0 means unset in proto3): when every input and output of the graph has a
variable first dimension and the config does not spell that dimension out in some tensor's
dims, the model batches: `max_batch_size` becomes DEFAULT_MAX_BATCH_SIZE (4, Triton's
default for `--backend-config=default-max-batch-size`), that first dimension is left out
of every `dims`, and, when the config names no scheduler, `dynamic_batching {}` is turned
on as Triton does for a completed batch size. A config whose dims include the first
dimension keeps `max_batch_size: 0` and the full shapes.
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.backends.onnx.graph_signature import VARIABLE, GraphSignature, TensorSignature
from modelgate.core.errors import ConfigError

DEFAULT_MAX_BATCH_SIZE = 4


class GraphConfigCompleter:
    """Completes and checks one config against one graph; `source` and `model_label` name them in errors."""

    def __init__(self, graph: GraphSignature, source: str, model_label: str):
        self.graph = graph
        self.source = source
        self.model_label = model_label

    def complete(self, config: ModelConfig) -> ModelConfig:
        self._check_known_names(config.input, self.graph.inputs, "input")
        self._check_known_names(config.output, self.graph.outputs, "output")
        self._complete_max_batch_size(config)
        self._add_missing(config.input, self.graph.inputs, add_all=True)
        self._add_missing(config.output, self.graph.outputs, add_all=not config.output)
        has_batch = config.max_batch_size > 0
        for kind, declared, graph_tensors in (
            ("input", config.input, self.graph.inputs),
            ("output", config.output, self.graph.outputs),
        ):
            by_name = {t.name: t for t in graph_tensors}
            for index, tensor in enumerate(declared):
                self._complete_tensor(tensor, by_name[tensor.name], f"{kind}[{index}]", has_batch)
        return config

    # -- max_batch_size --------------------------------------------------------------------

    def _complete_max_batch_size(self, config: ModelConfig) -> None:
        if config.max_batch_size > 0:
            self._check_can_batch(config.max_batch_size)
        elif self.graph.can_batch() and not self._spells_out_first_dim(config):
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            if config.WhichOneof("scheduling_choice") is None:
                config.dynamic_batching.SetInParent()

    def _check_can_batch(self, max_batch_size: int) -> None:
        for tensor in self.graph.inputs + self.graph.outputs:
            if not tensor.has_variable_first_dim:
                raise ConfigError(
                    self.source,
                    "max_batch_size",
                    f"is {max_batch_size} but {self.model_label} cannot batch: '{tensor.name}' has shape "
                    f"{_shape_text(tensor.dims)}, whose first dimension is not variable; set max_batch_size: 0 "
                    "and give full shapes in dims, or export the model with a dynamic first dimension",
                )

    def _spells_out_first_dim(self, config: ModelConfig) -> bool:
        """Whether some tensor of the config gives as many dims as the graph has (batch included)."""
        ranks = {t.name: len(t.dims) for t in self.graph.inputs + self.graph.outputs if t.dims is not None}
        for tensor in list(config.input) + list(config.output):
            dims = _declared_dims(tensor)
            if dims and tensor.name in ranks and len(dims) == ranks[tensor.name]:
                return True
        return False

    # -- tensors ---------------------------------------------------------------------------

    def _check_known_names(self, declared, graph_tensors: tuple[TensorSignature, ...], kind: str) -> None:
        names = [t.name for t in graph_tensors]
        for index, tensor in enumerate(declared):
            if tensor.name and tensor.name not in names:
                raise ConfigError(
                    self.source,
                    f"{kind}[{index}].name",
                    f"'{tensor.name}' is not an {kind} of {self.model_label}; "
                    f"its {kind}s are: {', '.join(names) or 'none'}",
                )

    def _add_missing(self, declared, graph_tensors: tuple[TensorSignature, ...], add_all: bool) -> None:
        if not add_all:
            return
        present = {t.name for t in declared}
        for graph_tensor in graph_tensors:
            if graph_tensor.name not in present:
                declared.add(name=graph_tensor.name)

    def _complete_tensor(self, tensor, graph_tensor: TensorSignature, where: str, has_batch: bool) -> None:
        self._complete_data_type(tensor, graph_tensor, where)
        model_dims = _model_dims(graph_tensor, has_batch)
        field = f"{where}.reshape.shape" if tensor.HasField("reshape") else f"{where}.dims"
        declared = _declared_dims(tensor)
        if not declared and not tensor.HasField("reshape"):
            if model_dims is None:
                raise ConfigError(
                    self.source, field, f"is required: {self.model_label} does not declare the rank of '{tensor.name}'"
                )
            tensor.dims.extend(model_dims)
        elif model_dims is not None and not _dims_agree(declared, model_dims):
            raise ConfigError(
                self.source,
                field,
                f"is {declared} but {self.model_label} has {model_dims} for '{tensor.name}' (-1 is variable"
                + ("; the batch dimension is not part of dims since max_batch_size > 0)" if has_batch else ")"),
            )

    def _complete_data_type(self, tensor, graph_tensor: TensorSignature, where: str) -> None:
        if graph_tensor.config_type is None:
            raise ConfigError(
                self.source,
                f"{where}.data_type",
                f"'{tensor.name}' of {self.model_label} has ONNX type {graph_tensor.ort_type}, which no ModelConfig "
                "data type carries (tensors of bool, integers, FP16/32/64, BF16 and strings are supported)",
            )
        if tensor.data_type == DataType.TYPE_INVALID:
            tensor.data_type = DataType.Value(graph_tensor.config_type)
        elif DataType.Name(tensor.data_type) != graph_tensor.config_type:
            raise ConfigError(
                self.source,
                f"{where}.data_type",
                f"is {DataType.Name(tensor.data_type)} but {self.model_label} has {graph_tensor.config_type} "
                f"({graph_tensor.ort_type}) for '{tensor.name}'",
            )


def _model_dims(graph_tensor: TensorSignature, has_batch: bool) -> list[int] | None:
    """The graph's shape as ModelConfig dims: without the batch dimension when the model batches."""
    if graph_tensor.dims is None:
        return None
    return list(graph_tensor.dims[1:] if has_batch else graph_tensor.dims)


def _declared_dims(tensor) -> list[int]:
    """The shape the model sees: `reshape.shape` when present, else `dims`."""
    return list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)


def _dims_agree(declared: list[int], model_dims: list[int]) -> bool:
    """Same rank, and every fixed dimension of the model is the configured one."""
    if len(declared) != len(model_dims):
        return False
    return all(m == VARIABLE or m == d for d, m in zip(declared, model_dims))


def _shape_text(dims: tuple[int, ...] | None) -> str:
    return "of unknown rank" if dims is None else str(list(dims))
