"""No URI reaches a log with its password (DESIGN.md, Contracts)."""

import pytest

from promo_libs.config import redacted_uri

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://localhost:27017", "mongodb://localhost:27017"),
        ("mongodb://promo:pw@db-0:27017,db-1/promo?replicaSet=rs0",
         "mongodb://promo:***@db-0:27017,db-1/promo?replicaSet=rs0"),
        ("mongodb://promo@db:27017/", "mongodb://promo:***@db:27017/"),
        ("mongodb+srv://u:p%40ss@cluster.example/?tls=true&tlsCertificateKeyFilePassword=x",
         "mongodb+srv://u:***@cluster.example/?tls=true&tlsCertificateKeyFilePassword=***"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("not a uri with a secret", "***"),
    ],
)  # fmt: skip
def test_the_password_is_never_shown(uri: str, shown: str) -> None:
    assert redacted_uri(uri) == shown
