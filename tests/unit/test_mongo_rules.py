"""The checker of MongoDB's update refusals flags each form the stand-in applies silently."""

from devstack.mongo_rules import update_refusals


def test_conflicting_paths_immutable_id_and_non_numeric_inc_are_flagged() -> None:
    assert update_refusals({"$set": {"a": 1}, "$unset": {"a": ""}})
    assert update_refusals({"$set": {"a.b": 1, "a": 2}})
    assert update_refusals({"$unset": {"pending.r1": ""}, "$set": {"pending": {}}})
    assert update_refusals({"$set": {"_id": 2}})
    assert update_refusals({"$inc": {"uses": "1"}})
    assert update_refusals({"$inc": {"uses": True}})


def test_the_forms_the_code_sends_pass() -> None:
    assert update_refusals({"$unset": {"outbox.e1": ""}, "$set": {"outbox_pending": "t"}}) == []
    assert (
        update_refusals({"$unset": {"pending.r1": ""}, "$inc": {"uses": -1, "pending_count": -1}})
        == []
    )
    assert update_refusals({"$set": {"ab": 1, "a": 2, "a_b.c": 3}}) == []
    assert update_refusals({"_id": "a", "whole": "replacement"}) == []
