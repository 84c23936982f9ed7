"""Server reflection that also resolves method names, so `grpcurl describe Svc.Method` works.

The C++-backed Python descriptor pool finds services and messages by name but not methods
("promo.v1.UserService.CreateUser"), which grpcurl asks for when describing a method. This pool
falls back to the service that declares the method; every other lookup is the default pool's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection


class _MethodAwarePool:
    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service, _, method = symbol.rpartition(".")
            descriptor = self._pool.FindServiceByName(service) if service else None
            if descriptor is None or method not in descriptor.methods_by_name:
                raise
            return descriptor.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    reflection.enable_server_reflection(
        [*service_names, reflection.SERVICE_NAME],
        server,
        pool=_MethodAwarePool(descriptor_pool.Default()),
    )
