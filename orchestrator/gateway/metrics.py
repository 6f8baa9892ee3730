"""``/metrics``: the gateway's own figures and the engines' metrics labelled by model."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from orchestrator.gateway.pool import Pool

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(.*)$")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


async def engine_metrics(pool: Pool, session: aiohttp.ClientSession) -> dict[str, str]:
    """Each ready engine's own ``/metrics`` text, by model (missing ones are left out)."""

    async def one(name: str, endpoint: str, key: str | None) -> tuple[str, str]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(
                endpoint + "/metrics", headers=headers, timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                if r.status == 200:
                    return name, await r.text()
        return name, ""

    from orchestrator import instances

    jobs = []
    for name, run in pool.scheduler.models.items():
        plan = pool.served[name].plan
        if run.state == "ready" and plan is not None:
            jobs.append(one(name, plan.endpoint, instances.api_key(plan.profile, {})))
    return {n: t for n, t in await asyncio.gather(*jobs) if t}


def relabel(texts: dict[str, str]) -> list[str]:
    """Engine metrics with a ``model`` label, one HELP/TYPE per family."""
    families: dict[str, list[str]] = {}
    meta: dict[str, list[str]] = {}
    for model, text in texts.items():
        for line in text.splitlines():
            if line.startswith("# HELP") or line.startswith("# TYPE"):
                parts = line.split(maxsplit=3)
                if len(parts) >= 3:
                    meta.setdefault(parts[2], [])
                    if line not in meta[parts[2]]:
                        meta[parts[2]].append(line)
                continue
            match = _SAMPLE.match(line)
            if not match:
                continue
            name, labels, value = match.groups()
            inner = labels[1:-1] if labels else ""
            added = f'model="{_esc(model)}"' + ("," + inner if inner else "")
            families.setdefault(name, []).append(f"{name}{{{added}}} {value}")
    out = []
    for name, samples in families.items():
        out.extend(meta.get(name, [])[:2])
        out.extend(samples)
    return out


def render(pool: Pool, engines: dict[str, str]) -> str:
    """The Prometheus text exposition."""
    lines = [
        "# HELP orch_requests_total Proxied requests by model and HTTP status.",
        "# TYPE orch_requests_total counter",
    ]
    for (model, code), n in sorted(pool.requests.items()):
        lines.append(f"orch_requests_total{_labels(model=model, code=str(code))} {n}")
    lines += [
        "# HELP orch_queue_depth Requests waiting for a slot, by model.",
        "# TYPE orch_queue_depth gauge",
    ]
    for name, run in pool.scheduler.models.items():
        lines.append(f"orch_queue_depth{_labels(model=name)} {len(run.queue)}")
    lines += [
        "# HELP orch_in_flight Requests an engine is serving, by model.",
        "# TYPE orch_in_flight gauge",
    ]
    for name, run in pool.scheduler.models.items():
        lines.append(f"orch_in_flight{_labels(model=name)} {run.inflight}")
    lines += [
        "# HELP orch_model_state 1 for the state each model is in.",
        "# TYPE orch_model_state gauge",
    ]
    for name, run in pool.scheduler.models.items():
        for state in ("stopped", "loading", "ready", "stopping"):
            value = 1 if run.state == state else 0
            lines.append(f"orch_model_state{_labels(model=name, state=state)} {value}")
    lines += [
        "# HELP orch_loads_total Instances started (plan, launch, ready, warm-up).",
        "# TYPE orch_loads_total counter",
    ]
    for name in pool.served:
        lines.append(f"orch_loads_total{_labels(model=name)} {pool.loads[name]}")
    lines += [
        "# HELP orch_load_seconds_total Seconds spent starting instances.",
        "# TYPE orch_load_seconds_total counter",
    ]
    for name in pool.served:
        lines.append(
            f"orch_load_seconds_total{_labels(model=name)} {pool.load_seconds.get(name, 0.0):.4f}"
        )
    lines += [
        "# HELP orch_stops_total Instances stopped, by reason (evict = a swap, idle, unload...).",
        "# TYPE orch_stops_total counter",
    ]
    for (name, reason), n in sorted(pool.stops.items()):
        lines.append(f"orch_stops_total{_labels(model=name, reason=reason)} {n}")
    status = pool.status()
    lines += [
        "# HELP orch_memory_planned_bytes The plan's memory per instance and device.",
        "# TYPE orch_memory_planned_bytes gauge",
    ]
    for m in status["models"]:
        if m["state"] in ("stopped",):
            continue
        for device, n in m["memory_planned"].items():
            lines.append(f"orch_memory_planned_bytes{_labels(model=m['name'], device=device)} {n}")
    lines += [
        "# HELP orch_memory_in_use_bytes Measured memory per instance and device (RSS, NVML).",
        "# TYPE orch_memory_in_use_bytes gauge",
    ]
    for m in status["models"]:
        for device, n in m["memory_in_use"].items():
            lines.append(f"orch_memory_in_use_bytes{_labels(model=m['name'], device=device)} {n}")
    lines.extend(relabel(engines))
    return "\n".join(lines) + "\n"
