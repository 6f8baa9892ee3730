"""Fit the speed model's constants to measured decode runs. Pure.

Decode time is linear in the inverse rates and the per-event costs (``orchestrator.speed``):

    t = gpu_bytes / (eff x spec) + gpu_nodes x gpu_node_us + switches x split_us
      + sum_type host_bytes / (threads x thread_gbs) + host_nodes x cpu_node_us + serial

so the constants a calibration frees follow from weighted linear least squares on the measured
times (each run weighted by its own time, so errors count relatively). A small ridge pulls every
free constant toward its current value, which keeps a constant that the runs barely touch where
its source put it instead of letting it absorb noise. The host's bandwidth cap is left out of the
fit: the runs must not be limited by it (``check_cap`` says when one is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.memory.llama import CPU
from orchestrator.profiles.schema import HardwareProfile
from orchestrator.speed import (
    EngineRun,
    Workload,
    decode_seconds,
    measured_thread_gbs,
    thread_gbs,
)

GPU_EFFICIENCY = "gpu_read_efficiency"
GPU_NODE = "gpu_node_us"
SPLIT = "split_us"
CPU_NODE = "cpu_node_us"
THREAD_SCALE = "thread_scale"
"""``[decode] thread_scale``: one factor on every per-thread rate."""
SCALAR_CONSTANTS = (GPU_EFFICIENCY, GPU_NODE, SPLIT, CPU_NODE, THREAD_SCALE)


def thread_key(engine: str, type_name: str) -> str:
    """The name of one per-thread rate as a free constant: ``thread_gbs:llama.cpp:f16``."""
    return f"thread_gbs:{engine}:{type_name.lower()}"


@dataclass(frozen=True)
class Observation:
    """One measured decode run and the workload the model sees in it."""

    name: str
    work: Workload
    run: EngineRun
    tokens_per_s: float
    depth: int = 0

    @property
    def seconds(self) -> float:
        """Measured seconds per token."""
        return 1.0 / self.tokens_per_s


def _columns(
    obs: Observation, hardware: HardwareProfile, free: Sequence[str]
) -> tuple[dict[str, float], float]:
    """Each free constant's coefficient in this run's time, and the time of everything fixed.

    A constant's coefficient multiplies its *inverse* for rates (efficiency, thread rates) and
    the constant itself for costs, so the model stays linear.
    """
    dec = hardware.decode
    cols = dict.fromkeys(free, 0.0)
    fixed = 0.0
    for device, dw in obs.work.devices.items():
        kv = sum(
            per_cell * (min(obs.depth, cap) if cap else obs.depth) for cap, per_cell in dw.kv_layers
        )
        if device == CPU:
            threads = max(obs.run.threads, 1)
            reads = dict(dw.weights)
            reads[dw.kv_type] = reads.get(dw.kv_type, 0.0) + kv + dw.state_bytes
            for type_name, size in reads.items():
                key = thread_key(obs.run.kind, type_name)
                per_thread = size / (threads * 1e9)
                measured = measured_thread_gbs(hardware, obs.run.kind, type_name)
                if key in cols:
                    cols[key] += per_thread / dec.thread_scale
                elif THREAD_SCALE in cols:
                    cols[THREAD_SCALE] += per_thread / measured
                else:
                    fixed += per_thread / thread_gbs(hardware, obs.run.kind, type_name)
            fixed += dw.unfused_gdn_cycles / (dec.cpu_clock_ghz * 1e9)
            if CPU_NODE in cols:
                cols[CPU_NODE] += dw.nodes * 1e-6
            else:
                fixed += dw.nodes * dec.cpu_node_us * 1e-6
        else:
            gpu = hardware.gpu(int(device.removeprefix("CUDA")))
            spec = (gpu.bandwidth_gbs if gpu and gpu.bandwidth_gbs else 1000.0) * 1e9
            size = sum(dw.weights.values()) + kv + dw.state_bytes
            if GPU_EFFICIENCY in cols:
                cols[GPU_EFFICIENCY] += size / spec
            else:
                fixed += size / (spec * dec.gpu_read_efficiency)
            if GPU_NODE in cols:
                cols[GPU_NODE] += dw.nodes * 1e-6
            else:
                fixed += dw.nodes * dec.gpu_node_us * 1e-6
    switches = max(obs.work.splits - 1, 0)
    fixed += switches * obs.work.split_bytes / (dec.link_gbs * 1e9)
    if SPLIT in cols:
        cols[SPLIT] += switches * 1e-6
    else:
        fixed += switches * dec.split_us * 1e-6
    return cols, fixed


def _current(hardware: HardwareProfile, name: str) -> float:
    """The profile's value of a free constant, in the linear (fitted) form."""
    dec = hardware.decode
    if name == GPU_EFFICIENCY:
        return 1.0 / dec.gpu_read_efficiency
    if name == THREAD_SCALE:
        return 1.0 / dec.thread_scale
    if name.startswith("thread_gbs:"):
        _, engine, type_name = name.split(":")
        return 1.0 / measured_thread_gbs(hardware, engine, type_name)
    return float(getattr(dec, name))


@dataclass(frozen=True)
class Fit:
    """Fitted constants (in the profile's units) and how well they reproduce each run."""

    constants: Mapping[str, float]
    predicted: Mapping[str, float]
    measured: Mapping[str, float]

    def error(self, name: str) -> float:
        """Predicted over measured tok/s, minus one."""
        return self.predicted[name] / self.measured[name] - 1.0


def fit(
    observations: Sequence[Observation],
    hardware: HardwareProfile,
    free: Sequence[str],
    ridge: float = 1e-3,
) -> Fit:
    """Least-squares values of the ``free`` constants over these runs."""
    if not observations:
        raise ValueError("no runs to fit")
    rows: list[list[float]] = []
    targets: list[float] = []
    for obs in observations:
        cols, fixed = _columns(obs, hardware, free)
        weight = 1.0 / obs.seconds
        rows.append([cols[name] * weight for name in free])
        targets.append((obs.seconds - fixed) * weight)
    prior = np.array([_current(hardware, name) for name in free])
    design = np.array(rows) * prior  # fit relative changes, so the ridge treats all alike
    lam = np.sqrt(ridge)
    stacked = np.vstack([design, lam * np.eye(len(free))])
    wanted = np.concatenate([np.array(targets), lam * np.ones(len(free))])
    solution, *_ = np.linalg.lstsq(stacked, wanted, rcond=None)
    linear = np.maximum(solution, 1e-3) * prior  # costs and inverse rates stay positive
    constants = {name: _profile_value(name, float(v)) for name, v in zip(free, linear, strict=True)}
    fitted = apply(hardware, constants)
    predicted = {o.name: 1.0 / decode_seconds(o.work, fitted, o.run, o.depth) for o in observations}
    measured = {o.name: o.tokens_per_s for o in observations}
    return Fit(constants, predicted, measured)


def _profile_value(name: str, linear: float) -> float:
    if name == GPU_EFFICIENCY:
        return min(1.0 / linear, 1.0)
    if name == THREAD_SCALE:
        return 1.0 / linear
    if name.startswith("thread_gbs:"):
        return 1.0 / linear
    return linear


def apply(hardware: HardwareProfile, constants: Mapping[str, float]) -> HardwareProfile:
    """``hardware`` with these constants in its ``[decode]`` table."""
    dec = hardware.decode
    update: dict[str, object] = {k: v for k, v in constants.items() if k in SCALAR_CONSTANTS}
    rates = {engine: dict(types) for engine, types in dec.thread_gbs.items()}
    for name, value in constants.items():
        if name.startswith("thread_gbs:"):
            _, engine, type_name = name.split(":")
            rates.setdefault(engine, {})[type_name] = value
    update["thread_gbs"] = rates
    return hardware.model_copy(update={"decode": dec.model_copy(update=update)})


def leave_one_out(
    observations: Sequence[Observation],
    hardware: HardwareProfile,
    free: Sequence[str],
    ridge: float = 1e-3,
) -> dict[str, float]:
    """For each run: the model fitted on the others, its prediction for this one (tok/s)."""
    out: dict[str, float] = {}
    for held in observations:
        rest = [o for o in observations if o is not held]
        fitted = apply(hardware, fit(rest, hardware, free, ridge).constants)
        out[held.name] = 1.0 / decode_seconds(held.work, fitted, held.run, held.depth)
    return out
