"""``grants`` in a workflow's header: validated at registration, one canonical form."""

from __future__ import annotations

import pytest

from core.errors import WorkflowError
from core.models import CALLER_GRANTS_HEADER, CallerRights, Grant
from dispatch.pep723 import parse_script_metadata


def header(table: str) -> str:
    return f"# /// script\n# dependencies = []\n# [tool.switchboard]\n# {table}\n# ///\n"


def test_grants_are_checked_and_kept_once_each_in_order() -> None:
    metadata = parse_script_metadata(header('grants = ["outbound", "schedules", "outbound"]'))
    assert metadata.limits == {"grants": ["outbound", "schedules"]}
    with pytest.raises(WorkflowError, match=r"grants\.0"):
        parse_script_metadata(header('grants = ["keys"]'))


def test_rights_travel_through_a_run_s_context() -> None:
    restricted = CallerRights(frozenset({Grant.FILES}))
    assert restricted.context() == {CALLER_GRANTS_HEADER: "files"}
    back = CallerRights.of_run({"X-Request-Id": "req_1", **restricted.context()})
    assert back == restricted and not back.allows(Grant.OUTBOUND)
    assert CallerRights.of_run({}).allows(Grant.OUTBOUND)  # a full owner key started it
    assert CallerRights(frozenset()).context() == {CALLER_GRANTS_HEADER: ""}
    assert not CallerRights.of_run(CallerRights(frozenset()).context()).allows(Grant.FILES)
    unknown = CallerRights.of_run({CALLER_GRANTS_HEADER: "files,teleport"})
    assert unknown == CallerRights(frozenset({Grant.FILES}))
