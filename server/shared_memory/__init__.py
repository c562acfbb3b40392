"""Triton's shared-memory extension: client-registered system (POSIX) and CUDA (IPC) regions that inputs are
read from and outputs written to, in place of tensor bytes on the wire."""
