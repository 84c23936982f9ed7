"""`python -m users_service replay --stream NAME`: the users' current state as events (I6).

Reads only this service's database. One event per user with its current snapshot and version:
UserCreated for a user never changed, UserDeactivated for a deleted one, UserUpdated otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from promo_libs import replay
from promo_libs.outbox import OutboxEntry
from users_service.adapters.event_codec import encode_events
from users_service.adapters.mongo_repository import MongoUserRepository
from users_service.domain.events import UserCreated, UserDeactivated, UserEvent, UserUpdated


def sources(db: AsyncDatabase[replay.Document]) -> Sequence[replay.Source]:
    repository = MongoUserRepository(db, encode_events)

    async def to_entries(document: replay.Document) -> list[OutboxEntry]:
        user = repository.from_document(document)
        snapshot = user.snapshot()
        event: UserEvent
        if user.deleted:
            event = UserDeactivated(snapshot, user.deleted_at or user.updated_at)
        elif user.version == 1:
            event = UserCreated(snapshot, user.created_at)
        else:
            event = UserUpdated(snapshot, (), user.updated_at)
        return encode_events([event], user.version)

    return [replay.Source(MongoUserRepository.collection_name, to_entries)]
