"""A soak of issue 16: mixed good traffic with hostile requests interleaved, against `modelgate serve`.

The server runs as a process of its own on a throwaway repository (add_sub, the tiny LLM, the add_sub ->
add_batch_dim -> batched_scale ensemble), with --http-max-input-size 16 MiB. For `--duration` seconds, one
sender thread per good kind sends closed-loop, each checking its answers:

- tritonclient.http and tritonclient.grpc infer on add_sub, tritonclient.http on the ensemble;
- the openai package's completions on the tiny LLM, streamed and not;
- generation over one long-lived tritonclient.grpc stream (ModelStreamInfer);

while two hostile senders go round the requests of issue 16 (soak_hostile_requests.py: 10 MB prompts,
100k-deep JSON, 10^5 stop strings, best_of 10^6, 2000 prompts, a client that leaves a 256-prompt request,
bodies over the limit, undecodable gRPC). One round of every kind comes first, as a warm-up.

It prints good requests sent/failed per kind, hostile outcomes against the documented ones, the server
process's RSS after the warm-up and at the end, and the event-loop lag from the server's own /metrics. The
exit status is 1 when a good request failed, a hostile one got another outcome, RSS grew by 100 MiB or more,
an event-loop probe ran 0.5 s late, or the LLM engine still held requests 30 s after the traffic stopped
(the requests of clients that left must have been cancelled).

    python benchmarks/soak.py --duration 180
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.soak_good_requests import good_kinds  # noqa: E402
from benchmarks.soak_hostile_requests import HOSTILE_REQUESTS  # noqa: E402
from benchmarks.soak_report import SoakResult, print_report, problems  # noqa: E402
from benchmarks.soak_server import serving, tree_rss_mb  # noqa: E402
from benchmarks.soak_target import loop_lag, rss_mb, seconds_until_llm_idle  # noqa: E402
from benchmarks.soak_traffic import Tallies, send_one_round, traffic  # noqa: E402
from modelgate.server.large_allocations import return_large_blocks_to_the_os  # noqa: E402

NUM_RSS_SAMPLES = 12  # of the server's RSS during the soak: growth that levels off is no leak


def run_soak(
    work_dir: Path,
    duration_s: float,
    with_ensemble: bool = True,
    num_hostile_senders: int = 2,
    good_pause_s: float = 0.0,
) -> SoakResult:
    """Start a server in `work_dir`, warm it up with one round of every kind, then soak it for `duration_s`.

    `good_pause_s`: each good sender's wait between requests (0: closed loop).
    """
    # The clients' process too: its 10 MB requests would otherwise pile up in its own heaps.
    return_large_blocks_to_the_os()
    with serving(work_dir, with_ensemble) as (server, target):
        pid = server.process.pid
        rss_launch = rss_mb(pid)
        kinds = good_kinds(target)
        tallies = Tallies()
        send_one_round(target, tallies, kinds, HOSTILE_REQUESTS)
        rss_start, tree_start, lag_start = rss_mb(pid), tree_rss_mb(server), loop_lag(target.metrics_url)
        started = time.monotonic()
        timeline = [rss_start]
        with traffic(target, tallies, kinds, HOSTILE_REQUESTS, num_hostile_senders, good_pause_s):
            while (left := started + duration_s - time.monotonic()) > 0:
                time.sleep(min(left, duration_s / NUM_RSS_SAMPLES))
                timeline.append(rss_mb(pid))
        elapsed = time.monotonic() - started
        idle_after_s = seconds_until_llm_idle(target)
        return SoakResult(
            elapsed,
            tallies,
            (rss_launch, rss_start, rss_mb(pid)),
            (tree_start, tree_rss_mb(server)),
            timeline,
            lag_start,
            loop_lag(target.metrics_url),
            idle_after_s,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of mixed traffic after the warm-up")
    parser.add_argument("--hostile-senders", type=int, default=2, help="threads sending hostile requests")
    parser.add_argument("--no-ensemble", action="store_true", help="serve and send no ensemble")
    parser.add_argument(
        "--good-pause", type=float, default=0.0, help="seconds each good sender waits between requests (0: closed loop)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as work_dir:
        result = run_soak(Path(work_dir), args.duration, not args.no_ensemble, args.hostile_senders, args.good_pause)
    print_report(result, sys.stdout)
    return 1 if problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
