"""The ACL table of a secured local cluster, turned into bindings: each component may do what
it needs and nothing else. No broker."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streamfolio.config import COMPONENTS, Settings, settings_from_mapping
from streamfolio.kafka.local.access import ACCESS, acl_bindings, grants
from streamfolio.store.service import DEFAULT_GROUP

PORTFOLIOS = [{"id": "p", "tickers": ["ATW", "BCP"]}]


def _settings(tmp_path: Path, **security: Any) -> Settings:
    principals = {
        c: {"username": f"sf-{c}", "password_file": str(tmp_path / c)} for c in COMPONENTS
    }
    return settings_from_mapping(
        {
            "kafka": {
                "client_id": "sf",
                "security": {"protocol": "SASL_SSL", "principals": principals, **security},
            },
            "rebalancer": {"group_id": "reb"},
            "topics": {"prices": "ticks", "weights": "w"},
            "portfolios": PORTFOLIOS,
        }
    )


def _by_principal(settings: Settings) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for grant in grants(settings):
        found[grant.principal].add(grant.describe())
    return found


def _writes(lines: set[str]) -> set[str]:
    return {line.split()[1] for line in lines if line.startswith("TOPIC") and "WRITE" in line}


def test_every_component_but_admin_has_an_entry() -> None:
    assert set(ACCESS) == set(COMPONENTS) - {"admin"}


def test_who_writes_which_topic(tmp_path: Path) -> None:
    acls = _by_principal(_settings(tmp_path))
    topics = _settings(tmp_path).topics
    assert _writes(acls["User:sf-feed"]) == {"ticks", topics.dead_letter}
    assert _writes(acls["User:sf-job"]) == {
        topics.updated_stats,
        topics.metrics,
        topics.dead_letter,
    }
    assert _writes(acls["User:sf-rebalancer"]) == {"w", topics.rebalance_events, topics.dead_letter}
    # The store dead-letters what it cannot store, and writes nothing else.
    assert _writes(acls["User:sf-store"]) == {topics.dead_letter}
    assert _writes(acls["User:sf-dashboard"]) == set()
    assert "User:sf-admin" not in acls  # a super user


def test_reads_groups_and_transactional_ids(tmp_path: Path) -> None:
    acls = _by_principal(_settings(tmp_path))
    assert {"TOPIC ticks READ", "TOPIC w READ", "TOPIC portfStats READ"} <= acls["User:sf-job"]
    assert "GROUP sf-job READ" in acls["User:sf-job"]
    assert "TRANSACTIONAL_ID sf-job-* WRITE" in acls["User:sf-job"]
    assert {"GROUP reb READ", "GROUP reb.memory READ", "TRANSACTIONAL_ID reb.* WRITE"} <= acls[
        "User:sf-rebalancer"
    ]
    assert {"TOPIC portfMetrics READ", "TOPIC portfUpdatedStats READ"} <= acls["User:sf-rebalancer"]
    assert f"GROUP {DEFAULT_GROUP} READ" in acls["User:sf-store"]
    assert "TOPIC ticks READ" not in acls["User:sf-store"]
    dashboard = acls["User:sf-dashboard"]
    assert "GROUP streamfolio-dashboard-* READ" in dashboard
    assert "TOPIC ticks DESCRIBE" in dashboard and "TOPIC ticks READ" not in dashboard
    assert not any("TRANSACTIONAL_ID" in line for line in dashboard | acls["User:sf-feed"])


def test_every_read_or_write_comes_with_describe(tmp_path: Path) -> None:
    for lines in _by_principal(_settings(tmp_path)).values():
        for line in lines:
            kind, name, operation = line.split()
            if operation in ("READ", "WRITE"):
                assert f"{kind} {name} DESCRIBE" in lines, line


def test_bindings_allow_from_any_host(tmp_path: Path) -> None:
    bindings = acl_bindings(_settings(tmp_path))
    assert len(bindings) == len(set(bindings)) == len(grants(_settings(tmp_path)))
    prefixed = [b for b in bindings if b.resource_pattern_type == ResourcePatternType.PREFIXED]
    assert {b.name for b in prefixed} == {
        "sf-job-",
        "reb.",
        "streamfolio-dashboard-",
        "streamfolio-demo-view-",
    }
    for binding in bindings:
        assert binding.host == "*"
        assert binding.permission_type == AclPermissionType.ALLOW
        assert binding.restype in (
            ResourceType.TOPIC,
            ResourceType.GROUP,
            ResourceType.TRANSACTIONAL_ID,
        )
        assert binding.operation in (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE)


def test_a_shared_default_principal_gets_the_union(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {
            "kafka": {
                "security": {
                    "protocol": "SASL_SSL",
                    "username": "app",
                    "password": "x",
                    "principals": {"admin": {"username": "root", "password": "y"}},
                }
            },
            "portfolios": PORTFOLIOS,
        }
    )
    acls = _by_principal(settings)
    assert set(acls) == {"User:app"}
    assert "TOPIC intraday-stock-prices WRITE" in acls["User:app"]  # the feed's
    assert "GROUP streamfolio-store READ" in acls["User:app"]  # the store's


def test_no_acls_without_sasl(tmp_path: Path) -> None:
    settings = settings_from_mapping({"portfolios": PORTFOLIOS})
    assert grants(settings) == [] and acl_bindings(settings) == []
