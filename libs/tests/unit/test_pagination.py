"""Page sizes and page tokens."""

import pytest

from promo_libs import errors
from promo_libs.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_request


def test_sizes_default_and_clamp() -> None:
    assert page_request(0, "", {}).size == DEFAULT_PAGE_SIZE
    assert page_request(5, "", {}).size == 5
    assert page_request(10**9, "", {}).size == MAX_PAGE_SIZE
    with pytest.raises(errors.InvalidArgument):
        page_request(-1, "", {})


def test_a_token_round_trips_for_the_same_filter_only() -> None:
    token = page_request(2, "", {"active": True}).next_token("abc")
    assert page_request(2, token, {"active": True}).after_id == "abc"
    with pytest.raises(errors.InvalidArgument) as caught:
        page_request(2, token, {"active": False})
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("token", ["!!", "bm90IGpzb24", "eyJhIjoxfQ", "x" * 600, "W10"])
def test_garbage_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        page_request(2, token, {})
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
