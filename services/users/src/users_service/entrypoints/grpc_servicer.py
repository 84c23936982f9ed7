"""promo.v1.UserService over gRPC: translate the request, call the use case, translate back.

Errors are not handled here: promo_libs' interceptor maps them to statuses with details.
"""

from __future__ import annotations

from typing import Any

import grpc

from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.users import user_message as snapshot_message
from users_service.domain.commands import (
    AuthenticateUser,
    CreateUser,
    DeleteUser,
    ListUsers,
    UpdateUser,
)
from users_service.domain.model import User
from users_service.service_layer.accounts import Accounts

Context = grpc.aio.ServicerContext[Any, Any]


def user_message(user: User) -> users_pb2.User:
    """The user as the API shows it: its snapshot, mapped as every caller maps it back
    (promo_libs.grpc.users), and when it last changed."""
    message = snapshot_message(user.snapshot())
    message.update_time.FromDatetime(user.updated_at)
    return message


class UserServicer(users_pb2_grpc.UserServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: Context
    ) -> users_pb2.User:
        user = await self._accounts.create_user(
            CreateUser(request.user.email, request.password, request.user.display_name)
        )
        return user_message(user)

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Context) -> users_pb2.User:
        return user_message(await self._accounts.get_user(request.id))

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        active = request.active if request.HasField("active") else None
        page = await self._accounts.list_users(
            ListUsers(request.page_size, request.page_token, active)
        )
        return users_pb2.ListUsersResponse(
            users=[user_message(u) for u in page.users], next_page_token=page.next_page_token
        )

    async def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: Context
    ) -> users_pb2.User:
        user = await self._accounts.update_user(
            UpdateUser(
                user_id=request.user.id,
                fields=frozenset(request.update_mask.paths),
                email=request.user.email,
                display_name=request.user.display_name,
                password=request.password,
                active=request.user.active,
                current_password=request.current_password,
            )
        )
        return user_message(user)

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: Context
    ) -> users_pb2.User:
        return user_message(await self._accounts.delete_user(DeleteUser(request.id)))

    async def AuthenticateUser(
        self, request: users_pb2.AuthenticateUserRequest, context: Context
    ) -> users_pb2.AuthenticateUserResponse:
        login = await self._accounts.log_in(AuthenticateUser(request.email, request.password))
        response = users_pb2.AuthenticateUserResponse(
            user=user_message(login.user), access_token=login.token
        )
        if login.token_expires is not None:
            response.access_token_expire_time.FromDatetime(login.token_expires)
        return response
