"""argon2id password hashing (argon2-cffi), off the event loop.

Hashing is deliberately slow and memory-hard, so it runs in a small dedicated thread pool
(argon2-cffi releases the GIL): the loop keeps serving other RPCs, and the pool's size bounds the
memory that concurrent hashes can take.

The queue in front of the pool is bounded and deadline-aware (issue 13: a flood of log-ins with
1 ms deadlines was hashed all the same): beyond `max_queued` waiting hashes a call is refused at
once (RESOURCE_EXHAUSTED, retry later), and a hash whose caller's deadline has passed by the
time a thread takes it is skipped (DEADLINE_EXCEEDED) instead of burning a core for nobody.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from promo_libs import deadlines, errors
from users_service.domain.ports import PasswordHasher

T = TypeVar("T")


class Argon2Hasher(PasswordHasher):
    def __init__(
        self,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        max_concurrent: int = 4,
        max_queued: int = 64,
    ) -> None:
        self._max_queued = max_queued
        self._queued = 0
        self._argon2 = Argon2(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="argon2")
        # A real hash with the current parameters, verified against when the email is unknown.
        self._decoy = self._argon2.hash("decoy password that matches nothing")

    async def _run(self, work: Callable[[], T]) -> T:
        if self._queued >= self._max_queued:
            raise errors.ResourceExhausted(
                "too many passwords are being checked; retry shortly",
                "RATE_LIMITED",
                retry_after_seconds=1.0,
            )
        deadline = deadlines.current()  # read here: the pool's threads do not see it

        def job() -> T | None:
            if deadline is not None and time.monotonic() >= deadline:
                return None  # the caller has left: skip the hash
            return work()

        self._queued += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, job)
        finally:
            self._queued -= 1
        if result is None:
            raise errors.DeadlineExceeded("the deadline passed before the password was checked")
        return result

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._argon2.hash(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(lambda: self._verify(password_hash, password))

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
