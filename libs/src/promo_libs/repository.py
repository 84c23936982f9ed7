"""The repository port of the original spec, and an in-memory fake for unit tests.

`Repository` is what application services depend on; `promo_libs.mongo.repository` is the real
adapter; `InMemoryRepository` is the fake. Pure Python: no I/O library is imported here.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar


class Entity(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=Entity)


class Repository(abc.ABC, Generic[T]):
    @abc.abstractmethod
    async def find_by_id(self, entity_id: str) -> T | None: ...

    @abc.abstractmethod
    async def find_all(self, filter: Mapping[str, Any] | None = None) -> list[T]:
        """Entities whose attributes equal every value in `filter` (all when empty)."""

    @abc.abstractmethod
    async def create(self, entity: T) -> T: ...

    @abc.abstractmethod
    async def update(self, entity_id: str, changes: Mapping[str, Any]) -> T:
        """Sets the given attributes; raises KeyError when the entity does not exist."""

    @abc.abstractmethod
    async def delete(self, entity_id: str) -> None: ...

    @abc.abstractmethod
    async def exists(self, entity_id: str) -> bool: ...


class InMemoryRepository(Repository[T]):
    """A dict-backed fake with the same semantics, for unit tests of application services."""

    def __init__(self) -> None:
        self.items: dict[str, T] = {}

    async def find_by_id(self, entity_id: str) -> T | None:
        item = self.items.get(entity_id)
        return copy.deepcopy(item) if item is not None else None

    async def find_all(self, filter: Mapping[str, Any] | None = None) -> list[T]:
        wanted = dict(filter or {})
        return [
            copy.deepcopy(item)
            for _, item in sorted(self.items.items())
            if all(getattr(item, key) == value for key, value in wanted.items())
        ]

    async def create(self, entity: T) -> T:
        if entity.id in self.items:
            raise KeyError(f"duplicate id {entity.id}")
        self.items[entity.id] = copy.deepcopy(entity)
        return entity

    async def update(self, entity_id: str, changes: Mapping[str, Any]) -> T:
        item = self.items[entity_id]
        for key, value in changes.items():
            setattr(item, key, value)
        return copy.deepcopy(item)

    async def delete(self, entity_id: str) -> None:
        self.items.pop(entity_id, None)

    async def exists(self, entity_id: str) -> bool:
        return entity_id in self.items
