"""Calling UserService from another service: one user by id, and whether the service is up.

The calling services differ only in what they make of the answer (their own snapshot type, their
own "outcome unknown" error); how a call is made, bounded and classified is the same for all.
"""

from __future__ import annotations

import grpc

from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.client import peer_serving
from promo_libs.grpc.errors import error_info


class UserLookupFailed(Exception):
    """UserService gave no usable answer (down, deadline, overloaded): the outcome is unknown."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(f"UserService answered {code.name}")
        self.code = code


class UsersClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._channel = channel
        self._stub = users_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def get(self, user_id: str) -> users_pb2.User | None:
        """The user, None when no such user exists; UserLookupFailed when nobody can tell."""
        try:
            return await self._stub.GetUser(
                users_pb2.GetUserRequest(id=user_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if exc.code() == grpc.StatusCode.NOT_FOUND and (
                info is None or info.reason == "USER_NOT_FOUND"
            ):
                return None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return None  # an id UserService cannot even parse names no user
            raise UserLookupFailed(exc.code()) from None

    async def ping(self) -> bool:
        return await peer_serving(self._channel, self._timeout)
