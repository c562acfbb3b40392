"""The private parts of grpcio's threaded server (`grpc._server`) that the loop paths use (loop_calls.py).

Checked once, here: `SUPPORTED` says whether the installed grpcio has them all. Without them every call runs
on grpc's handler threads (threaded_bridge.py), as it did before the loop paths existed.
"""

from __future__ import annotations

import grpc

try:
    from grpc import _common as _grpc_common
    from grpc import _server as _grpc_server
    from grpc._cython import cygrpc as _cygrpc

    RECEIVE_MESSAGE_TOKEN = _grpc_server._RECEIVE_MESSAGE_TOKEN
    SEND_MESSAGE_TOKEN = _grpc_server._SEND_MESSAGE_TOKEN
    UNARY_WORK = _grpc_server._unary_response_in_pool
    STREAM_WORK = _grpc_server._stream_response_in_pool
    Context = _grpc_server._Context
    abort = _grpc_server._abort
    status = _grpc_server._status
    possibly_finish_call = _grpc_server._possibly_finish_call
    is_rpc_state_active = _grpc_server._is_rpc_state_active
    initial_metadata_operation = _grpc_server._get_initial_metadata_operation
    CLIENT_OPEN = _grpc_server._OPEN
    CLIENT_CLOSED = _grpc_server._CLOSED
    CLIENT_CANCELLED = _grpc_server._CANCELLED
    CYGRPC_CODE = _grpc_common.STATUS_CODE_TO_CYGRPC_STATUS_CODE
    ReceiveMessage = _cygrpc.ReceiveMessageOperation
    SendMessage = _cygrpc.SendMessageOperation
    NO_COMPRESS = _cygrpc.WriteFlag.no_compress
    SUPPORTED = True
except (ImportError, AttributeError):  # pragma: no cover - another grpcio: the threaded path serves
    SUPPORTED = False


def cygrpc_code(code: grpc.StatusCode):
    """The core status code of `code`; OK becomes UNKNOWN, as grpcio's abort makes it (OK is no way to fail)."""
    return CYGRPC_CODE[grpc.StatusCode.UNKNOWN if code == grpc.StatusCode.OK else code]


def finish_if_ended(state):
    """What a completion tag returns to grpc's polling loop: (state, callbacks) once the RPC has ended and no
    operation of it is due (grpc then runs the callbacks and forgets the call), else (None, ()). The tag must
    have removed its own token from `state.due` first; the caller holds `state.condition`."""
    if not is_rpc_state_active(state) and not state.due:
        callbacks, state.callbacks = state.callbacks, None
        return state, callbacks
    return None, ()
