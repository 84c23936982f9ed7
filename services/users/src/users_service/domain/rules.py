"""Input rules for accounts: email, password, display name.

Each function returns the normalized value or raises ValueError with a description fit for a
field violation. The email syntax check is email-validator's (no DNS: deliverability is not
checked here, it would make sign-up depend on the network).
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 128  # bounds hashing cost; argon2 takes any length, attackers do too
MIN_DISTINCT_PASSWORD_CHARS = 4
MAX_DISPLAY_NAME_LENGTH = 100

# The most common passwords of at least the minimum length; a real deployment would load a
# larger breached-password list, the rule stays the same.
_COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "123456789a",
        "qwertyuiop",
        "1q2w3e4r5t",
        "password123",
        "password1234",
        "qwerty12345",
        "iloveyou123",
        "0987654321",
        "1qaz2wsx3edc",
        "abcdefghij",
        "letmein123",
        "welcome123",
        "passw0rd123",
        "administrator",
    }
)


def normalize_email(raw: str) -> str:
    """The address as stored and shown: Unicode-normalized, domain lower-cased."""
    if not raw or not raw.strip():
        raise ValueError("is required")
    if len(raw) > MAX_EMAIL_LENGTH:
        raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address: {exc}") from None
    normalized: str = result.normalized
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    return normalized


def email_key(normalized_email: str) -> str:
    """The uniqueness key: emails that differ only in case belong to the same account."""
    return normalized_email.casefold()


def check_password(password: str) -> None:
    if not password:
        raise ValueError("is required")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if len(set(password)) < MIN_DISTINCT_PASSWORD_CHARS:
        raise ValueError(f"must use at least {MIN_DISTINCT_PASSWORD_CHARS} different characters")
    if password.casefold() in _COMMON_PASSWORDS:
        raise ValueError("is too common")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise ValueError("must not contain control characters")


def normalize_display_name(raw: str) -> str:
    name = unicodedata.normalize("NFC", raw).strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise ValueError("must not contain control characters")
    return name
