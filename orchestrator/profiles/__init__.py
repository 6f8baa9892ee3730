"""Profiles: hardware, architecture facts and launchable model profiles."""

from orchestrator.profiles.loader import Catalog, ResolvedProfile, parse_model_profile
from orchestrator.profiles.schema import Architecture, HardwareProfile, ModelProfile

__all__ = [
    "Architecture",
    "Catalog",
    "HardwareProfile",
    "ModelProfile",
    "ResolvedProfile",
    "parse_model_profile",
]
