"""The PEP 723 reader: one ``# /// script`` block, valid TOML, requirements only, Python ranges."""

from __future__ import annotations

import pytest

from core.errors import WorkflowError
from core.models import DeclaredVariable
from dispatch.pep723 import ScriptMetadata, parse_script_metadata

GOOD = """\
# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "fastapi>=0.115",
#   "uvicorn[standard]>=0.30",
# ]
# [tool.env-checker]
# env_vars = ["PORT=8000"]
# ///

from fastapi import FastAPI

app = FastAPI()
"""


def test_reads_dependencies_and_requires_python() -> None:
    metadata = parse_script_metadata(GOOD, origin="good.py")

    assert metadata == ScriptMetadata(
        dependencies=("fastapi>=0.115", "uvicorn[standard]>=0.30"),
        requires_python=">=3.11",
        declared_env=(DeclaredVariable(name="PORT", default="8000"),),
    )


def test_a_block_without_fields_means_no_dependencies() -> None:
    metadata = parse_script_metadata("# /// script\n#\n# ///\nprint('hi')\n")

    assert metadata == ScriptMetadata(dependencies=(), requires_python=None)


def test_other_block_types_are_ignored() -> None:
    source = "# /// pyproject\n# x = 1\n# ///\n\n" + GOOD

    assert parse_script_metadata(source).dependencies[0] == "fastapi>=0.115"


def test_no_block_is_an_error() -> None:
    with pytest.raises(WorkflowError, match=r"plain\.py has no PEP 723 `# /// script` block"):
        parse_script_metadata("from fastapi import FastAPI\napp = FastAPI()\n", origin="plain.py")


def test_two_blocks_are_an_error() -> None:
    with pytest.raises(WorkflowError, match="2 PEP 723 `# /// script` blocks"):
        parse_script_metadata(GOOD + "\n" + GOOD, origin="twice.py")


def test_bad_toml_is_an_error() -> None:
    source = '# /// script\n# dependencies = ["fastapi"\n# ///\n'

    with pytest.raises(WorkflowError, match="not valid TOML"):
        parse_script_metadata(source, origin="broken.py")


def test_dependencies_must_be_a_list_of_strings() -> None:
    with pytest.raises(WorkflowError, match="list of strings"):
        parse_script_metadata('# /// script\n# dependencies = "fastapi"\n# ///\n')


@pytest.mark.parametrize(
    "dependency", ["-r /etc/passwd", "--index-url=https://evil.example", "fastapi\\n-r x", " "]
)
def test_requirements_file_options_are_refused(dependency: str) -> None:
    source = f'# /// script\n# dependencies = ["{dependency}"]\n# ///\n'

    with pytest.raises(WorkflowError, match="is not a requirement"):
        parse_script_metadata(source)


def test_an_unreadable_requires_python_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="requires-python"):
        parse_script_metadata('# /// script\n# requires-python = "3.11 or newer"\n# ///\n')


@pytest.mark.parametrize(
    ("spec", "version", "allowed"),
    [
        (None, (3, 11, 7), True),
        (">=3.11", (3, 11, 7), True),
        (">=3.12", (3, 11, 7), False),
        ("==3.11.*", (3, 11, 7), True),
        ("==3.12.*", (3, 11, 7), False),
        ("!=3.11.*", (3, 11, 7), False),
        (">=3.10,<3.12", (3, 11, 7), True),
        (">=3.10, <3.11", (3, 11, 7), False),
        ("~=3.11", (3, 12, 0), True),
        ("~=3.11.2", (3, 12, 0), False),
        ("~=3.11.2", (3, 11, 7), True),
        ("==3.11", (3, 11, 7), False),
        ("==3.11.7", (3, 11, 7), True),
        (">3.11", (3, 11, 7), True),
        ("<=3.11", (3, 11, 7), False),
        ("===3.11.7", (3, 11, 7), True),
    ],
)
def test_allows_python(spec: str | None, version: tuple[int, int, int], allowed: bool) -> None:
    metadata = ScriptMetadata(dependencies=(), requires_python=spec)

    assert metadata.allows_python(version) is allowed


def test_tool_switchboard_sets_the_workflow_s_own_limits() -> None:
    table = 'memory = "512MiB"\n# network = "none"\n# timeout = 30'
    source = HEADER_WITH_LIMITS.format(table=table)

    metadata = parse_script_metadata(source)

    assert metadata.limits == {"memory": 512 * 1024**2, "network": "none", "timeout": 30.0}


def test_tool_switchboard_names_a_bad_limit() -> None:
    source = HEADER_WITH_LIMITS.format(table='network = "host"')

    with pytest.raises(WorkflowError, match=r"`\[tool.switchboard\]` network: Input should be"):
        parse_script_metadata(source)


def test_tool_switchboard_opts_into_warm_reuse_and_nothing_else_does() -> None:
    warm = parse_script_metadata(HEADER_WITH_LIMITS.format(table="warm = true"))
    plain = parse_script_metadata(HEADER_WITH_LIMITS.format(table='network = "none"'))

    assert warm.limits == {"warm": True}
    assert "warm" not in plain.limits
    with pytest.raises(WorkflowError, match=r"`\[tool.switchboard\]` warm: Input should be"):
        parse_script_metadata(HEADER_WITH_LIMITS.format(table='warm = "sometimes"'))


HEADER_WITH_LIMITS = """# /// script
# dependencies = ["fastapi"]
# [tool.switchboard]
# {table}
# ///
"""
