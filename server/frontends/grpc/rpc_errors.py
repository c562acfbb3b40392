"""Errors of the one hierarchy as gRPC statuses."""

from __future__ import annotations

import functools

import grpc

from modelgate.core.errors import ModelgateError, drop_traceback


def aborting_on_errors(rpc):
    """Turn a ModelgateError raised by an RPC into the matching gRPC status."""

    @functools.wraps(rpc)
    async def wrapper(self, request, context):
        try:
            return await rpc(self, request, context)
        except ModelgateError as exc:
            drop_traceback(exc)  # its frames hold the request: freed now, not at the next full collection
            await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)

    return wrapper
