"""argon2id password hashing (argon2-cffi), off the event loop.

Hashing is deliberately slow and memory-hard, so it runs in a small dedicated thread pool
(argon2-cffi releases the GIL): the loop keeps serving other RPCs, and the pool's size bounds the
memory that concurrent hashes can take.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from users_service.domain.ports import PasswordHasher


class Argon2Hasher(PasswordHasher):
    def __init__(
        self, time_cost: int, memory_cost_kib: int, parallelism: int, max_concurrent: int = 4
    ) -> None:
        self._argon2 = Argon2(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="argon2")
        # A real hash with the current parameters, verified against when the email is unknown.
        self._decoy = self._argon2.hash("decoy password that matches nothing")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._argon2.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    async def burn(self, password: str) -> None:
        await self.verify(self._decoy, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
