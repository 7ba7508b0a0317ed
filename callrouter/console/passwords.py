"""Passwords: argon2id (argon2-cffi's RFC 9106 defaults), hashed and verified in a worker thread.

Each hash takes tens of milliseconds and 64 MiB, so it never runs on the event loop and at most
`concurrency` run at once. An unknown username is verified against a dummy hash, so a login takes as
long whether the user exists or not.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 1024


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password has at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if password.strip() != password:
        return "a password does not start or end with spaces"
    return None


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, concurrency: int = 2) -> None:
        self._hasher = hasher or PasswordHasher()
        self._gate = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._gate:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def prepare(self) -> None:
        """Make the dummy hash before the first login (else the first unknown user would take longer)."""
        if self._dummy is None:
            self._dummy = await self.hash("callrouter: no such user")

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with None (no such user) the work is done all the same."""
        await self.prepare()
        target = stored if stored is not None else self._dummy
        assert target is not None
        async with self._gate:
            ok = await asyncio.to_thread(self._check, target, password)
        return ok and stored is not None

    def _check(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """After a successful login: the stored hash was made with weaker parameters than today's."""
        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except InvalidHashError:
            return True
