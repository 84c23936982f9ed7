from devstack.query_plans import reads_whole_collection, selections
from promo_libs.mongo.monitoring import SentCommand


def test_the_stand_ins_plan_scans_only_on_a_scan_of_the_collection_itself() -> None:
    scan = [{"detail": "SCAN usages"}, {"detail": "SCAN json_each VIRTUAL TABLE INDEX 1:"}]
    search = [
        {"detail": "SEARCH usages USING INDEX idx_usages_id (_id=?)"},
        {"detail": "CORRELATED SCALAR SUBQUERY 1"},
        {"detail": "SCAN json_each VIRTUAL TABLE INDEX 1:"},
    ]
    assert reads_whole_collection(scan, "usages")
    assert not reads_whole_collection(search, "usages")


def test_mongodbs_plan_scans_when_any_stage_is_a_collscan() -> None:
    nested = {
        "stage": "LIMIT",
        "inputStage": {"stage": "FETCH", "inputStage": {"stage": "COLLSCAN"}},
    }
    indexed = {"stage": "FETCH", "inputStage": {"stage": "IXSCAN", "indexName": "by_user"}}
    union = {"stage": "OR", "inputStages": [indexed, {"stage": "COLLSCAN"}]}
    assert reads_whole_collection(nested, "usages")
    assert not reads_whole_collection(indexed, "usages")
    assert reads_whole_collection(union, "usages")
    assert not reads_whole_collection({"stage": "IDHACK"}, "usages")


def test_each_command_selects_by_its_own_filter_and_an_insert_selects_nothing() -> None:
    update = SentCommand("db", "update", {"update": "c", "updates": [{"q": {"a": 1}, "u": {}}]})
    delete = SentCommand("db", "delete", {"delete": "c", "deletes": [{"q": {"b": 2}}]})
    insert = SentCommand("db", "insert", {"insert": "c", "documents": [{"_id": 1}]})
    assert [s.filter for s in selections(update)] == [{"a": 1}]
    assert [s.filter for s in selections(delete)] == [{"b": 2}]
    assert selections(insert) == []
