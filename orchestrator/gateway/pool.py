"""The gateway's instances: carries out the scheduler's actions with the shared lifecycle.

Everything here runs on one asyncio loop; blocking work (launch, readiness, warm-up, stop)
runs in threads through :mod:`orchestrator.lifecycle`, the same path as ``orch up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator import health, instances
from orchestrator.app import App
from orchestrator.engines import adapter_for
from orchestrator.errors import (
    BudgetError,
    LaunchError,
    OrchError,
    PreflightError,
    ReadyTimeout,
)
from orchestrator.gateway.admission import Resident
from orchestrator.gateway.config import ServeSettings
from orchestrator.gateway.scheduler import Fail, Grant, Load, ModelSpec, Scheduler, Stop
from orchestrator.lifecycle import (
    Event,
    Lifecycle,
    Placement,
    UpOptions,
    capacity_of,
    comparable_memory,
    need_of,
    placements,
    resident_of,
)
from orchestrator.plan import Plan, require_fit
from orchestrator.probe import free_memory
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.progress import LoadProgress
from orchestrator.runtime import STOP_GRACE_S, Handle
from orchestrator.state import CorruptRecord, Record, StateStore

TICK_S = 0.1
LIVENESS_EVERY_S = 1.0


class GatewayError(Exception):
    """An error a client gets as OpenAI-style JSON."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class Served:
    """One served profile: its plans (one per GPU choice) and what runs now."""

    name: str
    resolved: dict[str, ResolvedProfile]
    plans: dict[str, Plan]
    handle: Handle | None = None
    plan: Plan | None = None
    phase: str = ""
    progress: LoadProgress | None = None
    last_tps: float | None = None
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    """The last load: monotonic marks (request, load, launched, ready, warm, first grant)."""
    api_key: str | None = None
    upstream_model: str | None = None

    def running(self, handle: Handle, plan: Plan) -> None:
        """An instance of ``plan`` serves now; what each request needs is worked out once.

        The key is read when the engine starts, as the engine itself reads it: a key file
        is not read again for every request.
        """
        self.handle, self.plan = handle, plan
        self.api_key = instances.api_key(plan.profile, os.environ)
        # an engine that checks the name (vLLM) gets the one it serves; llama-server takes any
        self.upstream_model = instances.served_name(plan)

    def gone(self) -> None:
        """No instance serves any more."""
        self.handle, self.plan, self.api_key, self.upstream_model = None, None, None, None


@dataclass(frozen=True)
class Lease:
    """A granted request: where to send it."""

    rid: int
    model: str
    generation: int
    endpoint: str
    api_key: str | None
    upstream_model: str | None
    """vLLM checks ``model``: the name to put there (None: pass the request as it is)."""


def slots_of(plan: Plan) -> int:
    """Requests the engine serves at once: its parallel slots (vLLM: max_num_seqs)."""
    engine = plan.profile.engine
    return adapter_for(engine).slots(engine)


class Pool:
    """The served profiles, their instances, and the scheduler deciding over them."""

    def __init__(
        self,
        app: App,
        names: list[str],
        settings: ServeSettings,
        store: StateStore,
        runtimes: instances.Runtimes,
        *,
        check_memory: bool = True,
    ) -> None:
        """Plan every profile (a profile that cannot fit is served, answering with why)."""
        self.app = app
        self.settings = settings
        self.store = store
        self.runtimes = runtimes
        self.check_memory = check_memory
        self.life = Lifecycle(app, store, runtimes, self._event)
        self.served: dict[str, Served] = {}
        specs = []
        for name in names:
            served, spec = self._plan(name)
            self.served[name] = served
            specs.append(spec)
        capacity = capacity_of(p for s in self.served.values() for p in s.plans.values())
        self.scheduler = Scheduler(
            specs,
            capacity,
            queue_limit=settings.queue_limit,
            max_wait_s=settings.max_wait_s,
            fairness_s=settings.fairness_s,
        )
        self._futures: dict[int, asyncio.Future[Lease]] = {}
        self._rids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._last_liveness = 0.0
        self._closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests: Counter[tuple[str, int]] = Counter()
        self.loads: Counter[str] = Counter()
        self.load_seconds: dict[str, float] = {}
        self.stops: Counter[tuple[str, str]] = Counter()
        self.started_at = time.time()

    def _plan(self, name: str) -> tuple[Served, ModelSpec]:
        options = placements(self.app, self.app.resolve(name))
        plans = {o.key: o.plan for o in options}
        by_key = {o.key: o.resolved for o in options}
        candidates = [o.candidate for o in options if o.plan.fits]
        error = ""
        if not candidates:
            try:
                require_fit(next(iter(plans.values())))
            except BudgetError as exc:
                error = str(exc)
        first = next(iter(plans.values()))
        own = self.settings.profile(name)
        spec = ModelSpec(
            name,
            tuple(candidates),
            slots=slots_of(first),
            priority=own.priority,
            pinned=name in self.settings.pinned,
            idle_ttl_s=self.settings.ttl(name) or None,
            plan_error=error,
        )
        return Served(name, by_key, plans), spec

    # ------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Adopt or clean up what a killed gateway left, note ``orch up``'s, start ticking."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._adopt_or_clean)
        self.scheduler.externals = await asyncio.to_thread(self._externals)
        self._last_liveness = time.monotonic()
        self._ticker = asyncio.create_task(self._tick_forever())
        self._step()

    def _adopt_or_clean(self) -> None:
        now = time.monotonic()
        for record in self.store.all():
            served = self.served.get(record.name)
            handle = self.runtimes.attach(record)
            alive = handle.alive()
            match = served is not None and self._key_for(served, record.plan_hash) is not None
            if record.gateway_pid is not None:
                # a gateway that was killed outright (this one holds the state-folder lock)
                if served is not None and alive and match and health.probe(record.endpoint) == 200:
                    self._adopt(served, record, handle, "gateway", now)
                else:
                    self.life.down(record.name, STOP_GRACE_S)
            elif served is not None and alive and match:
                self._adopt(served, record, handle, "up", now)

    def _key_for(self, served: Served, plan_hash: str) -> str | None:
        return next((k for k, p in served.plans.items() if p.plan_hash == plan_hash), None)

    def _adopt(
        self, served: Served, record: Record, handle: Handle, owner: str, now: float
    ) -> None:
        key = self._key_for(served, record.plan_hash)
        assert key is not None
        plan = served.plans[key]
        if owner == "gateway":
            self.store.save(_with_gateway(record, os.getpid()))
        served.running(handle, plan)
        served.phase = f"adopted ({owner})"
        candidate = Placement(key, plan, served.resolved[key]).candidate
        self.scheduler.adopt(served.name, candidate, "gateway" if owner == "gateway" else "up", now)

    @property
    def draining(self) -> bool:
        """Whether SIGTERM has arrived."""
        return self._closing.is_set()

    def request_drain(self) -> None:
        """From a signal handler: abandon loads now, and drain at the loop's next turn.

        A Python signal handler runs between any two bytecodes of the loop's thread, in
        the middle of a scheduler step maybe; the queues are touched only from the loop.
        """
        self._closing.set()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_drain)

    def begin_drain(self) -> None:
        """SIGTERM: take no more loads, abandon those under way; requests needing one fail."""
        self._closing.set()
        self._resolve(self.scheduler.close())

    async def shutdown(self) -> None:
        """Stop every instance the gateway started (after the server drained)."""
        self.begin_drain()
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        stops = []
        for name, run in self.scheduler.models.items():
            served = self.served[name]
            if run.owner == "gateway" and served.handle is not None:
                stops.append(asyncio.to_thread(self._stop_now, name, "shutdown"))
        await asyncio.gather(*stops, return_exceptions=True)

    # ------------------------------------------------------------ requests

    def route(self, model: str) -> str | None:
        """The served profile a ``model`` value names."""
        return self.routes.get(model)

    @functools.cached_property
    def routes(self) -> dict[str, str]:
        """``model`` value -> profile, aliases included (fixed for the gateway's life)."""
        table = {name: name for name in self.served}
        for name in self.served:
            for alias in self.settings.profile(name).aliases:
                table[alias] = name
        return table

    async def acquire(self, model: str) -> Lease:
        """Wait for a slot on ``model``'s instance (loading it, making room, as needed)."""
        rid = next(self._rids)
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._futures[rid] = future
        served = self.served[model]
        now = time.monotonic()
        grant = self.scheduler.grant_now(model, rid, now)
        if grant is not None:
            self._grant(grant)
            if future.done():
                return future.result()
            self._futures[rid] = future  # not granted after all: queue it like any other
        if not served.timings or "grant" in served.timings:
            served.timings = {"request": now}
        refused = self.scheduler.submit(model, rid, now)
        if refused is not None:
            self._futures.pop(rid, None)
            retry = self.settings.retry_after_s if refused.status == 429 else None
            raise GatewayError(refused.status, refused.code, refused.message, retry)
        self._step()
        try:
            return await future
        except asyncio.CancelledError:
            self.scheduler.cancel(rid)
            self._futures.pop(rid, None)
            if future.done() and not future.cancelled() and future.exception() is None:
                lease = future.result()
                self.release(lease)
            raise

    def release(self, lease: Lease, *, status: int = 200, tps: float | None = None) -> None:
        """A proxied request ended."""
        self.requests[(lease.model, status)] += 1
        if tps:
            self.served[lease.model].last_tps = tps
        self.scheduler.release(lease.model, lease.generation, time.monotonic())
        if self.scheduler.pending():
            self._step()

    def poke(self) -> None:
        """Re-decide now (after a load/unload request)."""
        self._step()

    def count(self, model: str, status: int) -> None:
        """Count a request answered without reaching an engine."""
        self.requests[(model, status)] += 1

    async def engine_failed(self, lease: Lease) -> bool:
        """After a proxy error: whether the engine died (it is then marked stopped)."""
        served = self.served[lease.model]
        run = self.scheduler.models[lease.model]
        handle = served.handle
        if handle is None or run.generation != lease.generation:
            return True
        alive = await asyncio.to_thread(handle.alive)
        if not alive:
            self._died(lease.model)
        return not alive

    def _died(self, model: str) -> None:
        served = self.served[model]
        handle = served.handle
        if handle is not None:
            served.error = health.explain(f"{model}: engine exited", handle.log_tail(40), show=5)
        served.gone()
        served.phase = "died"
        self.store.remove(model)
        self.scheduler.stopped(model)
        self._step()

    # ------------------------------------------------------------ the loop

    def _free(self) -> dict[str, int | None]:
        devices = set(self.scheduler.capacity)
        if not self.check_memory:
            return dict.fromkeys(devices)
        return free_memory(devices)

    def _step(self) -> None:
        free = self._free() if self.scheduler.deciding_loads() else {}
        actions = self.scheduler.step(time.monotonic(), free)
        for action in actions:
            if isinstance(action, Grant):
                self._grant(action)
            elif isinstance(action, Fail):
                self._resolve([action])
            elif isinstance(action, Load):
                self._spawn(self._load(action))
            elif isinstance(action, Stop):
                self._spawn(self._stop(action))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _grant(self, grant: Grant) -> None:
        future = self._futures.pop(grant.rid, None)
        served = self.served[grant.model]
        plan = served.plan
        if future is None or future.done() or plan is None:
            self.scheduler.release(grant.model, grant.generation, time.monotonic())
            return
        served.timings.setdefault("grant", time.monotonic())
        future.set_result(
            Lease(
                grant.rid,
                grant.model,
                grant.generation,
                plan.endpoint,
                served.api_key,
                served.upstream_model,
            )
        )

    def _resolve(self, fails: list[Fail]) -> None:
        for fail in fails:
            future = self._futures.pop(fail.rid, None)
            if future is not None and not future.done():
                retry = self.settings.retry_after_s if fail.status in (429, 503) else None
                future.set_exception(GatewayError(fail.status, fail.code, fail.message, retry))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            if now - self._last_liveness >= LIVENESS_EVERY_S:
                self._last_liveness = now
                await self._check_liveness()
            self._step()

    async def _check_liveness(self) -> None:
        for name, run in self.scheduler.models.items():
            handle = self.served[name].handle
            if run.state == "ready" and handle is not None:
                if not await asyncio.to_thread(handle.alive):
                    self._died(name)
        externals = await asyncio.to_thread(self._externals)
        self.scheduler.externals = externals

    def _externals(self) -> list[Resident]:
        out = []
        for record in self.store.all():
            run = self.scheduler.models.get(record.name)
            if run is not None and (run.state != "stopped" or record.gateway_pid == os.getpid()):
                continue  # one of ours (or being loaded by us)
            if record.gateway_pid == os.getpid() or not self.runtimes.attach(record).alive():
                continue
            why = "started by orch up" if run is None else "orch up, another plan"
            out.append(resident_of(record, why))
        return out

    # ------------------------------------------------------------ load and stop

    def _event(self, event: Event) -> None:
        served = self.served.get(event.name)
        if served is None:
            return
        served.phase = event.kind
        if event.progress is not None:
            served.progress = event.progress
        marks = {"started": "launched", "ready": "ready", "warming": "warming", "warm": "warm"}
        if event.kind in marks:
            served.timings[marks[event.kind]] = time.monotonic()

    async def _load(self, load: Load) -> None:
        served = self.served[load.model]
        key = load.candidate.key
        plan, resolved = served.plans[key], served.resolved[key]
        served.timings["load"] = time.monotonic()
        served.error, served.progress, served.phase = "", None, "loading"
        existing = None
        with contextlib.suppress(CorruptRecord):  # up() notes and replaces a corrupt record
            existing = self.store.load(load.model)
        replace = existing is not None and existing.plan_hash != plan.plan_hash
        options = UpOptions(
            replace=replace,
            gateway_pid=os.getpid(),
            check_memory=self.check_memory,
            cancelled=self._closing.is_set,
        )
        start = time.monotonic()
        try:
            started = await asyncio.to_thread(self.life.up, plan, resolved, options)
        except OrchError as exc:
            status, code = _load_error(exc)
            served.error, served.phase = str(exc), "failed"
            self._resolve(
                self.scheduler.load_failed(
                    load.model, load.generation, status, code, f"{load.model}: {exc}"
                )
            )
            self._step()
            return
        except Exception as exc:  # noqa: BLE001 - any failure reaches the waiting clients
            served.error, served.phase = f"{type(exc).__name__}: {exc}", "failed"
            self._resolve(
                self.scheduler.load_failed(
                    load.model, load.generation, 502, "engine_failed", served.error
                )
            )
            self._step()
            return
        self.loads[load.model] += 1
        took = time.monotonic() - start
        self.load_seconds[load.model] = self.load_seconds.get(load.model, 0.0) + took
        served.running(started.handle, plan)
        if started.stats:
            served.last_tps = started.stats[-1].gen_tps
        served.phase = "ready"
        self.scheduler.loaded(load.model, load.generation, time.monotonic())
        self._step()

    async def _stop(self, stop: Stop) -> None:
        await asyncio.to_thread(self._stop_now, stop.model, stop.reason)
        self.scheduler.stopped(stop.model)
        self._step()

    def _stop_now(self, name: str, reason: str) -> None:
        served = self.served[name]
        served.phase = f"stopping ({reason})"
        try:
            self.life.down(name, STOP_GRACE_S)
        except OrchError as exc:
            served.error = str(exc)
        self.stops[(name, reason)] += 1
        served.gone()
        served.progress = None
        served.phase = f"stopped ({reason})"

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The JSON status: every served model with its state, memory, queue and speed."""
        models = []
        for name, run in self.scheduler.models.items():
            served = self.served[name]
            state: str = run.state
            if state == "ready" and run.inflight:
                state = "busy"
            plan = served.plan or next(iter(served.plans.values()))
            in_use: dict[str, int] = {}
            if served.handle is not None and run.state == "ready":
                used = instances.memory_in_use(served.handle.pids())
                in_use["CPU"] = used.rss_bytes
                in_use.update({f"CUDA{i}": n for i, n in used.gpu_bytes.items()})
            gpus = {int(d.removeprefix("CUDA")): 0 for d in plan.memory.devices if d != "CPU"}
            gpus.update({int(d.removeprefix("CUDA")): n for d, n in in_use.items() if d != "CPU"})
            memory = {
                row.device: {
                    "in_use": in_use.get(row.device),
                    "planned_now": row.planned_now,
                    "later": dict(row.later),
                }
                for row in comparable_memory(plan.memory, in_use.get("CPU", 0), gpus)
            }
            models.append(
                {
                    "name": name,
                    "aliases": list(self.settings.profile(name).aliases),
                    "state": state,
                    "owner": run.owner if run.state != "stopped" else None,
                    "pinned": run.spec.pinned,
                    "priority": run.spec.priority,
                    "slots": run.spec.slots,
                    "in_flight": run.inflight,
                    "queued": len(run.queue),
                    "draining": run.draining,
                    "placement": run.placed.key if run.placed else None,
                    "endpoint": served.plan.endpoint if served.plan else None,
                    "memory_planned": need_of(plan),
                    "memory_in_use": in_use,
                    "memory": memory,
                    "progress": served.progress.to_json() if served.progress else None,
                    "phase": served.phase,
                    "last_tok_s": served.last_tps,
                    "waiting_for": run.wait_reason,
                    "error": served.error or run.last_error or run.spec.plan_error,
                    "idle_ttl_s": run.spec.idle_ttl_s,
                    "last_load": _durations(served.timings),
                }
            )
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "queued": self.scheduler.queued(),
            "queue_limit": self.scheduler.queue_limit,
            "capacity": self.scheduler.capacity,
            "external": [
                {"name": r.name, "memory_planned": dict(r.need), "why": r.why_kept}
                for r in self.scheduler.externals
            ],
            "models": models,
        }


def _durations(marks: dict[str, float]) -> dict[str, float]:
    """Seconds between the marks of the last load (those that happened)."""
    order = ["request", "load", "launched", "ready", "warming", "warm", "grant"]
    present = [m for m in order if m in marks]
    out = {}
    for a, b in itertools.pairwise(present):
        out[f"{a}_to_{b}_s"] = round(marks[b] - marks[a], 4)
    return out


def _with_gateway(record: Record, pid: int) -> Record:
    return dataclasses.replace(record, gateway_pid=pid)


def _load_error(exc: OrchError) -> tuple[int, str]:
    """HTTP status and code for a load that failed (the README's table says why each)."""
    if isinstance(exc, ReadyTimeout):
        return 504, "engine_timeout"
    if isinstance(exc, LaunchError):
        return 502, "engine_failed"
    if isinstance(exc, BudgetError):
        return 507, "model_does_not_fit"
    if isinstance(exc, PreflightError):
        return 503, "cannot_start_here"
    return 500, "load_failed"


__all__ = ["GatewayError", "Lease", "Pool"]
