"""A profile's ``hf_repo`` / ``hf_file`` in the host's Hugging Face cache, found offline.

huggingface_hub keeps a repo in ``HUB/models--ORG--NAME``: ``refs/REVISION`` holds the commit
hash a branch or tag points to, ``snapshots/HASH/...`` holds the repo's files as symlinks into
``../../blobs/``. :func:`locate` (the only effect here) asks huggingface_hub's cache API
(``try_to_load_from_cache``) where each file is; the result, :class:`HfWeights`, is plain data
that the pure plan renders from, whether or not the cache holds the files.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.profiles.schema import ModelFile

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
_COMMIT = re.compile(r"[0-9a-f]{40}")
VLLM_CONFIG = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


def hub_dir(environ: Mapping[str, str]) -> Path:
    """The hub cache folder huggingface_hub uses in this environment.

    Its own rules (``huggingface_hub.constants``): ``HF_HUB_CACHE``, else the legacy
    ``HUGGINGFACE_HUB_CACHE``, else ``HF_HOME/hub``, where ``HF_HOME`` defaults to
    ``$XDG_CACHE_HOME/huggingface`` and that to ``~/.cache/huggingface``.
    """
    home = environ.get("HF_HOME") or str(
        Path(environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "huggingface"
    )
    hub = (
        environ.get("HF_HUB_CACHE")
        or environ.get("HUGGINGFACE_HUB_CACHE")
        or str(Path(_expand(home, environ)) / "hub")
    )
    return Path(_expand(hub, environ))


def _expand(value: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``$VAR`` as huggingface_hub expands them (against ``environ``)."""
    value = str(Path(value).expanduser())
    return re.sub(
        r"\$(\w+)|\$\{(\w+)\}",
        lambda m: environ.get(m.group(1) or m.group(2), m.group(0)),
        value,
    )


def repo_folder(repo: str) -> str:
    """The cache folder of a model repo: ``models--ORG--NAME``."""
    return "models--" + repo.replace("/", "--")


def split_parts(file: str) -> tuple[str, ...]:
    """Every part of a split GGUF (``...-00001-of-00003.gguf``), or just ``file``."""
    match = _SPLIT.search(file)
    if not match:
        return (file,)
    count = int(match.group(2))
    stem = file[: match.start()]
    return tuple(f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1))


@dataclass(frozen=True)
class HfWeights:
    """Where a profile's Hugging Face weights are, or would be, in the host's hub cache."""

    repo: str
    revision: str
    file: str
    """The GGUF (a split's first part), or "" for a whole repo (vLLM)."""
    hub: str
    commit: str = ""
    """The snapshot the revision resolves to; "" when the cache has no such revision."""
    parts: tuple[str, ...] = ()
    """Every file the engine needs, relative to the snapshot."""
    missing: tuple[str, ...] = ()
    """Those of ``parts`` the cache does not hold."""

    @property
    def repo_dir(self) -> str:
        """The repo's cache folder: what podman mounts, so links into ``blobs/`` resolve."""
        return str(Path(self.hub) / repo_folder(self.repo))

    @property
    def snapshot(self) -> str:
        """The snapshot folder's name: the commit, or the revision while unresolved."""
        return self.commit or self.revision

    @property
    def snapshot_dir(self) -> str:
        """The snapshot folder on the host."""
        return str(Path(self.repo_dir) / "snapshots" / self.snapshot)

    @property
    def relative_path(self) -> str:
        """The GGUF relative to the repo folder: ``snapshots/HASH/FILE``."""
        folder = f"snapshots/{self.snapshot}"
        return f"{folder}/{self.file}" if self.file else folder

    @property
    def path(self) -> str:
        """The GGUF (or, for a whole repo, the snapshot folder) on the host."""
        return str(Path(self.repo_dir) / self.relative_path)

    @property
    def cached(self) -> bool:
        """Whether the cache resolves the revision and holds every part."""
        return bool(self.commit) and not self.missing

    def label(self) -> str:
        """``ORG/NAME@REVISION`` plus the commit it resolved to."""
        text = f"{self.repo}@{self.revision}"
        if self.commit and self.commit != self.revision:
            text += f" ({self.commit[:12]})"
        return text

    def download_command(self) -> list[str]:
        """The ``hf download`` command that fetches what is missing into this cache."""
        argv = ["hf", "download", self.repo]
        if self.file and len(self.parts) > 1 and len(self.missing) == len(self.parts):
            stem = _SPLIT.sub("", self.file)
            argv += ["--include", f"{stem}-*-of-{len(self.parts):05d}.gguf"]
        elif self.file:
            argv += self.missing
        if self.revision != "main":
            argv += ["--revision", self.revision]
        return argv

    def missing_text(self) -> str:
        """One line: what is missing from which cache, and the command that fetches it."""
        what = f"{self.file} ({len(self.parts)} parts)" if len(self.parts) > 1 else self.file
        if not self.file:
            what = "the repo"
        if not self.commit:
            where = f"no snapshot of {self.label()} in the Hugging Face cache {self.hub}"
        else:
            gone = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
            where = f"{self.label()} in {self.hub} lacks {gone}"
        return f"{where}; {what} is fetched by: {shlex.join(self.download_command())}"


def unresolved(model: ModelFile, hub: str | Path) -> HfWeights:
    """The weights as a plan shows them before (or without) looking in the cache."""
    parts = split_parts(model.hf_file) if model.hf_file else (VLLM_CONFIG,)
    commit = model.revision if _COMMIT.fullmatch(model.revision) else ""
    return HfWeights(
        model.hf_repo, model.revision, model.hf_file, str(hub), commit, parts, missing=parts
    )


def locate(model: ModelFile, hub: str | Path) -> HfWeights:
    """Look the weights up in the hub cache at ``hub`` (reads the cache, never the network)."""
    base = unresolved(model, hub)
    if not (Path(hub) / repo_folder(model.hf_repo)).is_dir():
        return base  # nothing of the repo here (and no ~0.14 s import of huggingface_hub)
    from huggingface_hub import try_to_load_from_cache

    def find(name: str) -> str | None:
        found = try_to_load_from_cache(
            model.hf_repo, name, cache_dir=str(hub), revision=model.revision
        )
        return found if isinstance(found, str) else None

    parts = list(base.parts)
    found = {name: find(name) for name in parts}
    if not model.hf_file and found[VLLM_CONFIG]:
        parts += _safetensors(find)
        found.update({name: find(name) for name in parts if name not in found})
    commit = _commit(model, Path(hub), found)
    missing = tuple(name for name in parts if not found.get(name))
    return HfWeights(
        model.hf_repo, model.revision, model.hf_file, str(hub), commit, tuple(parts), missing
    )


def _safetensors(find: Callable[[str], str | None]) -> list[str]:
    """The weight files a cached transformers repo names (its index's shards, or the one)."""
    index = find(SAFETENSORS_INDEX)
    if index is None:
        return [SAFETENSORS_SINGLE]
    try:
        weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
        shards = sorted({str(v) for v in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [SAFETENSORS_INDEX]  # unreadable index: report the repo as not cached
    return [SAFETENSORS_INDEX, *shards]


def _commit(model: ModelFile, hub: Path, found: Mapping[str, str | None]) -> str:
    """The snapshot a found file lives in, else the one ``refs/REVISION`` names."""
    snapshots = hub / repo_folder(model.hf_repo) / "snapshots"
    for path in found.values():
        if path:
            return Path(path).relative_to(snapshots).parts[0]
    ref = hub / repo_folder(model.hf_repo) / "refs" / model.revision
    candidate = model.revision
    if ref.is_file():
        candidate = ref.read_text(encoding="utf-8").strip()
    return candidate if (snapshots / candidate).is_dir() else ""
