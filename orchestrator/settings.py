"""orch's own settings: defaults, then ``orch.toml``, then ``ORCH_*`` environment variables.

Where orch looks (README, "Where orch looks"):

- ``orch.toml``: the file ``ORCH_CONFIG`` names, else the first of ``./orch.toml``,
  ``$XDG_CONFIG_HOME/orch/orch.toml`` (default ``~/.config/orch/orch.toml``) and
  ``/etc/orch/orch.toml`` that exists.
- Profiles: ``profiles_dir`` (``ORCH_PROFILES_DIR``) when set, and nothing else. Otherwise
  three layers, the first that has a file of that kind and name winning:
  ``$XDG_CONFIG_HOME/orch/profiles``, ``/etc/orch/profiles``, and the profiles shipped with
  orch. ``orch new`` and ``orch detect --write`` write into the first.
- Templates: ``templates_dir``, by default the ones shipped with orch.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from orchestrator.errors import PreflightError, ProfileError
from orchestrator.gateway.config import ServeSettings

SHIPPED = Path(__file__).resolve().parent / "shipped"
"""``templates/`` and ``profiles/``: links to the checkout's folders, copies in a wheel."""

SYSTEM_CONFIG_DIR = Path("/etc/orch")


def config_home(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/orch`` (default ``~/.config/orch``): the user's own settings."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orch"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "orch"


def config_file() -> Path | None:
    """The ``orch.toml`` in effect, or None when there is none."""
    named = os.environ.get("ORCH_CONFIG")
    if named:
        path = Path(named).expanduser()
        return path if path.exists() else None
    for path in (
        Path("orch.toml").absolute(),
        config_home() / "orch.toml",
        SYSTEM_CONFIG_DIR / "orch.toml",
    ):
        if path.exists():
            return path
    return None


def read_config(path: Path) -> dict[str, Any]:
    """Parse ``orch.toml``, naming the file in every error.

    Raises:
        ProfileError: Not UTF-8, or a TOML syntax error (exit 2).
        PreflightError: It cannot be read (exit 4).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise PreflightError(f"{path}: cannot read orch's settings: {reason}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), [f"TOML syntax error: {exc}"]) from None
    except RecursionError:
        raise ProfileError(str(path), ["TOML nested too deeply"]) from None


class _TomlSource(PydanticBaseSettingsSource):
    """``orch.toml``, already parsed (so its errors name the file)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` hands over the whole table."""
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        """The parsed table."""
        return self.data


class Settings(BaseSettings):
    """Where orch finds profiles and templates, where it keeps state, and what it runs."""

    model_config = SettingsConfigDict(
        env_prefix="ORCH_", extra="forbid", frozen=True, env_ignore_empty=True
    )

    profiles_dir: Path | None = None
    """One profiles folder, used alone; None: the layers of :meth:`profile_folders`."""
    templates_dir: Path = Field(default=SHIPPED / "templates")
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
        """Order: explicit arguments, environment, ``orch.toml`` (see :func:`config_file`)."""
        path = config_file()
        data = read_config(path) if path is not None else {}
        return (init_settings, env_settings, _TomlSource(settings_cls, data))

    def profile_folders(self) -> tuple[Path, ...]:
        """Where profiles are looked up, first match per kind and name winning."""
        if self.profiles_dir is not None:
            return (self.profiles_dir.expanduser(),)
        return (config_home() / "profiles", SYSTEM_CONFIG_DIR / "profiles", SHIPPED / "profiles")

    @property
    def own_profiles_dir(self) -> Path:
        """Where ``orch new`` and ``orch detect --write`` write: the first folder."""
        return self.profile_folders()[0]


def _source_of(key: str, file_data: dict[str, Any], path: Path | None) -> str:
    if f"ORCH_{key.upper()}" in os.environ or path is None or key not in file_data:
        return f"ORCH_{key.upper()}"
    return str(path)


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` win over every other source.

    Raises:
        ProfileError: A setting is unknown or invalid, or ``orch.toml`` does not parse; the
            message names the file or the ``ORCH_*`` variable, and the key.
        PreflightError: ``orch.toml`` cannot be read.
    """
    from orchestrator.profiles.loader import format_validation_error

    try:
        return Settings(**overrides)
    except SettingsError as exc:
        # an ORCH_* value pydantic-settings could not decode (e.g. ORCH_SERVE not JSON)
        cause = exc.__cause__
        raise ProfileError(
            "orch settings (ORCH_* variables)", [f"{exc}" + (f": {cause}" if cause else "")]
        ) from None
    except ValidationError as exc:
        path = config_file()
        file_data = read_config(path) if path is not None else {}
        by_source: dict[str, list[str]] = {}
        for line in format_validation_error(exc, Settings, file_data):
            key = re.split(r"[.:\[ ]", line, maxsplit=1)[0]
            source = "orch settings" if key in overrides else _source_of(key, file_data, path)
            by_source.setdefault(source, []).append(line)
        source, lines = next(iter(by_source.items()))
        extra = [f"{s}: {line}" for s, more in list(by_source.items())[1:] for line in more]
        raise ProfileError(source, lines + extra) from None
