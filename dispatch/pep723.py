"""Read a workflow's PEP 723 inline script metadata: its dependencies and its Python range.

A workflow file is a single script; the ``# /// script`` block is the only place its environment
is described, so registration fails loudly when the block is missing, repeated or not valid TOML
rather than guessing an environment. ``requires-python`` is checked here too (a small PEP 440
subset, release versions only) because the runtime has one interpreter and a workflow that cannot
run on it must be refused at registration, not at its first run. ``[tool.env-checker] env_vars``
(the seeds' format) declares the variables a run gets: ``"NAME"`` or ``"NAME=default"``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import WorkflowError
from core.models import DeclaredVariable, WorkflowLimits
from core.secret_records import MAX_NAME_LENGTH, RESERVED_PREFIX, VARIABLE_NAME

# The reference implementation's regular expression (PEP 723, "Reference Implementation").
_BLOCK_RE = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")

# A requirement starts with its project name; anything else (``-r file``, ``--index-url``…) would be
# read by uv as a requirements-file option, and a line break would smuggle in a second line.
_REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][^\r\n]*$")
_CLAUSE_RE = re.compile(r"^\s*(?P<op>~=|===|==|!=|<=|>=|<|>)\s*(?P<version>[^\s,]+)\s*$")
_RELEASE_RE = re.compile(r"^v?(?P<release>\d+(?:\.\d+)*)(?P<wildcard>\.\*)?$")
# An environment variable name as POSIX shells accept it; Switchboard's own prefix is reserved.

PythonVersion = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class ScriptMetadata:
    """What a workflow's ``# /// script`` block asks for."""

    dependencies: tuple[str, ...]
    requires_python: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    """The ``[tool.switchboard]`` table, validated: limits this workflow sets for itself."""
    declared_env: tuple[DeclaredVariable, ...] = ()
    """``[tool.env-checker] env_vars``: the variables a run of this workflow gets."""

    def allows_python(self, version: PythonVersion) -> bool:
        """Whether an interpreter of ``version`` satisfies ``requires-python`` (None: any)."""
        if self.requires_python is None:
            return True
        return all(
            _clause_allows(clause, version) for clause in _split_specifier(self.requires_python)
        )


def read_script_metadata(path: Path) -> ScriptMetadata:
    """Parse the metadata block of the workflow file at ``path``."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc}") from exc
    return parse_script_metadata(source, origin=str(path))


def parse_script_metadata(source: str, *, origin: str = "the workflow") -> ScriptMetadata:
    """Parse the single ``# /// script`` block of ``source``; ``origin`` names it in errors."""
    blocks = [m for m in _BLOCK_RE.finditer(source) if m.group("type") == "script"]
    if not blocks:
        raise WorkflowError(f"{origin} has no PEP 723 `# /// script` block")
    if len(blocks) > 1:
        raise WorkflowError(f"{origin} has {len(blocks)} PEP 723 `# /// script` blocks; keep one")
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        table = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowError(f"{origin}: the `# /// script` block is not valid TOML: {exc}") from exc

    dependencies = table.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise WorkflowError(f"{origin}: `dependencies` must be a list of strings")
    for dependency in dependencies:
        if not _REQUIREMENT_RE.match(dependency.strip()):
            raise WorkflowError(
                f"{origin}: dependency {dependency!r} is not a requirement (it must start with a "
                "project name and fit on one line)"
            )
    requires_python = table.get("requires-python")
    if requires_python is not None:
        if not isinstance(requires_python, str):
            raise WorkflowError(f"{origin}: `requires-python` must be a string")
        try:
            _split_specifier(requires_python)
        except ValueError as exc:
            raise WorkflowError(f"{origin}: `requires-python` {exc}") from exc
    return ScriptMetadata(
        dependencies=tuple(d.strip() for d in dependencies),
        requires_python=requires_python,
        limits=_limits(table, origin),
        declared_env=_declared_env(table, origin),
    )


def _declared_env(table: dict[str, Any], origin: str) -> tuple[DeclaredVariable, ...]:
    """``env_vars`` entries as ``NAME`` (must be provided) or ``NAME=default``, each name once."""
    tool = table.get("tool", {})
    checker = tool.get("env-checker", {}) if isinstance(tool, dict) else {}
    if not isinstance(checker, dict):
        raise WorkflowError(f"{origin}: `[tool.env-checker]` must be a table")
    entries = checker.get("env_vars", [])
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise WorkflowError(f"{origin}: `[tool.env-checker] env_vars` must be a list of strings")
    declared: dict[str, DeclaredVariable] = {}
    for entry in entries:
        name, equals, default = entry.partition("=")
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH or not VARIABLE_NAME.match(name):
            raise WorkflowError(
                f"{origin}: `[tool.env-checker] env_vars` entry {entry!r} is not NAME or "
                "NAME=default (a name is upper-case letters, digits and '_', not starting with a "
                "digit, at most 128 characters)"
            )
        if name.startswith(RESERVED_PREFIX):
            raise WorkflowError(
                f"{origin}: `[tool.env-checker] env_vars` entry {entry!r}: names starting with "
                f"{RESERVED_PREFIX} are Switchboard's own"
            )
        if "\0" in default:
            raise WorkflowError(
                f"{origin}: `[tool.env-checker] env_vars` entry {name!r}: a default cannot "
                "hold a NUL character"
            )
        if name in declared:
            raise WorkflowError(
                f"{origin}: `[tool.env-checker] env_vars` declares {name} twice; keep one"
            )
        declared[name] = DeclaredVariable(name=name, default=default if equals else None)
    return tuple(declared.values())


def _limits(table: dict[str, Any], origin: str) -> dict[str, Any]:
    """``[tool.switchboard]`` checked against :class:`WorkflowLimits`, as JSON-ready overrides."""
    tool = table.get("tool", {})
    own = tool.get("switchboard", {}) if isinstance(tool, dict) else {}
    if not isinstance(own, dict):
        raise WorkflowError(f"{origin}: `[tool.switchboard]` must be a table")
    try:
        limits = WorkflowLimits.model_validate(own)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise WorkflowError(f"{origin}: `[tool.switchboard]` {problems}") from exc
    return limits.model_dump(mode="json", exclude_unset=True)


def format_python_version(version: PythonVersion) -> str:
    return ".".join(str(part) for part in version)


# --- requires-python: the PEP 440 specifier operators, applied to release versions ---------------


@dataclass(frozen=True, slots=True)
class _Clause:
    op: str
    text: str
    release: tuple[int, ...]
    wildcard: bool


def _split_specifier(spec: str) -> list[_Clause]:
    clauses = []
    for part in spec.split(","):
        if not part.strip():
            continue
        match = _CLAUSE_RE.match(part)
        if match is None:
            raise ValueError(f"{spec!r}: cannot read the clause {part.strip()!r}")
        op, text = match.group("op"), match.group("version")
        if op == "===":
            clauses.append(_Clause(op, text, (), False))
            continue
        release = _RELEASE_RE.match(text)
        if release is None:
            raise ValueError(f"{spec!r}: only release versions (like 3.11 or 3.11.*) are supported")
        wildcard = release.group("wildcard") is not None
        numbers = tuple(int(n) for n in release.group("release").split("."))
        if wildcard and op not in ("==", "!="):
            raise ValueError(f"{spec!r}: `.*` is only allowed after == or !=")
        if op == "~=" and len(numbers) < 2:
            raise ValueError(f"{spec!r}: ~= needs at least two version parts")
        clauses.append(_Clause(op, text, numbers, wildcard))
    return clauses


def _pad(release: tuple[int, ...], length: int) -> tuple[int, ...]:
    return release + (0,) * (length - len(release))


def _starts_with(version: PythonVersion, prefix: tuple[int, ...]) -> bool:
    return _pad(version, len(prefix))[: len(prefix)] == prefix


def _clause_allows(clause: _Clause, version: PythonVersion) -> bool:
    if clause.op == "===":
        return clause.text == format_python_version(version)
    if clause.wildcard:
        return _starts_with(version, clause.release) == (clause.op == "==")
    if clause.op == "~=":
        at_least = _Clause(">=", clause.text, clause.release, False)
        return _clause_allows(at_least, version) and _starts_with(version, clause.release[:-1])
    length = max(len(clause.release), len(version))
    wanted, have = _pad(clause.release, length), _pad(version, length)
    comparisons = {
        "==": have == wanted,
        "!=": have != wanted,
        "<=": have <= wanted,
        ">=": have >= wanted,
        "<": have < wanted,
        ">": have > wanted,
    }
    return comparisons[clause.op]
