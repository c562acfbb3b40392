"""A closed-loop load generator for `add_sub` over HTTP JSON or gRPC that checks every answer's values.

`concurrency` workers share one client (aiohttp with one keep-alive connection per worker, or one
grpc.aio channel, as tritonclient's aio clients do); each sends the same request, waits for the
answer, checks it and sends the next, until `duration` seconds are up. The request is encoded
once (the KServe v2 JSON body of `add_sub_requests.json_encoding`, or the `ModelInferRequest` of
`add_sub_requests.grpc_request`, serialized), so the generator spends its CPU on the transport.

Every answer is checked: one whose exact bytes were already decoded and found right passes at
once; any other is decoded with tritonclient and compared with numpy's sum and difference. It
prints one line in the format of the other load generators, plus the checks and its own CPU:

    RESULT requests=N duration_us=D p50_us=X p99_us=Y errors=E wrong=W cpu_us=C

`errors` are failed requests (transport errors, non-200 answers, gRPC errors), `wrong` answered
requests whose outputs were wrong; the first of each kind is printed on stderr.

    python benchmarks/add_sub_load.py --protocol grpc --port 8001 --concurrency 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.add_sub_requests import (  # noqa: E402
    INFER_PATH,
    check_grpc_answer,
    check_outputs,
    grpc_request,
    json_encoding,
)
from benchmarks.bare_http_peer import HEADER_LENGTH, FixedResponse  # noqa: E402

GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
MAX_KNOWN_GOOD = 8  # distinct right answers remembered; a server answers the same request with the same bytes

Send = Callable[[], Awaitable[Hashable]]


class AnswerCheck:
    """Whether an answer holds the right values; answers byte-identical to one already decoded skip the decode."""

    def __init__(self, verify: Callable[[Hashable], None]):
        self.verify = verify  # raises AssertionError (numpy's) on wrong values
        self.known_good: set[Hashable] = set()

    def check(self, answer: Hashable) -> None:
        """Raise `WrongAnswer` unless `answer` holds the right values."""
        if answer in self.known_good:
            return
        try:
            self.verify(answer)
        except (AssertionError, ValueError, KeyError) as problem:
            raise WrongAnswer(str(problem)[:300]) from None
        if len(self.known_good) < MAX_KNOWN_GOOD:
            self.known_good.add(answer)


class WrongAnswer(Exception):
    """An answer that arrived but did not hold OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""


@dataclass
class Tally:
    """What the workers saw; latencies only of answered requests (right or wrong)."""

    latencies_us: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0
    first_error: str | None = None
    first_wrong: str | None = None

    def count_error(self, error: BaseException) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(error).__name__}: {error}"[:300]

    def count_wrong(self, problem: WrongAnswer) -> None:
        self.wrong += 1
        self.first_wrong = self.first_wrong or str(problem)


async def worker(send: Send, check: AnswerCheck, deadline: float, tally: Tally) -> None:
    """Send, wait, check, repeat until `deadline` (closed loop: one request in flight)."""
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            answer = await send()
        except Exception as error:  # a failed request is counted; the run goes on, as wrk's does
            tally.count_error(error)
            continue
        tally.latencies_us.append((time.perf_counter() - started) * 1e6)
        try:
            check.check(answer)
        except WrongAnswer as problem:
            tally.count_wrong(problem)


class HttpStatusError(Exception):
    """An HTTP answer other than 200."""


def http_sender(session: aiohttp.ClientSession, port: int) -> Send:
    """POST the JSON request; the answer as `FixedResponse` (hashable: body, content type, header length)."""
    encoding = json_encoding()
    url = f"http://127.0.0.1:{port}{INFER_PATH}"

    async def send() -> FixedResponse:
        async with session.post(url, data=encoding.body, headers=encoding.headers) as response:
            body = await response.read()
            if response.status != 200:
                raise HttpStatusError(f"HTTP {response.status}: {body[:200]!r}")
            header_length = response.headers.get(HEADER_LENGTH)
            return FixedResponse(body, response.content_type, None if header_length is None else int(header_length))

    return send


def http_check() -> AnswerCheck:
    encoding = json_encoding()
    return AnswerCheck(lambda answer: check_outputs(answer, encoding))


def grpc_sender(channel) -> Send:
    """ModelInfer with the request serialized once; the answer as the serialized `ModelInferResponse`."""
    infer = channel.unary_unary(GRPC_INFER_METHOD)  # no (de)serializers: bytes in, bytes out
    request = grpc_request().SerializeToString()

    async def send() -> bytes:
        return await infer(request)

    return send


async def generate(protocol: str, port: int, concurrency: int, duration_s: float) -> str:
    """Run the load; the RESULT line."""
    tally = Tally()
    if protocol == "http":
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            timing = await _run_workers(http_sender(session, port), http_check(), concurrency, duration_s, tally)
    else:
        import grpc  # only the gRPC runs pay for it

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            timing = await _run_workers(
                grpc_sender(channel), AnswerCheck(check_grpc_answer), concurrency, duration_s, tally
            )
    return result_line(tally, *timing)


async def _run_workers(
    send: Send, check: AnswerCheck, concurrency: int, duration_s: float, tally: Tally
) -> tuple[float, float]:
    """(elapsed µs, this process's CPU µs) over the run."""
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + duration_s
    await asyncio.gather(*(worker(send, check, deadline, tally) for _ in range(concurrency)))
    return (time.perf_counter() - started) * 1e6, (time.process_time() - cpu_started) * 1e6


def result_line(tally: Tally, elapsed_us: float, cpu_us: float) -> str:
    p50, p99 = np.percentile(tally.latencies_us, [50, 99]) if tally.latencies_us else (0.0, 0.0)
    for kind, first in (("error", tally.first_error), ("wrong answer", tally.first_wrong)):
        if first:
            print(f"first {kind}: {first}", file=sys.stderr)
    return (
        f"RESULT requests={len(tally.latencies_us)} duration_us={elapsed_us:.0f} p50_us={p50:.1f} p99_us={p99:.1f} "
        f"errors={tally.errors} wrong={tally.wrong} cpu_us={cpu_us:.0f}"
    )


def run(coroutine):
    """On uvloop where installed (the faster generator is the less likely bottleneck), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["http", "grpc"], required=True)
    parser.add_argument("--port", type=int, required=True, help="the server's HTTP or gRPC port on 127.0.0.1")
    parser.add_argument("--concurrency", type=int, required=True, help="requests in flight")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    args = parser.parse_args(argv)
    print(run(generate(args.protocol, args.port, args.concurrency, args.duration)), flush=True)


if __name__ == "__main__":
    main()
