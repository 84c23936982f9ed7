"""What callers ask the user service to do, in the imperative. Plain immutable data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CreateUser:
    email: str
    password: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class UpdateUser:
    """Only the fields named in `fields` are changed (the request's update_mask)."""

    user_id: str
    fields: frozenset[str]
    email: str = ""
    display_name: str = ""
    password: str = ""
    active: bool = True
    # Asked of a user changing their own password (not of staff).
    current_password: str = ""


@dataclass(frozen=True, slots=True)
class DeleteUser:
    user_id: str


@dataclass(frozen=True, slots=True)
class AuthenticateUser:
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class ListUsers:
    page_size: int
    page_token: str
    active: bool | None = None
