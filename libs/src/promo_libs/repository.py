"""The repository port of the original spec.

`Repository` is what application services depend on; `promo_libs.mongo.repository` is the real
adapter; `promo_libs_testing.memory.InMemoryRepository` is the fake. Pure Python: no I/O
library is imported here.
"""

from __future__ import annotations

import abc
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
