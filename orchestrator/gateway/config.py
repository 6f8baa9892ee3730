"""The ``[serve]`` table of ``orch.toml``: what ``orch serve`` serves, and how."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.errors import ProfileError


class ServeProfile(BaseModel):
    """Per-profile settings: ``[serve.profiles.NAME]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_ttl_s: Annotated[float, Field(ge=0)] | None = None
    """Stop after this many seconds unused (0: never; default: ``serve.idle_ttl_s``)."""
    priority: int = 0
    """Higher stays longer: lower priorities are stopped first to make room."""
    aliases: tuple[str, ...] = ()
    """Other ``model`` names that route here."""


class ServeSettings(BaseModel):
    """``[serve]``: the gateway's port, profiles, pinning, TTLs, queues and aliases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    models: tuple[str, ...] = ()
    """Profiles to serve when ``orch serve`` names none."""
    pinned: tuple[str, ...] = ()
    """Loaded at start and never stopped to make room or for idleness."""
    idle_ttl_s: Annotated[float, Field(ge=0)] = 900.0
    queue_limit: Annotated[int, Field(ge=1)] = 64
    """Requests waiting in all queues together; one more gets 429."""
    max_wait_s: Annotated[float, Field(gt=0)] = 120.0
    """How long a request waits for room (not for a load under way) before a 503."""
    fairness_s: Annotated[float, Field(ge=0)] = 10.0
    """Anti-thrash bound: a request waits at most this long behind another model's queue."""
    drain_grace_s: Annotated[float, Field(ge=0)] = 30.0
    """On SIGTERM, in-flight requests get this long to finish."""
    retry_after_s: Annotated[int, Field(ge=1)] = 2
    profiles: dict[str, ServeProfile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aliases_unique(self) -> ServeSettings:
        seen: dict[str, str] = {}
        for name, profile in self.profiles.items():
            for alias in profile.aliases:
                if alias in seen:
                    raise ValueError(
                        f"profiles.{name}.aliases: {alias!r} is already an alias of {seen[alias]}"
                    )
                seen[alias] = name
        return self

    def profile(self, name: str) -> ServeProfile:
        """The per-profile settings (defaults when the table has none)."""
        return self.profiles.get(name, ServeProfile())

    def ttl(self, name: str) -> float:
        """The idle TTL of ``name`` in seconds (0: never)."""
        own = self.profile(name).idle_ttl_s
        return self.idle_ttl_s if own is None else own


def routes(names: list[str], settings: ServeSettings) -> dict[str, str]:
    """``model`` value -> profile name, for the served profiles and their aliases.

    Raises:
        ProfileError: An alias names a profile itself, or pinned/per-profile settings name
            a profile that is not served.
    """
    table = {name: name for name in names}
    problems = []
    for name in settings.pinned:
        if name not in table:
            problems.append(f"pinned: {name!r} is not served (served: {', '.join(names)})")
    for name, profile in settings.profiles.items():
        if name not in table:
            continue  # settings for profiles served some other time are fine
        for alias in profile.aliases:
            if alias in table:
                problems.append(f"profiles.{name}.aliases: {alias!r} is a served profile's name")
            table[alias] = name
    if problems:
        raise ProfileError("orch.toml [serve]", problems)
    return table
