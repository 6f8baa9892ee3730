"""A hardware profile for this host: psutil, sysfs NUMA nodes, /proc/cpuinfo and NVML.

Each reader takes its source as an argument (a sysfs folder, cpuinfo text, a GPU-probe
callable) so tests can feed it; :func:`detect_host` wires in the real ones.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from orchestrator.memory.breakdown import GIB
from orchestrator.probe import GpuState, probe_gpus
from orchestrator.profiles.loader import validate
from orchestrator.profiles.schema import PROFILE_NAME, HardwareProfile

NODE_ROOT = Path("/sys/devices/system/node")
CPU_ROOT = Path("/sys/devices/system/cpu")
CPUINFO = Path("/proc/cpuinfo")
GpuProbe = Callable[[], tuple[tuple[GpuState, ...], str]]
_NODE_DIR = re.compile(r"node(\d+)")
_MEMTOTAL = re.compile(r"MemTotal:\s+(\d+)\s*kB")


@dataclass(frozen=True)
class NodeFacts:
    """One NUMA node as sysfs shows it."""

    node: int
    cpus: str
    ram_bytes: int | None


@dataclass(frozen=True)
class Detected:
    """A detected hardware profile and what the reader could not tell."""

    profile: HardwareProfile
    notes: tuple[str, ...]


def read_numa(root: Path) -> tuple[list[NodeFacts], list[str]]:
    """NUMA nodes under ``root`` (``/sys/devices/system/node``), with notes on what was skipped.

    Nodes without CPUs (memory-only, e.g. CXL) are left out with a note; no readable node
    gives an empty list, which the caller treats as one node holding every CPU.
    """
    notes: list[str] = []
    if not root.is_dir():
        return [], [f"{root} not found: assuming one NUMA node"]
    nodes: list[NodeFacts] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        match = _NODE_DIR.fullmatch(entry.name)
        if not match:
            continue
        try:
            cpus = (entry / "cpulist").read_text(encoding="utf-8").strip()
        except OSError:
            notes.append(f"{entry / 'cpulist'} unreadable: node {match.group(1)} left out")
            continue
        if not cpus:
            notes.append(f"NUMA node {match.group(1)} has no CPUs (memory only): left out")
            continue
        ram: int | None = None
        try:
            found = _MEMTOTAL.search((entry / "meminfo").read_text(encoding="utf-8"))
            if found:
                ram = int(found.group(1)) * 1024
        except OSError:
            pass
        nodes.append(NodeFacts(int(match.group(1)), cpus, ram))
    nodes.sort(key=lambda n: n.node)
    if not nodes:
        notes.append(f"no NUMA nodes under {root}: assuming one")
    return nodes, notes


_SIZE = re.compile(r"(\d+)\s*([KMG]?)")


def read_l3(root: Path) -> tuple[int | None, list[str]]:
    """Total L3 bytes over the distinct L3 caches under ``root`` (``/sys/devices/system/cpu``).

    Each ``cpuN/cache/indexM`` of level 3 is one CPU's view of an L3; the CPUs sharing it
    (``shared_cpu_list``) see the same one, so each is counted once.
    """
    seen: dict[str, int] = {}
    for index in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        try:
            if (index / "level").read_text(encoding="utf-8").strip() != "3":
                continue
            size = _SIZE.fullmatch((index / "size").read_text(encoding="utf-8").strip())
            shared = (index / "shared_cpu_list").read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if size:
            scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[size.group(2)]
            seen[shared] = int(size.group(1)) * scale
    if not seen:
        return None, [f"no L3 cache under {root}: cpu.l3_mib left 0"]
    return sum(seen.values()), []


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` in /proc/cpuinfo text (other architectures: ``Hardware``)."""
    for key in ("model name", "Hardware", "cpu model", "Processor"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if match:
            return " ".join(match.group(1).split())
    return "unknown CPU"


def profile_name(hostname: str) -> str:
    """A valid profile name from a host name (``Box_1.lan`` → ``box-1``)."""
    short = hostname.split(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", short).strip("-._")
    return name if name and re.fullmatch(PROFILE_NAME, name) else "this-host"


def _gib(n: int) -> float:
    return round(n / GIB, 2)


def build_hardware(
    *,
    hostname: str,
    model: str,
    physical_cores: int | None,
    threads: int,
    ram_bytes: int,
    nodes: list[NodeFacts],
    gpus: tuple[GpuState, ...],
    gpu_note: str,
    notes: list[str] | None = None,
    l3_bytes: int | None = None,
) -> Detected:
    """Assemble and validate a hardware profile from facts already read."""
    out_notes = list(notes or [])
    if physical_cores is None:
        out_notes.append("psutil could not count physical cores: using the thread count")
    if gpu_note:
        out_notes.append(gpu_note)
    data: dict[str, Any] = {
        "description": f"{hostname}, detected by `orch detect`",
        "cpu": {
            "model": model,
            "physical_cores": physical_cores or threads,
            "threads": threads,
            "l3_mib": (l3_bytes or 0) // 1024**2,
        },
        "memory": {"ram_gib": _gib(ram_bytes)},
        "gpus": [{"index": g.index, "name": g.name, "vram_mib": g.total_mib} for g in gpus],
    }
    if not nodes:
        nodes = [NodeFacts(0, f"0-{threads - 1}" if threads > 1 else "0", ram_bytes)]
    data["numa"] = [
        {"node": n.node, "cpus": n.cpus} | ({"ram_gib": _gib(n.ram_bytes)} if n.ram_bytes else {})
        for n in nodes
    ]
    out_notes.append("memory.channels and memory.bandwidth_gbs are not detected: fill them in")
    profile = validate(HardwareProfile, data, "orch detect")
    return Detected(profile, tuple(out_notes))


def detect_host(
    *,
    node_root: Path = NODE_ROOT,
    cpu_root: Path = CPU_ROOT,
    cpuinfo: Path = CPUINFO,
    gpu_probe: GpuProbe = probe_gpus,
    hostname: str | None = None,
) -> Detected:
    """Read this machine: psutil, sysfs, /proc/cpuinfo and the GPU probe."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    nodes, notes = read_numa(node_root)
    l3_bytes, l3_notes = read_l3(cpu_root)
    gpus, gpu_note = gpu_probe()
    threads = psutil.cpu_count(logical=True) or 1
    return build_hardware(
        hostname=hostname or socket.gethostname(),
        model=cpu_model(text),
        physical_cores=psutil.cpu_count(logical=False),
        threads=threads,
        ram_bytes=int(psutil.virtual_memory().total),
        nodes=nodes,
        gpus=gpus,
        gpu_note=gpu_note,
        notes=notes + l3_notes,
        l3_bytes=l3_bytes,
    )


def hardware_toml(detected: Detected) -> str:
    """TOML text for the profile, with the notes as a leading comment."""
    data = detected.profile.model_dump(mode="json", exclude_none=True)
    if not data["gpus"]:
        del data["gpus"]
    header = ["# Written by `orch detect`. Check it, then plan against it with --hardware."]
    header += [f"# note: {note}" for note in detected.notes]
    return "\n".join(header) + "\n\n" + tomli_w.dumps(data)
