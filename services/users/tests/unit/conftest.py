"""Unit-test fixtures of the user service: fakes for every port, no servers."""

import pytest

from users_service.domain.ports import PasswordHasher


class FakeHasher(PasswordHasher):
    def __init__(self, scheme: str = "v1") -> None:
        self.scheme = scheme
        self.burned = 0

    async def hash(self, password: str) -> str:
        return f"{self.scheme}${password[::-1]}"

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash.split("$", 1)[1] == password[::-1]

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"{self.scheme}$")

    async def burn(self, password: str) -> None:
        self.burned += 1


@pytest.fixture
def hasher() -> FakeHasher:
    return FakeHasher()
