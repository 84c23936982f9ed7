"""UserDirectory over gRPC: UserService.GetUser with a deadline, as this service's snapshot."""

from __future__ import annotations

import grpc

from promo.v1 import users_pb2
from promo_libs import errors
from promo_libs.grpc.mapping import moment
from promo_libs.grpc.users import UserLookupFailed, UsersClient
from promocodes_service.domain.events import UserSnapshot
from promocodes_service.domain.ports import UserDirectory


class GrpcUserDirectory(UserDirectory):
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._users = UsersClient(channel, timeout)

    async def get_user(self, user_id: str) -> UserSnapshot | None:
        try:
            user = await self._users.get(user_id)
        except UserLookupFailed:
            raise errors.Unavailable(
                "the user service did not answer",
                "DEPENDENCY_UNAVAILABLE",
                {"dependency": "users"},
            ) from None
        return None if user is None else snapshot(user)

    async def ping(self) -> bool:
        return await self._users.ping()


def snapshot(user: users_pb2.User) -> UserSnapshot:
    return UserSnapshot(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        active=user.active,
        created_at=moment(user, "create_time"),
        deleted_at=moment(user, "delete_time"),
    )
