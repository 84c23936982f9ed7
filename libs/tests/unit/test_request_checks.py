"""The one check of every request's Timestamps: the documented range, with the field path."""

from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import analytics_pb2, common_pb2, orders_pb2
from promo_libs.grpc.requests import MAX_SECONDS, MIN_SECONDS, timestamp_violations


def _paths(message: object) -> list[str]:
    return [v.field for v in timestamp_violations(message)]  # type: ignore[arg-type]


def test_the_edges_of_the_range_pass_and_one_beyond_is_named() -> None:
    ok = common_pb2.TimeRange(
        start_time=Timestamp(seconds=MIN_SECONDS),
        end_time=Timestamp(seconds=MAX_SECONDS, nanos=999_999_999),
    )
    assert _paths(orders_pb2.ListOrdersRequest(create_time_range=ok)) == []
    bad = common_pb2.TimeRange(
        start_time=Timestamp(seconds=MIN_SECONDS - 1), end_time=Timestamp(seconds=2**40)
    )
    assert _paths(orders_pb2.ListOrdersRequest(create_time_range=bad)) == [
        "create_time_range.start_time",
        "create_time_range.end_time",
    ]


def test_nanos_outside_one_second_are_named() -> None:
    for nanos in (-1, 1_000_000_000):
        request = analytics_pb2.GetOverviewRequest(
            time_range=common_pb2.TimeRange(start_time=Timestamp(seconds=0, nanos=nanos))
        )
        assert _paths(request) == ["time_range.start_time"]


def test_repeated_messages_are_walked_with_their_index() -> None:
    response = analytics_pb2.GetOrdersTimeSeriesResponse(
        points=[
            analytics_pb2.TimeSeriesPoint(bucket_start=Timestamp(seconds=0)),
            analytics_pb2.TimeSeriesPoint(bucket_start=Timestamp(seconds=-(2**62))),
        ]
    )
    assert _paths(response) == ["points[1].bucket_start"]


def test_unset_timestamps_are_not_checked() -> None:
    assert _paths(orders_pb2.ListOrdersRequest()) == []
