"""Which forward() argument each configured input feeds, by Triton's PyTorch-backend rule.

If every input name is an argument name of forward(), inputs map by name. Otherwise every
name must follow `<name>__<index>` (`INPUT__0`, `INPUT__1`...), and input `__i` feeds the
i-th argument. Checked at load time: each input maps to exactly one argument, and every
argument without a default value is fed by some input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.pytorch.loaded_module import ModuleArgument
from modelgate.core.errors import ConfigError

_INDEXED_NAME = re.compile(r"^.+__(\d+)$")


@dataclass(frozen=True)
class InputBinding:
    argument_of: dict[str, str]  # config input name -> forward() argument name
    rule: str  # "argument names" or "<name>__<index>"


def bind_inputs(config: ModelConfig, arguments: list[ModuleArgument], source: str) -> InputBinding:
    """The binding of `config`'s inputs to `arguments`, or a ConfigError naming the input."""
    names = [tensor.name for tensor in config.input]
    argument_names = [a.name for a in arguments]
    if all(name in argument_names for name in names):
        binding = InputBinding({name: name for name in names}, "argument names")
    else:
        binding = InputBinding(_bind_by_index(names, argument_names, source), "<name>__<index>")
    _check_required_arguments(binding, arguments, source)
    return binding


def _bind_by_index(names: list[str], argument_names: list[str], source: str) -> dict[str, str]:
    matches = [_INDEXED_NAME.match(name) for name in names]
    _check_index_names(names, matches, argument_names, source)
    argument_of: dict[str, str] = {}
    for position, (name, match) in enumerate(zip(names, matches)):
        index = int(match.group(1))
        if index >= len(argument_names):
            raise ConfigError(
                source,
                f"input[{position}].name",
                f"'{name}' names argument {index}, but forward() takes {len(argument_names)} "
                f"argument(s): {', '.join(argument_names) or 'none'}",
            )
        if argument_names[index] in argument_of.values():
            raise ConfigError(source, f"input[{position}].name", f"'{name}' feeds argument {index} a second time")
        argument_of[name] = argument_names[index]
    return argument_of


def _check_index_names(names: list[str], matches: list, argument_names: list[str], source: str) -> None:
    """Every name must be <name>__<index>; say which is not, and whether it was an argument name."""
    for position, (name, match) in enumerate(zip(names, matches)):
        if match is None and name not in argument_names:
            raise ConfigError(
                source,
                f"input[{position}].name",
                f"'{name}' is neither a forward() argument ({', '.join(argument_names) or 'none'}) "
                "nor of the form <name>__<index> such as INPUT__0",
            )
    for position, (name, match) in enumerate(zip(names, matches)):
        if match is None:
            raise ConfigError(
                source,
                f"input[{position}].name",
                f"'{name}' is a forward() argument, but other inputs are not: name all inputs after "
                "forward()'s arguments, or all as <name>__<index>",
            )


def _check_required_arguments(binding: InputBinding, arguments: list[ModuleArgument], source: str) -> None:
    fed = set(binding.argument_of.values())
    missing = [a.name for a in arguments if not a.has_default and a.name not in fed]
    if missing:
        raise ConfigError(
            source,
            "input",
            f"declares {len(binding.argument_of)} input(s) but forward() also needs {', '.join(missing)} "
            f"(inputs map by {binding.rule}); declare an input for each argument",
        )
