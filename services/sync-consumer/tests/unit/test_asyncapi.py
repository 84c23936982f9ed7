"""The AsyncAPI document in the repository is what `python -m sync_consumer.asyncapi` writes."""

from sync_consumer import asyncapi
from sync_consumer.adapters.redis_streams import dead_letter_stream


def test_committed_asyncapi_document_is_up_to_date() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.document(), (
        "services/sync-consumer/asyncapi.yaml is stale: run python -m sync_consumer.asyncapi"
    )


def test_every_stream_and_its_dead_letters_are_described() -> None:
    text = asyncapi.document()
    for stream in asyncapi.PRODUCERS:
        assert f"channel: {stream}\n" in text
        assert f"channel: '{dead_letter_stream(stream)}'\n" in text
