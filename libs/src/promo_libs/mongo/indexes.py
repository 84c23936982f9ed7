"""Index changes that mean the same on MongoDB and on the local stand-in.

MongoDB's `dropIndexes` with a string drops the index of that *name* and answers IndexNotFound
(code 27) when none has it; PyMongo's `drop_index(keys)` does not send the keys, it sends the name
it would have generated for them (`field_1`), so an index created with a custom name cannot be
dropped by its key list. The stand-in (nx-27017 0.8.1) names every index itself
(`idx_<collection>_<fields>`) and silently accepts a drop of any name, so neither mistake shows
locally. The one form right on both: find the index by its key specification in listIndexes, and
drop it by the name the server reports for it (on MongoDB, the name it was created with).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from promo_libs.mongo.connection import Document

IndexKeys = Sequence[tuple[str, int | str]]

INDEX_NOT_FOUND = 27


async def index_names_by_keys(collection: AsyncCollection[Document], keys: IndexKeys) -> list[str]:
    """The names of the indexes whose key specification is exactly `keys` (order counts)."""
    wanted = key_spec(keys)
    names: list[str] = []
    async for index in await collection.list_indexes():
        if key_spec(index["key"].items()) == wanted:
            names.append(str(index["name"]))
    return names


def key_spec(keys: Iterable[tuple[str, Any]]) -> list[tuple[str, int | str]]:
    """A key specification in one comparable form: MongoDB may list a direction as 1.0."""
    return [
        (str(field), int(direction) if isinstance(direction, int | float) else str(direction))
        for field, direction in keys
    ]


async def drop_index_by_keys(collection: AsyncCollection[Document], keys: IndexKeys) -> list[str]:
    """Drops every index whose key specification is `keys`, by its reported name; returns the names.

    Idempotent, so a migration that stopped midway (or a database where the index was already
    dropped by hand, or never existed) is finished by running it again: no index with those keys
    means nothing to drop and nothing is sent. An IndexNotFound answer means another process
    dropped it between our listing and our drop, which is the outcome we wanted.
    """
    names = await index_names_by_keys(collection, keys)
    for name in names:
        try:
            await collection.drop_index(name)
        except OperationFailure as exc:
            if exc.code != INDEX_NOT_FOUND:
                raise
    return names
