"""Load the settings tree: defaults < TOML file < environment < explicit overrides."""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

from core.errors import SwitchboardError
from switchboard.settings import Settings


class ConfigError(SwitchboardError):
    """The configuration is invalid."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """:class:`Settings` from ``config_file`` (TOML), ``SWITCHBOARD_…`` variables, overrides."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    try:
        loaded = _FromFile(**overrides)
        return Settings.model_validate(loaded.model_dump())
    except ValidationError as exc:
        # from None: the chained error's text holds the values, secrets among them.
        raise ConfigError(f"invalid configuration: {explain(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file} is not valid TOML: {exc}") from exc


def explain(error: ValidationError) -> str:
    """Each problem as ``where: what``, never the value given: pydantic's own text repeats the
    input (``input_value=…``), and a misplaced secret must not reach a terminal or a log."""
    problems = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def signing_secret(settings: Settings) -> bytes:
    """The server secret: from the settings, else generated once into ``<data_dir>/secret.key``."""
    if settings.server.secret_key is not None:
        return settings.server.secret_key.get_secret_value().encode()
    path = settings.server.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process (a CLI command, a second node) wrote it first
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()
