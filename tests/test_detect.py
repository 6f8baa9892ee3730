"""`orch detect`: readers fed from fake sources, and the real host round-tripping."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.detect import (
    build_hardware,
    cpu_model,
    detect_host,
    hardware_toml,
    profile_name,
    read_l3,
    read_numa,
)
from orchestrator.probe import GpuState, probe_gpus
from orchestrator.profiles.loader import parse_hardware


def make_cache(root: Path, cpu: int, index: int, level: int, size: str, shared: str) -> None:
    folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
    folder.mkdir(parents=True)
    (folder / "level").write_text(f"{level}\n")
    (folder / "size").write_text(f"{size}\n")
    (folder / "shared_cpu_list").write_text(f"{shared}\n")


def test_read_l3_counts_each_shared_cache_once(tmp_path: Path) -> None:
    # two CCDs of 2 CPUs, 32 MiB L3 each (as sysfs shows an EPYC), plus L2s that do not count
    for cpu in range(4):
        ccd = "0-1" if cpu < 2 else "2-3"
        make_cache(tmp_path, cpu, 2, 2, "1024K", str(cpu))
        make_cache(tmp_path, cpu, 3, 3, "32768K", ccd)
    assert read_l3(tmp_path) == (64 * 1024**2, [])
    assert read_l3(tmp_path / "none") == (
        None,
        [f"no L3 cache under {tmp_path / 'none'}: cpu.l3_mib left 0"],
    )


def test_detect_reads_this_hosts_l3() -> None:
    import subprocess

    lscpu = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, check=True).stdout
    (line,) = [ln for ln in lscpu.splitlines() if ln.startswith("L3 cache:")]
    expected = int(line.split(":")[1].split()[0]) // 1024**2
    assert detect_host().profile.cpu.l3_mib == expected > 0


def make_node(root: Path, node: int, cpus: str, mem_kb: int | None) -> None:
    folder = root / f"node{node}"
    folder.mkdir(parents=True)
    (folder / "cpulist").write_text(cpus + "\n")
    if mem_kb is not None:
        (folder / "meminfo").write_text(
            f"Node {node} MemTotal:       {mem_kb} kB\nNode {node} MemFree: 1 kB\n"
        )


def test_read_numa_two_nodes_and_a_memory_only_one(tmp_path: Path) -> None:
    make_node(tmp_path, 0, "0-15,32-47", 64 * 1024 * 1024)
    make_node(tmp_path, 1, "16-31,48-63", None)
    make_node(tmp_path, 2, "", 1024)
    (tmp_path / "possible").write_text("0-2\n")  # not a node folder
    nodes, notes = read_numa(tmp_path)
    assert [(n.node, n.cpus, n.ram_bytes) for n in nodes] == [
        (0, "0-15,32-47", 64 * 1024**3),
        (1, "16-31,48-63", None),
    ]
    assert notes == ["NUMA node 2 has no CPUs (memory only): left out"]


def test_read_numa_without_sysfs(tmp_path: Path) -> None:
    nodes, notes = read_numa(tmp_path / "missing")
    assert nodes == []
    assert "assuming one NUMA node" in notes[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "processor\t: 0\nmodel name\t: AMD EPYC  9175F 16-Core Processor\n",
            "AMD EPYC 9175F 16-Core Processor",
        ),
        ("processor\t: 0\nHardware\t: BCM2835\n", "BCM2835"),
        ("", "unknown CPU"),
    ],
)
def test_cpu_model(text: str, expected: str) -> None:
    assert cpu_model(text) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Box 1.lan", "box-1"),
        ("Box_1", "box_1"),
        ("gpu-node.example.com", "gpu-node"),
        ("___", "this-host"),
    ],
)
def test_profile_name(host: str, expected: str) -> None:
    assert profile_name(host) == expected


def test_build_hardware_with_gpus_round_trips(tmp_path: Path) -> None:
    make_node(tmp_path, 0, "0-15", 32 * 1024 * 1024)
    make_node(tmp_path, 1, "16-31", 32 * 1024 * 1024)
    nodes, notes = read_numa(tmp_path)
    detected = build_hardware(
        hostname="box",
        model="AMD EPYC 9175F",
        physical_cores=16,
        threads=32,
        ram_bytes=64 * 1024**3,
        nodes=nodes,
        gpus=(GpuState(0, "NVIDIA RTX PRO 6000", 97887, 97000),),
        gpu_note="",
        notes=notes,
    )
    profile = parse_hardware(hardware_toml(detected), "detected")
    assert profile == detected.profile
    assert [(g.index, g.name, g.vram_mib) for g in profile.gpus] == [
        (0, "NVIDIA RTX PRO 6000", 97887)
    ]
    assert [(n.node, n.cpus, n.ram_gib) for n in profile.numa] == [
        (0, "0-15", 32.0),
        (1, "16-31", 32.0),
    ]
    assert profile.memory.ram_gib == 64.0


def test_no_numa_falls_back_to_one_node_and_unknown_physical_cores() -> None:
    detected = build_hardware(
        hostname="box",
        model="x",
        physical_cores=None,
        threads=4,
        ram_bytes=8 * 1024**3,
        nodes=[],
        gpus=(),
        gpu_note="no NVIDIA driver (NVMLError_LibraryNotFound): CPU only",
    )
    assert [(n.node, n.cpus) for n in detected.profile.numa] == [(0, "0-3")]
    assert detected.profile.cpu.physical_cores == 4
    text = hardware_toml(detected)
    assert "# note: no NVIDIA driver (NVMLError_LibraryNotFound): CPU only" in text
    assert "gpus" not in text.split("\n\n", 1)[1]
    parse_hardware(text, "detected")


def test_detect_this_host_round_trips() -> None:
    detected = detect_host()
    profile = parse_hardware(hardware_toml(detected), "this host")
    assert profile == detected.profile
    assert profile.cpu.threads == os.cpu_count()
    assert profile.numa, "at least one NUMA node (or the fallback)"


def test_detect_with_a_failing_gpu_probe_is_cpu_only() -> None:
    def broken() -> tuple[tuple[GpuState, ...], str]:
        return (), "no NVIDIA driver (NVMLError_LibraryNotFound): CPU only"

    detected = detect_host(gpu_probe=broken)
    assert detected.profile.gpus == ()
    assert any("no NVIDIA driver" in n for n in detected.notes)


def test_probe_gpus_when_pynvml_is_not_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpus, note = probe_gpus()
    assert gpus == ()
    assert "pynvml is not installed" in note
    detected = detect_host(gpu_probe=probe_gpus)
    assert detected.profile.gpus == ()


def test_probe_gpus_when_nvml_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    class NVMLError_LibraryNotFound(Exception):  # noqa: N801 - pynvml's name
        pass

    def init() -> None:
        raise NVMLError_LibraryNotFound()

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    detected = detect_host()
    assert detected.profile.gpus == ()
    assert any("NVMLError_LibraryNotFound" in n for n in detected.notes)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("ORCH_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(tmp_path / "profiles"))
    return tmp_path


def test_cli_detect_prints_valid_toml(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect"]) == 0
    parse_hardware(capsys.readouterr().out, "stdout")


def test_cli_detect_write_and_force(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cli_env / "profiles" / "hardware" / "here.toml"
    assert main(["detect", "--name", "here", "--write"]) == 0
    parse_hardware(path.read_text(), str(path))
    assert f"wrote {path}" in capsys.readouterr().out
    assert main(["detect", "--name", "here", "--write"]) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(["detect", "--name", "here", "--write", "--force"]) == 0
    assert main(["detect", "--name", "Bad Name", "--write"]) == 2
