"""``[tool.env-checker] env_vars``: the variables a workflow declares, read at registration."""

from __future__ import annotations

import pytest

from core.errors import SecretNotSet, SecretsUnreadable, WorkflowError
from core.models import DeclaredVariable
from core.secret_values import InMemorySecretValues
from dispatch.pep723 import parse_script_metadata
from dispatch.run_environment import resolve_declared_env, unset_declarations


def header(*entries: str) -> str:
    listed = "".join(f"#   {entry},\n" for entry in entries)
    return (
        "# /// script\n"
        '# dependencies = ["fastapi"]\n'
        "# [tool.env-checker]\n"
        f"# env_vars = [\n{listed}# ]\n"
        "# ///\n"
    )


def test_a_seed_header_declares_defaults_runtime_variables_and_secrets() -> None:
    source = header('"PORT=8000"', '"LOGLEVEL=INFO"', '"CODEWORDS_API_KEY"', '"SLACK_BOT_TOKEN"')

    declared = parse_script_metadata(source).declared_env

    assert declared == (
        DeclaredVariable(name="PORT", default="8000"),
        DeclaredVariable(name="LOGLEVEL", default="INFO"),
        DeclaredVariable(name="CODEWORDS_API_KEY"),
        DeclaredVariable(name="SLACK_BOT_TOKEN"),
    )
    assert [v.from_runtime for v in declared] == [True, True, True, False]


def test_a_default_keeps_everything_after_the_first_equals_sign() -> None:
    declared = parse_script_metadata(header('"QUERY=a=b"', '"EMPTY="')).declared_env

    assert declared == (
        DeclaredVariable(name="QUERY", default="a=b"),
        DeclaredVariable(name="EMPTY", default=""),
    )


def test_no_env_checker_table_declares_nothing() -> None:
    source = '# /// script\n# dependencies = ["fastapi"]\n# ///\n'
    assert parse_script_metadata(source).declared_env == ()


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (['"1TOKEN"'], "entry '1TOKEN' is not NAME or NAME=default"),
        (['"MY-TOKEN"'], "entry 'MY-TOKEN' is not NAME or NAME=default"),
        (['"=value"'], "entry '=value' is not NAME or NAME=default"),
        (['"SWITCHBOARD_WARM=1"'], "names starting with SWITCHBOARD_ are Switchboard's own"),
        (['"TOKEN"', '"TOKEN=x"'], "declares TOKEN twice"),
        (["3"], "`[tool.env-checker] env_vars` must be a list of strings"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(entries: list[str], problem: str) -> None:
    with pytest.raises(WorkflowError) as refused:
        parse_script_metadata(header(*entries), origin="monitor.py")

    assert refused.value.detail.startswith("monitor.py: ")
    assert problem in refused.value.detail


# The competitor monitor of the seeds, verbatim (its header's indentation included).
MONITOR_SEED = """# /// script
# requires-python = "==3.11.*"
# dependencies = [
# "fastapi==0.115.12",
# "uvicorn[standard]==0.34.2",
# "pydantic==2.11.3",
# "structlog==25.2.0",
# "codewords-client==0.2.4",
# "slack-sdk==3.31.0"
# ]
# [tool.env-checker]
# env_vars = [
# "PORT=8000",
# "LOGLEVEL=INFO",
# "CODEWORDS_API_KEY",
# "CODEWORDS_RUNTIME_URI",
# "SLACK_BOT_TOKEN",
# "PIPEDREAM_SLACK_ACCESS"
# ]
# ///
import asyncio
"""


def test_the_seed_monitor_must_be_given_its_two_tokens() -> None:
    declared = parse_script_metadata(MONITOR_SEED).declared_env

    assert [v.name for v in declared if not v.from_runtime and v.default is None] == [
        "SLACK_BOT_TOKEN",
        "PIPEDREAM_SLACK_ACCESS",
    ]


DECLARED = (
    DeclaredVariable(name="PORT", default="8000"),
    DeclaredVariable(name="CODEWORDS_API_KEY"),
    DeclaredVariable(name="SLACK_BOT_TOKEN"),
    DeclaredVariable(name="CHANNEL", default="#general"),
)


async def test_a_secret_wins_over_a_default_and_the_runtime_s_variables_are_left_out() -> None:
    values = InMemorySecretValues()
    values.set("team-a", "SLACK_BOT_TOKEN", "xoxb-owner")
    values.set("team-a", "SLACK_BOT_TOKEN", "xoxb-monitor", workflow_id="monitor")
    values.set("team-a", "CHANNEL", "#alerts")
    values.set("team-a", "PORT", "1")

    resolved = await resolve_declared_env(
        values, owner_id="team-a", service_id="monitor", declared=DECLARED
    )

    assert resolved.env == {"SLACK_BOT_TOKEN": "xoxb-monitor", "CHANNEL": "#alerts"}
    assert sorted(resolved.secrets) == ["#alerts", "xoxb-monitor"]


async def test_a_declared_name_without_value_or_default_is_named_with_its_owner() -> None:
    values = InMemorySecretValues()
    values.set("team-b", "SLACK_BOT_TOKEN", "xoxb-other-owner")

    with pytest.raises(SecretNotSet) as failed:
        await resolve_declared_env(
            values, owner_id="team-a", service_id="monitor", declared=DECLARED
        )

    assert str(failed.value) == (
        "secret SLACK_BOT_TOKEN is not set for owner team-a (declared by workflow monitor)"
    )
    assert await unset_declarations(
        values, owner_id="team-a", service_id="monitor", declared=DECLARED
    ) == ["SLACK_BOT_TOKEN"]


async def test_unreadable_secrets_are_raised_not_guessed() -> None:
    values = InMemorySecretValues()
    values.unreadable = True

    with pytest.raises(SecretsUnreadable):
        await resolve_declared_env(
            values, owner_id="team-a", service_id="monitor", declared=DECLARED
        )
