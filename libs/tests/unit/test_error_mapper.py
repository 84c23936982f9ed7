"""The one error mapper keeps every status within what gRPC trailers can carry."""

from google.rpc import code_pb2, error_details_pb2

from promo_libs.errors import FieldViolation, InvalidArgument
from promo_libs.grpc.errors import MAX_LISTED_VIOLATIONS, status_for

# Half of the 16 KiB hard limit of the trailers, which also carry grpc-status and the request id.
TRAILER_BUDGET = 8192


def _listed(status: object) -> list[error_details_pb2.BadRequest.FieldViolation]:
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)  # type: ignore[attr-defined]
    return list(bad_request.field_violations)


def test_a_thousand_violations_are_capped_and_counted() -> None:
    error = InvalidArgument(
        FieldViolation(f"promo_code.eligible_user_ids[{n}]", "is not a valid user id")
        for n in range(1000)
    )
    status = status_for(error)
    listed = _listed(status)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert len(listed) == MAX_LISTED_VIOLATIONS
    assert listed[0].field == "promo_code.eligible_user_ids[0]"
    assert f"{1000 - MAX_LISTED_VIOLATIONS} more violations not listed" in status.message
    # base64 of the details plus the message (percent-encoded at worst three bytes a character)
    assert status.details[0].ByteSize() * 4 // 3 + len(status.message.encode()) * 3 < TRAILER_BUDGET


def test_huge_fields_and_descriptions_are_clipped() -> None:
    error = InvalidArgument([FieldViolation("m[" + "k" * 100_000 + "]", "é" * 100_000)] * 3)
    status = status_for(error)
    listed = _listed(status)
    assert listed and all(len(v.field) <= 160 and len(v.description) <= 240 for v in listed)
    assert status.details[0].ByteSize() * 4 // 3 + len(status.message.encode()) * 3 < TRAILER_BUDGET


def test_a_few_violations_are_all_listed_with_the_usual_message() -> None:
    error = InvalidArgument([FieldViolation("a", "required"), FieldViolation("b", "too long")])
    status = status_for(error)
    assert [v.field for v in _listed(status)] == ["a", "b"]
    assert status.message == "a: required; b: too long"
