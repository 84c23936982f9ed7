"""UserRepository on MongoDB: collection `users`, one document per account.

Uniqueness of emails is the unique index on `email_key` (the case-folded address), not a read
before the write, so concurrent sign-ups with one email create exactly one account. Changes are
compare-and-set on `version`, and carry their events in the same update (outbox). Moments are
stored as epoch milliseconds (promo_libs.mongo.times says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pymongo.errors import DuplicateKeyError

from promo_libs.mongo.connection import Document
from promo_libs.mongo.repository import MongoRepository
from promo_libs.mongo.times import from_millis, optional_from_millis, optional_to_millis, to_millis
from promo_libs.outbox import OutboxEntry
from users_service.domain.events import UserEvent
from users_service.domain.model import User
from users_service.domain.ports import EmailTaken, UserRepository, VersionConflict

EncodeEvents = Callable[[Sequence[UserEvent], int], list[OutboxEntry]]


class MongoUserRepository(MongoRepository[User, EncodeEvents], UserRepository):
    collection_name = "users"

    def to_document(self, entity: User) -> Document:
        return {
            "_id": entity.id,
            "email": entity.email,
            "email_key": entity.email_key,
            "display_name": entity.display_name,
            "password_hash": entity.password_hash,
            "active": entity.active,
            "created_at": to_millis(entity.created_at),
            "updated_at": to_millis(entity.updated_at),
            "deleted_at": optional_to_millis(entity.deleted_at),
            "version": entity.version,
        }

    def from_document(self, document: Document) -> User:
        return User(
            id=document["_id"],
            email=document["email"],
            display_name=document.get("display_name", ""),
            password_hash=document["password_hash"],
            active=bool(document["active"]),  # the stand-in returns 1/0 after a $set
            created_at=from_millis(document["created_at"]),
            updated_at=from_millis(document["updated_at"]),
            deleted_at=optional_from_millis(document.get("deleted_at")),
            version=document.get("version", 1),
        )

    async def get(self, user_id: str) -> User | None:
        return await self.find_by_id(user_id)

    async def get_by_email(self, email_key: str) -> User | None:
        document = await self.collection.find_one({"email_key": email_key})
        return None if document is None else self.from_document(document)

    async def add(self, user: User) -> None:
        try:
            await self.create(user, self._encode(user.events, user.version))
        except DuplicateKeyError as exc:
            if "email_key" in str(exc):
                raise EmailTaken(user.email) from None
            raise
        user.events.clear()

    async def save(self, user: User) -> None:
        changes = self.to_document(user)
        del changes["_id"]
        changes["version"] = user.version + 1
        try:
            await self.write(
                user.id,
                changes,
                self._encode(user.events, user.version + 1),
                expected={"version": user.version},
            )
        except KeyError:
            raise VersionConflict(user.id) from None
        except DuplicateKeyError:
            raise EmailTaken(user.email) from None
        user.version += 1
        user.events.clear()

    async def list_page(
        self, active: bool | None, after_id: str | None, size: int
    ) -> tuple[list[User], str | None]:
        return await self.page({} if active is None else {"active": active}, after_id, size)
