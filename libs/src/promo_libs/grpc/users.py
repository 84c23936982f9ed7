"""UserDirectory over gRPC: UserService.GetUser with a per-call deadline, as the shared
snapshot (promo_libs.users, which also states the failure contract)."""

from __future__ import annotations

import grpc

from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.client import peer_serving
from promo_libs.grpc.errors import error_info
from promo_libs.grpc.mapping import moment, user_fields
from promo_libs.users import UserDirectory, UserSnapshot, users_unavailable


class GrpcUserDirectory(UserDirectory):
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._channel = channel
        self._stub = users_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def get_user(self, user_id: str) -> UserSnapshot | None:
        try:
            user = await self._stub.GetUser(
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
            raise users_unavailable() from None
        return snapshot(user)

    async def ping(self) -> bool:
        return await peer_serving(self._channel, self._timeout)


def snapshot(user: users_pb2.User) -> UserSnapshot:
    return UserSnapshot(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        active=user.active,
        created_at=moment(user, "create_time"),
        deleted_at=moment(user, "delete_time"),
    )


def user_message(user: UserSnapshot) -> users_pb2.User:
    """`snapshot`'s inverse: the user as GetUser answered it, for a caller that passes on what it
    read (RedeemPromoCodeRequest.user)."""
    return users_pb2.User(**user_fields(user))
