"""The BYTES tensor codec (modelgate/core/tensors/bytes_codec.py) against tritonclient.utils' serializer and
deserializer of the same length-prefixed format, on the CPU, in one process.

For each element count and element size it checks that both produce the same wire bytes and the same elements,
then times both in alternating rounds (each round repeats one call until it has run --min-round-ms) and keeps the
best round of each: microseconds per call. `ratio` is tritonclient / modelgate, so above 1 means ours is faster.

    python benchmarks/bytes_codec.py
    python benchmarks/bytes_codec.py --counts 1 64 --rounds 9
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelgate.core.tensors import bytes_codec  # noqa: E402  (after the checkout is on the path)

# Short elements are word- or token-sized; long ones are a paragraph of text.
ELEMENT_SIZES = {"short": (4, 24), "1 KiB": (1024, 1024)}


def main() -> int:
    args = _parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, tritonclient {version('tritonclient')}; "
        f"best of {args.rounds} rounds, µs per call; ratio = tritonclient / modelgate (above 1: ours faster)"
    )
    header = f"{'elements':>9} {'size':>6} | {'ser ours':>10} {'ser triton':>11} {'ratio':>6} |"
    print(header + f" {'de ours':>10} {'de triton':>10} {'ratio':>6}")
    for count in args.counts:
        for size_name, (low, high) in ELEMENT_SIZES.items():
            array = _elements(count, low, high, args.seed)
            print(_row(count, size_name, array, args))
    return 0


def _row(count: int, size_name: str, array: np.ndarray, args: argparse.Namespace) -> str:
    wire = bytes_codec.serialize_bytes_tensor(array)
    _check_same(array, wire)
    ser = _best_us(
        {
            "ours": lambda: bytes_codec.serialize_bytes_tensor(array),
            "triton": lambda: serialize_byte_tensor(array),
        },
        args,
    )
    de = _best_us(
        {
            "ours": lambda: bytes_codec.deserialize_bytes_tensor(wire, count, "bench"),
            "triton": lambda: deserialize_bytes_tensor(wire),
        },
        args,
    )
    return (
        f"{count:>9} {size_name:>6} | {ser['ours']:>10.1f} {ser['triton']:>11.1f} {ser['triton'] / ser['ours']:>6.2f} |"
        f" {de['ours']:>10.1f} {de['triton']:>10.1f} {de['triton'] / de['ours']:>6.2f}"
    )


def _elements(count: int, low: int, high: int, seed: int) -> np.ndarray:
    """`count` random printable ASCII byte strings of `low`..`high` bytes, as the object array servers carry."""
    rng = random.Random(seed)
    array = np.empty(count, dtype=object)
    for i in range(count):
        array[i] = bytes(rng.choices(range(32, 127), k=rng.randint(low, high)))
    return array


def _check_same(array: np.ndarray, wire: bytes) -> None:
    """Both codecs agree on the wire and on the elements: the timings compare equal work."""
    assert serialize_byte_tensor(array).item() == wire
    ours = bytes_codec.deserialize_bytes_tensor(wire, array.size, "bench")
    assert list(ours) == list(deserialize_bytes_tensor(wire)) == list(array)


def _best_us(calls: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, float]:
    """The best round of each call, the calls taking turns so that a noisy moment hits both alike."""
    numbers = {name: _calls_per_round(call, args.min_round_ms) for name, call in calls.items()}
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(numbers[name]):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / numbers[name] * 1e6)
    return best


def _calls_per_round(call: Callable[[], object], min_round_ms: float) -> int:
    """How many calls fill a round: the first call (a warm-up too) sets the estimate."""
    start = time.perf_counter()
    call()
    once_ms = (time.perf_counter() - start) * 1e3
    return max(1, int(min_round_ms / max(once_ms, 1e-6)))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 64, 4096, 65536], help="elements per tensor")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per codec and case; the best one is shown")
    parser.add_argument("--min-round-ms", type=float, default=50.0, help="each round repeats a call this long")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random elements")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
