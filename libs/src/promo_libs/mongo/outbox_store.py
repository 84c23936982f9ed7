"""The outbox relay's store on MongoDB: one collection whose documents carry outbox fields.

Round trips per relay page, whatever its size: one `find` for the page (projected to the
outbox), and for the clearing one bulk `update` (each document's published entries unset and
its flag set to the page's token), one `find` of what is left, and one `update_many` that drops
the flag of the documents left empty, conditional on the token (plus one more, rarely, that
flags back those a write reached meanwhile). They were three per document.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from promo_libs.mongo.connection import Document
from promo_libs.outbox import stored_entries
from promo_libs.relay import PendingDocument

# Not only `true`: a relay that died mid-pass leaves its token (a string) there.
_FLAGGED: Document = {"outbox_pending": {"$ne": False}}


class MongoOutboxStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    @property
    def name(self) -> str:
        return self._collection.name

    async def pending(self, after: Any, limit: int) -> list[PendingDocument]:
        query = dict(_FLAGGED)
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._collection.find(query, {"outbox": 1}).sort("_id", 1).limit(limit)
        return [
            PendingDocument(document["_id"], stored_entries(document)) async for document in cursor
        ]

    async def clear(self, published: Sequence[PendingDocument]) -> int:
        if not published:
            return 0
        # The flag becomes this page's token: a write from now on sets it back to true, which
        # makes the conditional updates below miss, so its entry stays flagged.
        token = uuid.uuid4().hex
        await self._collection.bulk_write(
            [
                UpdateOne(
                    {"_id": document.document_id},
                    {
                        "$unset": {f"outbox.{entry.event_id}": "" for entry in document.entries},
                        "$set": {"outbox_pending": token},
                    }
                    if document.entries
                    else {"$set": {"outbox_pending": token}},
                )
                for document in published
            ],
            ordered=False,
        )
        ids = [document.document_id for document in published]
        cursor = self._collection.find({"_id": {"$in": ids}}, {"outbox": 1})
        left = {document["_id"] async for document in cursor if document.get("outbox")}
        empty = [i for i in ids if i not in left]
        cleared = 0
        if empty:
            result = await self._collection.update_many(
                {"_id": {"$in": empty}, "outbox_pending": token},
                {"$set": {"outbox_pending": False}},
            )
            cleared = result.modified_count
        if left:
            await self._collection.update_many(
                {"_id": {"$in": list(left)}, "outbox_pending": token},
                {"$set": {"outbox_pending": True}},
            )
        return cleared

    async def count_pending(self) -> int:
        return await self._collection.count_documents(_FLAGGED)
