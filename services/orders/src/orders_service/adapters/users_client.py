"""UserDirectory over gRPC: promo.v1.UserService.GetUser with a per-call deadline."""

from __future__ import annotations

from datetime import UTC

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orders_service.domain.events import UserSnapshot
from orders_service.domain.ports import OutcomeUnknown, UserDirectory
from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.errors import error_info

DEPENDENCY = "users"


class GrpcUserDirectory(UserDirectory):
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._users = users_pb2_grpc.UserServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._timeout = timeout

    async def get_user(self, user_id: str) -> UserSnapshot | None:
        try:
            user = await self._users.GetUser(
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
            raise OutcomeUnknown(DEPENDENCY, exc.code().name) from None
        return UserSnapshot(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            active=user.active,
            created_at=user.create_time.ToDatetime(tzinfo=UTC)
            if user.HasField("create_time")
            else None,
            deleted_at=user.delete_time.ToDatetime(tzinfo=UTC)
            if user.HasField("delete_time")
            else None,
        )

    async def ping(self) -> bool:
        return await serving(self._health, self._timeout)


async def serving(health: health_pb2_grpc.HealthStub, deadline: float) -> bool:
    """Whether the service behind `health` reports SERVING overall."""
    try:
        response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
