"""Start, stop and watch instances: the one lifecycle that ``orch up`` and ``orch serve`` drive.

Nothing here prints or picks an exit code. Progress goes to an events callback as
:class:`Event` values; failures raise the errors of :mod:`orchestrator.errors`. The caller
decides what to show (the CLI prints, the gateway keeps state for its status page) and how
signals reach the work (the CLI turns SIGTERM into an exception; see :class:`UpOptions`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from orchestrator import health, instances, probe, progress, warmup
from orchestrator.app import App, gpu_choices
from orchestrator.engines import adapter_for
from orchestrator.errors import LaunchError, PreflightError
from orchestrator.gateway.admission import Candidate, Resident, Room, place
from orchestrator.memory.breakdown import DeviceMemory, MemoryEstimate
from orchestrator.plan import Plan
from orchestrator.probe import port_in_use
from orchestrator.profiles.loader import ResolvedProfile
from orchestrator.profiles.schema import PodmanRuntime
from orchestrator.runtime import STOP_GRACE_S, Handle, Unverified
from orchestrator.runtime import podman as podman_rt
from orchestrator.runtime import process as process_rt
from orchestrator.state import CorruptRecord, Record, StateStore

EventKind = Literal[
    "note",  # a preflight note
    "stopping",  # stopping another instance first (replace, GPU holder)
    "launching",
    "started",  # the engine runs; waiting for readiness
    "loading",  # a readiness poll or a progress sample (``progress`` set when measured)
    "ready",  # /health answered (``seconds`` set)
    "warming",
    "warm",  # warm-up done
    "aborting",  # a failure or interruption: stopping what was started
]


@dataclass(frozen=True)
class Event:
    """One step of a lifecycle operation, for the caller to show."""

    name: str
    kind: EventKind
    message: str
    progress: progress.LoadProgress | None = None
    seconds: float | None = None


Events = Callable[[Event], None]


def ignore(event: Event) -> None:
    """An events callback that shows nothing."""


@dataclass(frozen=True)
class UpOptions:
    """How ``up`` behaves.

    Attributes:
        replace: Stop a running instance that differs, and GPU holders (needs_whole_gpu).
        timeout_s: Seconds to wait for ready (None: the plan's load timeout).
        warmup: Send the profile's warm-up requests.
        check_memory: Check free RAM/VRAM on this machine.
        supervisor_pid: Recorded as the supervising process (``orch up --foreground``).
        gateway_pid: Recorded as the gateway that owns the instance (``orch serve``).
        shield: Entered while a failed start is cleaned up, so that a second signal cannot
            interrupt the cleanup (the CLI ignores SIGTERM there).
        progress_interval_s: Seconds between load-progress samples.
        cancelled: Polled while the engine loads and before warm-up; once it returns
            True the start is abandoned (what was started is stopped) with a
            LaunchError. The gateway sets it on SIGTERM, since a load can take minutes.
    """

    replace: bool = False
    timeout_s: float | None = None
    warmup: bool = True
    check_memory: bool = True
    supervisor_pid: int | None = None
    gateway_pid: int | None = None
    shield: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    progress_interval_s: float = 0.5
    cancelled: Callable[[], bool] = field(default=lambda: False)


@dataclass(frozen=True)
class Started:
    """What ``up`` left running."""

    plan: Plan
    handle: Handle
    record: Record
    already_running: bool = False
    ready_s: float | None = None
    stats: tuple[warmup.RequestStats, ...] = ()


@dataclass(frozen=True)
class Comparable:
    """In-use memory next to the part of the plan it can be compared with.

    A plan's host figure holds buffers that become resident only later (the compute buffers
    once a prompt fills the context, the prompt cache up to its limit as it fills). Resident
    memory right after start-up is compared with the rest; those are listed apart.
    """

    device: str
    in_use: int
    planned_now: int
    later: tuple[tuple[str, int], ...] = ()


def comparable_memory(
    memory: MemoryEstimate, rss_bytes: int, gpu_bytes: dict[int, int]
) -> list[Comparable]:
    """Measured memory of an instance against the comparable part of its plan, per device."""
    out = []
    cpu = memory.devices.get("CPU")
    if cpu is not None:
        cache = int(memory.facts.get("prompt_cache", 0) or 0)
        work = int(memory.facts.get("cpu_work_buffer", 0) or 0)
        later = [("compute", cpu.compute + work), ("prompt cache", cache)]
        now = cpu.total - sum(n for _, n in later)
        out.append(Comparable("CPU", rss_bytes, now, tuple((k, n) for k, n in later if n)))
    for index, nbytes in sorted(gpu_bytes.items()):
        dev: DeviceMemory | None = memory.devices.get(f"CUDA{index}")
        # everything on a GPU is allocated at load: the whole plan compares
        out.append(Comparable(f"CUDA{index}", nbytes, dev.total if dev else 0))
    return out


# ---------------------------------------------------------------- placement


def need_of(plan: Plan) -> dict[str, int]:
    """Bytes per device the plan takes."""
    return {device: m.total for device, m in plan.memory.devices.items()}


@dataclass(frozen=True)
class Placement:
    """One way to start a profile: a ``gpus = "any"`` one on one GPU, else as it is."""

    key: str
    """``CUDAn`` for one GPU of a ``gpus = "any"`` profile; empty otherwise."""
    plan: Plan
    resolved: ResolvedProfile

    @property
    def candidate(self) -> Candidate:
        """This placement as admission sees it."""
        return Candidate(self.key, need_of(self.plan), whole_gpu=self.plan.profile.needs_whole_gpu)


def placements(app: App, resolved: ResolvedProfile, *, read_header: bool = True) -> list[Placement]:
    """Every way to start ``resolved``: one per GPU for ``gpus = "any"``, else one."""
    choices = gpu_choices(resolved)
    out = []
    for choice in choices:
        plan = app.plan_for(choice, read_header=read_header)
        gpus = ",".join(f"CUDA{g}" for g in instances.gpu_indices(plan))
        out.append(Placement(gpus if len(choices) > 1 else "", plan, choice))
    return out


def capacity_of(plans: Iterable[Plan]) -> dict[str, int]:
    """Budget bytes per device (the smallest where plans disagree)."""
    capacity: dict[str, int] = {}
    for plan in plans:
        for b in plan.budget:
            capacity[b.device] = min(capacity.get(b.device, b.capacity), b.capacity)
    return capacity


def resident_of(record: Record, why_kept: str) -> Resident:
    """A running instance's planned memory, as admission sees it (never stopped)."""
    return Resident(
        record.name,
        dict(record.predicted_bytes),
        evictable=False,
        whole_gpu=record.needs_whole_gpu,
        why_kept=why_kept,
    )


# ---------------------------------------------------------------- bookkeeping


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (and is not this process)."""
    if not pid or pid == os.getpid():
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def gpu_holders(store: StateStore, runtimes: instances.Runtimes, plan: Plan) -> list[Record]:
    """Running instances that share a GPU with ``plan`` where either wants it whole."""
    mine = set(instances.gpu_indices(plan))
    if not mine:
        return []
    out = []
    for record in store.all():
        if record.name == plan.name or not mine & set(record.gpus):
            continue
        if not (plan.profile.needs_whole_gpu or record.needs_whole_gpu):
            continue
        if runtimes.attach(record).alive():
            out.append(record)
    return out


def holders_message(plan: Plan, holders: list[Record]) -> str:
    """Why ``plan`` cannot start next to ``holders``, naming each one and the way out."""
    mine = set(instances.gpu_indices(plan))
    shared = sorted({g for h in holders for g in h.gpus if g in mine})
    names = " ".join(h.name for h in holders)
    if plan.profile.needs_whole_gpu:
        users = ", ".join(h.name for h in holders)
        why = f"{plan.name} needs the whole GPU (needs_whole_gpu) and it is in use by {users}"
    else:
        whole = ", ".join(h.name for h in holders if h.needs_whole_gpu)
        why = f"{whole} holds it whole (needs_whole_gpu)"
    return (
        f"{plan.name}: cannot start on GPU {', '.join(map(str, shared))}: {why}; "
        f"stop it with `orch down {names}`, or pass --replace to stop it and start {plan.name}"
    )


def gone_reason(handle: Handle) -> str:
    """Why an instance whose record exists is not running."""
    if isinstance(handle, Unverified):
        return f"{handle.what} is not provably the one orch started: {handle.why}; left it alone"
    if isinstance(handle, process_rt.ProcessHandle):
        return handle.gone_reason()
    if isinstance(handle, podman_rt.ContainerHandle):
        status = handle.status()
        if status == "gone":
            return f"{handle.describe()} was removed outside orch"
        if status == "foreign":
            return (
                f"{handle.describe()} does not carry orch's labels for this profile and plan; "
                "left alone"
            )
        return f"{handle.describe()} is {status}, exit code {handle.exit_code()}"
    return f"{handle.describe()} has exited"


def stop_handle(handle: Handle, log_path: Path, grace_s: float) -> None:
    """Stop an engine, keeping a container's output in ``log_path`` first."""
    if isinstance(handle, podman_rt.ContainerHandle):
        handle.save_logs(log_path)
    handle.stop(grace_s)


def same_process(pid: int | None, create_time: float | None) -> bool:
    """Whether ``pid`` runs and is still the process that started at ``create_time``.

    Without a start time nothing is proven, so the answer is no.
    """
    if pid is None or create_time is None or not pid_alive(pid):
        return False
    try:
        return abs(psutil.Process(pid).create_time() - create_time) <= 0.5
    except psutil.Error:
        return False


def stop_record(
    store: StateStore, runtimes: instances.Runtimes, record: Record, grace_s: float
) -> float:
    """Stop what a record describes (via its supervisor if one runs); seconds taken."""
    start = time.monotonic()
    supervisor = record.supervisor_pid
    if same_process(supervisor, record.supervisor_create_time):
        assert supervisor is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 5
        while same_process(supervisor, record.supervisor_create_time):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    stop_handle(runtimes.attach(record), store.log_path(record.name), grace_s)
    store.remove(record.name)
    return time.monotonic() - start


def make_record(
    plan: Plan,
    handle: Handle,
    log_path: Path,
    started: float,
    *,
    supervisor_pid: int | None = None,
    gateway_pid: int | None = None,
) -> Record:
    """The state-store record for a launched plan."""
    is_podman = isinstance(plan.profile.runtime, PodmanRuntime)
    pid = create_time = None
    container_id = container = None
    if isinstance(handle, process_rt.ProcessHandle):
        pid, create_time = handle.pid, handle.create_time
    if isinstance(handle, podman_rt.ContainerHandle):
        container_id, container = handle.id, handle.name
    supervisor_time = None
    if supervisor_pid is not None:
        with contextlib.suppress(psutil.Error):
            supervisor_time = psutil.Process(supervisor_pid).create_time()
    return Record(
        name=plan.name,
        runtime="podman" if is_podman else "process",
        plan_hash=plan.plan_hash,
        endpoint=plan.endpoint,
        port=plan.port,
        started_at=started,
        log_path=str(log_path),
        pid=pid,
        pid_create_time=create_time,
        container_id=container_id,
        container_name=container,
        engine=plan.profile.engine.kind,
        gpus=instances.gpu_indices(plan),
        needs_whole_gpu=plan.profile.needs_whole_gpu,
        supervisor_pid=supervisor_pid,
        supervisor_create_time=supervisor_time,
        gateway_pid=gateway_pid,
        predicted_bytes={d: m.total for d, m in plan.memory.devices.items()},
    )


# ---------------------------------------------------------------- up


class Lifecycle:
    """Up, down and watch, against one state store and one set of runtime connections."""

    def __init__(
        self,
        app: App,
        store: StateStore,
        runtimes: instances.Runtimes,
        events: Events = ignore,
    ) -> None:
        """Operations report to ``events``; podman connections close with ``runtimes``."""
        self.app = app
        self.store = store
        self.runtimes = runtimes
        self.events = events

    def _emit(self, name: str, kind: EventKind, message: str, **extra: Any) -> None:
        self.events(Event(name, kind, message, **extra))

    def place(self, resolved: ResolvedProfile, *, check_memory: bool = True) -> Placement:
        """Where ``orch up`` starts a profile, by the gateway's rule (``admission.place``).

        A ``gpus = "any"`` profile goes to a GPU where it fits beside the running instances
        (their plans), within the budgets and the memory free now (unless ``check_memory``
        is off), the one left with the most room. An instance of it that runs keeps its
        GPU. Where it fits nowhere, the first placement within the budgets is returned, so
        that the preflight check says what is missing.
        """
        options = placements(self.app, resolved)
        if len(options) == 1:
            return options[0]
        existing = self.store.load(resolved.name)
        if existing is not None and self.runtimes.attach(existing).alive():
            same = [o for o in options if o.plan.plan_hash == existing.plan_hash]
            if same:
                return same[0]
        fitting = [o for o in options if o.plan.fits] or options
        others = [
            resident_of(record, "running")
            for record in self.store.all()
            if record.name != resolved.name and self.runtimes.attach(record).alive()
        ]
        capacity = capacity_of(o.plan for o in fitting)
        free = probe.free_memory(capacity) if check_memory else {}
        chosen = place([o.candidate for o in fitting], others, Room(capacity, free))
        return next((o for o in fitting if chosen is not None and o.key == chosen.key), fitting[0])

    def up(self, plan: Plan, resolved: ResolvedProfile, options: UpOptions) -> Started:
        """Start ``plan`` and wait until it is ready and warm.

        Holds the profile's lock throughout. Anything started is stopped again if the start
        fails or is interrupted (any exception, KeyboardInterrupt included), then re-raised.

        Raises:
            PreflightError: Something the launch needs is missing or taken, or a different
                plan runs (without ``replace``).
            LaunchError: The engine exited while loading, or was not ready in time.
        """
        name = plan.name
        store, runtimes, settings = self.store, self.runtimes, self.app.settings
        with store.lock(name):
            try:
                existing = store.load(name)
            except CorruptRecord as exc:
                self._emit(name, "note", f"{exc}: replaced it")
                existing = None
            holders = gpu_holders(store, runtimes, plan)  # never this profile's own record
            if options.replace:
                # what can be checked while the instances to replace still run, before any stops
                instances.preflight(plan, resolved, settings, check_resources=False)
                stopping = ([existing] if existing else []) + holders
                taken_by_them = plan.port in {r.port for r in stopping}
                if port_in_use(plan.host, plan.port) and not taken_by_them:
                    raise PreflightError(
                        f"{name}: cannot start here:\n  port {plan.host}:{plan.port} is already "
                        f"in use by something --replace would not stop (publish.port in "
                        f"{plan.source})"
                    )
            if existing is not None:
                old = runtimes.attach(existing)
                if old.alive():
                    if existing.plan_hash == plan.plan_hash and not options.replace:
                        return Started(plan, old, existing, already_running=True)
                    if not options.replace:
                        raise PreflightError(
                            f"{name}: running with a different plan ({existing.plan_hash}, now "
                            f"{plan.plan_hash}); pass --replace to restart it"
                        )
                    self._emit(name, "stopping", f"stopping {old.describe()} to replace it")
                stop_record(store, runtimes, existing, STOP_GRACE_S)
            if holders and not options.replace:
                raise PreflightError(holders_message(plan, holders))
            for holder in holders:
                self._emit(name, "stopping", f"stopping {holder.name} (holds the GPU)")
                stop_record(store, runtimes, holder, STOP_GRACE_S)
            for note in instances.preflight(
                plan, resolved, settings, check_memory=options.check_memory
            ):
                self._emit(name, "note", note)
            return self._launch(plan, options)

    def _launch(self, plan: Plan, options: UpOptions) -> Started:
        name = plan.name
        store, runtimes, settings = self.store, self.runtimes, self.app.settings
        handle: Handle | None = None
        log_path = store.log_path(name)
        store.ensure(store.log_dir)
        key = instances.api_key(plan.profile, os.environ)
        try:
            self._emit(name, "launching", "launching")
            started = time.time()
            handle = instances.launch(
                plan,
                settings,
                runtimes,
                log_path,
                header=f"# orch up {name} at {time.ctime(started)}: {plan.display()}",
            )
            record = make_record(
                plan,
                handle,
                log_path,
                started,
                supervisor_pid=options.supervisor_pid,
                gateway_pid=options.gateway_pid,
            )
            store.save(record)
            self._emit(name, "started", f"started {handle.describe()}, waiting for {plan.endpoint}")
            ready_s = self._wait_ready(plan, handle, options, key)
            self._emit(name, "ready", f"ready in {ready_s:.2f} s", seconds=ready_s)
            _check_cancelled(name, options)
            stats: list[warmup.RequestStats] = []
            if options.warmup and plan.profile.warmup.requests:
                self._emit(name, "warming", "warming up")
                stats = warmup.warm_up(
                    plan.endpoint,
                    plan.profile.warmup,
                    model=instances.model_name(plan),
                    api_key=key,
                    llama=adapter_for(plan.profile.engine).reports_timings,
                )
            self._emit(name, "warm", f"ready at {plan.endpoint}")
            return Started(plan, handle, record, ready_s=ready_s, stats=tuple(stats))
        except BaseException:
            with options.shield():
                self._emit(name, "aborting", "stopping what was started")
                if handle is not None:
                    stop_handle(handle, log_path, STOP_GRACE_S)
                with contextlib.suppress(Exception):
                    instances.stop_leftovers(runtimes, plan, STOP_GRACE_S)
                store.remove(name)
            raise

    def _wait_ready(self, plan: Plan, handle: Handle, options: UpOptions, key: str | None) -> float:
        """Seconds until the engine answered; progress samples go out as ``loading`` events."""
        name = plan.name
        timeout = options.timeout_s or plan.load_timeout_s
        meter = progress.Meter(plan.model_bytes)
        last_sample = 0.0

        def on_poll(elapsed: float, status: int | None) -> None:
            nonlocal last_sample
            _check_cancelled(name, options)
            now = time.monotonic()
            if now - last_sample < options.progress_interval_s:
                return
            last_sample = now
            sample = meter.sample(progress.bytes_loaded(handle.pids()), elapsed)
            seen = f"/health {status}" if status else "no answer yet"
            self._emit(name, "loading", f"loading ({elapsed:.0f} s, {seen})", progress=sample)

        ready = health.wait_ready(
            plan.endpoint,
            deadline_s=timeout,
            alive=handle.alive,
            log_tail=handle.log_tail,
            exit_code=handle.exit_code,
            path=plan.profile.health.path,
            served_name=instances.served_name(plan),
            api_key=key,
            on_poll=on_poll,
            activity=progress.activity_of(handle),
        )
        return ready.seconds

    # ------------------------------------------------------------ stop and watch

    def stop(self, plan: Plan, handle: Handle, grace_s: float = STOP_GRACE_S) -> None:
        """Stop an instance this process started and forget its record."""
        stop_handle(handle, self.store.log_path(plan.name), grace_s)
        self.store.remove(plan.name)

    def down(self, name: str, grace_s: float) -> DownResult:
        """Stop ``name`` under its lock: ``stopped``, ``cleared`` (was dead) or ``missing``.

        Without a record nothing is locked or written (a read-only state folder is fine).
        """
        path = self.store.record_path(name)
        if not (path.is_file() or path.is_symlink()):
            return DownResult(name, "missing")
        with self.store.lock(name):
            try:
                record = self.store.load(name)
            except CorruptRecord as exc:
                self.store.remove(name)
                return DownResult(name, "cleared", f"its record was corrupt ({exc.why})")
            if record is None:
                return DownResult(name, "missing")
            handle = self.runtimes.attach(record)
            if not handle.alive():
                why = gone_reason(handle)
                handle.stop(grace_s)
                self.store.remove(name)
                return DownResult(name, "cleared", why)
            seconds = stop_record(self.store, self.runtimes, record, grace_s)
            return DownResult(name, "stopped", handle.describe(), seconds)

    def watch(
        self,
        plan: Plan,
        handle: Handle,
        period_s: float,
        on_check: Callable[[int | None], None],
    ) -> Iterator[None]:
        """Check the engine every ``period_s``; yields after each check so callers may stop.

        Raises:
            LaunchError: The engine exited (its record is removed first).
        """
        while True:
            time.sleep(period_s)
            if not handle.alive():
                self.store.remove(plan.name)
                tail = handle.log_tail(health.SEARCH_LINES)
                raise LaunchError(health.explain(f"{plan.name}: engine exited", tail))
            on_check(health.probe(plan.endpoint, plan.profile.health.path))
            yield

    def running(self, name: str) -> tuple[Record, Handle] | None:
        """``name``'s instance when one runs that orch provably started (else None)."""
        try:
            record = self.store.load(name)
        except CorruptRecord:
            return None
        if record is None:
            return None
        handle = self.runtimes.attach(record)
        return (record, handle) if handle.alive() else None

    def state_of(self, record: Record, key: str | None) -> dict[str, Any]:
        """A record's live state, as ``orch status --json`` shows it."""
        handle = self.runtimes.attach(record)
        alive = handle.alive()
        row: dict[str, Any] = {
            "name": record.name,
            "runtime": record.runtime,
            "engine": record.engine,
            "state": "running" if alive else "not running",
            "detail": "" if alive else gone_reason(handle),
            "pid": record.pid,
            "container": record.container_name,
            "container_id": record.container_id,
            "endpoint": record.endpoint,
            "port": record.port,
            "plan_hash": record.plan_hash,
            "started_at": record.started_at,
            "uptime_s": round(time.time() - record.started_at, 1) if alive else None,
            "log": str(self.store.log_path(record.name)),
            "started_by": "orch serve" if record.gateway_pid else "orch up",
            "gateway_pid": record.gateway_pid,
        }
        if alive:
            code = health.probe(record.endpoint)
            row["health"] = code
            if code != 200:
                row["state"] = "unhealthy" if code else "not answering"
            row["figures"] = instances.live_figures(record.endpoint, key)
            row["rss_bytes"] = instances.memory_in_use(handle.pids()).rss_bytes
        return row


def _check_cancelled(name: str, options: UpOptions) -> None:
    if options.cancelled():
        raise LaunchError(f"{name}: start cancelled")


@dataclass(frozen=True)
class DownResult:
    """What ``down`` did to one name."""

    name: str
    outcome: Literal["stopped", "cleared", "missing"]
    detail: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
