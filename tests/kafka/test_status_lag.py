"""`kafka status --json`: consumer lag per group, for a single broker and for a cluster."""

from __future__ import annotations

import json
from pathlib import Path

from streamfolio.kafka.admin.report import GroupLag, PartitionLag, TopicReport
from streamfolio.kafka.local.cluster_status import ClusterStatus

STORE = GroupLag(
    "streamfolio-store",
    "stable",
    (
        PartitionLag("portfMetrics", 0, committed=7, end_offset=10, lag=3),
        PartitionLag("portfMetrics", 1, committed=None, end_offset=4, lag=None),
    ),
)


def test_a_group_reports_its_total_and_per_partition_lag() -> None:
    view = STORE.to_dict()
    assert (view["group_id"], view["state"], view["lag"]) == ("streamfolio-store", "stable", 3)
    assert view["partitions"][0] == {
        "topic": "portfMetrics",
        "partition": 0,
        "committed": 7,
        "end_offset": 10,
        "lag": 3,
    }
    assert view["partitions"][1]["lag"] is None  # nothing committed there yet


def test_both_status_documents_carry_the_groups_as_json() -> None:
    single = TopicReport("localhost:9092", (), (STORE,)).to_dict()
    cluster = ClusterStatus("localhost:9192", Path("/d"), True, (), groups=(STORE,)).to_dict()
    for document in (single, cluster):
        assert json.loads(json.dumps(document))["groups"] == [STORE.to_dict()]
