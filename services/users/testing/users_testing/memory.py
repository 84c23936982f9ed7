"""In-memory UserRepository for unit tests: the same contract as the MongoDB one."""

from __future__ import annotations

import copy

from promo_libs_testing.memory import InMemoryRepository
from users_service.domain.model import User
from users_service.domain.ports import EmailTaken, UserRepository, VersionConflict


class InMemoryUserRepository(InMemoryRepository[User], UserRepository):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[object] = []  # events that the outbox would hold

    async def get(self, user_id: str) -> User | None:
        return await self.find_by_id(user_id)

    async def get_by_email(self, email_key: str) -> User | None:
        for user in self.items.values():
            if user.email_key == email_key:
                return copy.deepcopy(user)
        return None

    async def add(self, user: User) -> None:
        if await self.get_by_email(user.email_key) is not None:
            raise EmailTaken(user.email)
        self.published.extend(user.events)
        user.events.clear()
        await self.create(user)

    async def save(self, user: User) -> None:
        stored = self.items.get(user.id)
        if stored is None or stored.version != user.version:
            raise VersionConflict(user.id)
        other = await self.get_by_email(user.email_key)
        if other is not None and other.id != user.id:
            raise EmailTaken(user.email)
        self.published.extend(user.events)
        user.events.clear()
        user.version += 1
        self.items[user.id] = copy.deepcopy(user)

    async def list_page(
        self, active: bool | None, after_id: str | None, size: int
    ) -> tuple[list[User], str | None]:
        matching = [
            u
            for _, u in sorted(self.items.items())
            if (active is None or u.active == active) and (after_id is None or u.id > after_id)
        ]
        page = [copy.deepcopy(u) for u in matching[:size]]
        return page, (page[-1].id if len(matching) > size and page else None)
