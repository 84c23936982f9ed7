"""The base MongoDB repository of the original spec.

find_by_id, find_all, create, update, delete and exists.

A service's repository subclasses it with its collection name and the two mapping functions
between its domain entity and the stored document, and adds the queries its use cases need.
Events recorded by an aggregate are written in the same single-document write as the change
(`outbox.<event_id>` plus `outbox_pending: true`, see promo_libs.outbox), so a committed change
never exists without its event.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.outbox import OutboxEntry, outbox_fields
from promo_libs.repository import Entity, Repository

T = TypeVar("T", bound=Entity)
# The service's event codec: its domain events (and the aggregate's version) -> outbox entries.
EncodeT = TypeVar("EncodeT", bound=Callable[..., list[OutboxEntry]])


class MongoRepository(Repository[T], abc.ABC, Generic[T, EncodeT]):
    collection_name: ClassVar[str]

    def __init__(
        self,
        db: AsyncDatabase[Document],
        encode_events: EncodeT,
        on_events_written: Callable[[], None] | None = None,
    ) -> None:
        self.collection: AsyncCollection[Document] = db[self.collection_name]
        self._encode = encode_events
        # Called after a write that stored events (e.g. OutboxRelay.notify): the relay publishes
        # them at once, off the request's path.
        self._on_events_written = on_events_written or (lambda: None)

    @abc.abstractmethod
    def to_document(self, entity: T) -> Document: ...

    @abc.abstractmethod
    def from_document(self, document: Document) -> T: ...

    async def find_by_id(self, entity_id: str) -> T | None:
        document = await self.collection.find_one({"_id": entity_id})
        return None if document is None else self.from_document(document)

    async def find_all(self, filter: Mapping[str, Any] | None = None) -> list[T]:
        cursor = self.collection.find(dict(filter or {})).sort("_id", 1)
        return [self.from_document(document) async for document in cursor]

    async def create(self, entity: T, events: Sequence[OutboxEntry] = ()) -> T:
        document = self.to_document(entity)
        document.update(outbox_fields(events, nested=True))
        await self.collection.insert_one(document)
        if events:
            self._on_events_written()
        return entity

    async def update(
        self,
        entity_id: str,
        changes: Mapping[str, Any],
        events: Sequence[OutboxEntry] = (),
        expected: Mapping[str, Any] | None = None,
    ) -> T:
        """`write`, then the entity as stored: for callers that need it (the spec's API); the
        services' own saves call `write`, which costs one round trip instead of two."""
        await self.write(entity_id, changes, events, expected)
        document = await self.collection.find_one({"_id": entity_id})
        if document is None:
            raise KeyError(entity_id)
        return self.from_document(document)

    async def write(
        self,
        entity_id: str,
        changes: Mapping[str, Any],
        events: Sequence[OutboxEntry] = (),
        expected: Mapping[str, Any] | None = None,
    ) -> None:
        """Sets `changes` (and writes `events`) in one atomic update, reading nothing back.

        `expected` adds conditions (e.g. the version read before), making it a compare-and-set:
        KeyError when no document matches.
        """
        query: dict[str, Any] = {"_id": entity_id, **(expected or {})}
        # update_one, not find_one_and_update: the local MongoDB stand-in answers a unique-index
        # violation of find_one_and_update with "no match" instead of a duplicate-key error.
        result = await self.collection.update_one(
            query, {"$set": {**changes, **outbox_fields(events, nested=False)}}
        )
        if result.matched_count == 0:
            raise KeyError(entity_id)
        if events:
            self._on_events_written()

    async def delete(self, entity_id: str) -> None:
        await self.collection.delete_one({"_id": entity_id})

    async def exists(self, entity_id: str) -> bool:
        return await self.collection.count_documents({"_id": entity_id}, limit=1) > 0

    async def page(
        self, filter: Mapping[str, Any], after_id: str | None, size: int
    ) -> tuple[list[T], str | None]:
        """One page in `_id` order, and the last id when there may be more."""
        query = dict(filter)
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        cursor = self.collection.find(query).sort("_id", 1).limit(size + 1)
        documents = [document async for document in cursor]
        items = [self.from_document(d) for d in documents[:size]]
        more = len(documents) > size
        return items, (str(documents[size - 1]["_id"]) if more and items else None)
