"""`--grpc-restricted-protocol`: a restricted method's handler checks the call's metadata before it runs.

Only the handlers of restricted methods are wrapped (registration.py), so a method left unrestricted, the
unary ModelInfer path above all, runs exactly the handler it runs without the flag. The check runs on grpc's
handler thread, before the request is decoded or anything reaches the event loop.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from modelgate.server.frontends.api_restrictions import HeaderRule


def metadata_guard(behaviour: Callable, rule: HeaderRule) -> Callable:
    """`behaviour` (any cardinality: its first argument is the request or the request iterator), run only when
    the call's metadata carries `rule`'s key (lower-cased, as gRPC sends keys) with its value; otherwise the
    call ends with PERMISSION_DENIED."""
    key = rule.header.lower()
    refusal = rule.refusal("protocol")
    code = grpc.StatusCode[refusal.grpc_code]

    def guarded(request, context: grpc.ServicerContext):
        if not rule.permits(_sent_value(context.invocation_metadata(), key)):
            context.abort(code, refusal.message)
        return behaviour(request, context)

    return guarded


def is_permitted(rule: HeaderRule, metadata) -> bool:
    """Whether a call's `metadata` carries what `rule` asks, as `metadata_guard` checks it (for handlers that
    check it themselves: a frontend worker's async ones)."""
    return rule.permits(_sent_value(metadata, rule.header.lower()))


def _sent_value(metadata, key: str) -> str | None:
    """The first value sent under `key` (as HTTP's `headers.get` takes the first)."""
    for item_key, value in metadata or ():
        if item_key == key:
            return value if isinstance(value, str) else None
    return None
