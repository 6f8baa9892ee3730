"""orch's own settings: defaults, then ``orch.toml``, then ``ORCH_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchestrator.gateway.config import ServeSettings

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "orch"


class Settings(BaseSettings):
    """Where orch finds profiles and templates, where it keeps state, and what it runs."""

    model_config = SettingsConfigDict(
        env_prefix="ORCH_",
        extra="forbid",
        frozen=True,
        toml_file="orch.toml",
    )

    profiles_dir: Path = Field(default=PACKAGE_ROOT / "profiles")
    templates_dir: Path = Field(default=PACKAGE_ROOT / "templates")
    state_dir: Path = Field(default_factory=_default_state_dir)
    podman_binary: str = "podman"
    default_bind_host: str = "127.0.0.1"
    serve: ServeSettings = Field(default_factory=ServeSettings)
    """``[serve]``: the gateway (``orch serve``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, ``orch.toml`` (``ORCH_CONFIG`` names another)."""
        toml_path = os.environ.get("ORCH_CONFIG", "orch.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_path))


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` win over every other source."""
    return Settings(**overrides)
