"""Account input rules: normalization and every refusal."""

import pytest

from users_service.domain import rules


def test_email_is_normalized_and_keyed_case_insensitively() -> None:
    email = rules.normalize_email("  Alice@Example.COM ")
    assert email == "Alice@example.com"
    assert rules.email_key(email) == rules.email_key(rules.normalize_email("ALICE@example.com"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("no-at-sign", "not a valid email"),
        ("a@", "not a valid email"),
        ("a@b", "not a valid email"),
        ("a" * 250 + "@example.com", "at most 254"),
        ("alice@exa mple.com", "not a valid email"),
    ],
)
def test_bad_emails_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules.normalize_email(raw)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "is required"),
        ("short", "at least 10"),
        ("x" * 129, "at most 128"),
        ("aaaaaaaaaaaa", "different characters"),
        ("Password123", "too common"),
        ("good pass\x00word", "control characters"),
    ],
)
def test_weak_or_huge_passwords_are_refused(password: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules.check_password(password)


def test_a_reasonable_password_passes() -> None:
    rules.check_password("correct horse battery")


def test_display_name_is_trimmed_and_bounded() -> None:
    assert rules.normalize_display_name("  Alice  ") == "Alice"
    with pytest.raises(ValueError, match="at most 100"):
        rules.normalize_display_name("x" * 101)
    with pytest.raises(ValueError, match="control"):
        rules.normalize_display_name("bad\nname")
