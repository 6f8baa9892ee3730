"""The gateway's decisions: which request runs, which profile loads, which instance stops. Pure.

The scheduler holds no sockets, threads or clocks: callers pass the time and the live free
memory in, and carry out the actions it returns (:class:`Grant`, :class:`Fail`,
:class:`Load`, :class:`Stop`). That keeps every policy here testable with plain numbers:

- a request waits in its model's FIFO queue; the queues together hold at most
  ``queue_limit`` requests, and one more is refused (429);
- a model with waiting requests starts when :func:`admission.decide` admits it, after the
  idle instances it names have stopped; until then its requests wait, at most
  ``max_wait_s`` (then 503), except while their model loads;
- an instance takes at most ``slots`` requests at once (the engine's parallel slots);
- anti-thrash: an instance with queued requests keeps serving them and is not stopped for
  another model, until that model's oldest request has waited ``fairness_s``; then the
  instance takes no new requests, finishes what it holds, and makes room;
- instances the gateway started stop after their idle TTL; pinned ones never stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.gateway.admission import (
    Admit,
    Candidate,
    Never,
    Resident,
    Room,
    Wait,
    decide,
    freed,
)

SHUTTING_DOWN = "the gateway is shutting down"
State = Literal["stopped", "loading", "ready", "stopping"]
Owner = Literal["gateway", "up"]


@dataclass(frozen=True)
class ModelSpec:
    """What the scheduler knows about one served profile."""

    name: str
    candidates: tuple[Candidate, ...]
    slots: int = 1
    priority: int = 0
    pinned: bool = False
    idle_ttl_s: float | None = None
    """Stop after this long unused (None or 0: never)."""
    plan_error: str = ""
    """Why the profile cannot be planned at all (requests get it as an error)."""


@dataclass(frozen=True)
class Grant:
    """Send request ``rid`` to ``model``'s instance (of load ``generation``)."""

    rid: int
    model: str
    generation: int


@dataclass(frozen=True)
class Fail:
    """Answer request ``rid`` with an error."""

    rid: int
    model: str
    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Load:
    """Start ``model`` as ``candidate`` places it."""

    model: str
    candidate: Candidate
    generation: int


@dataclass(frozen=True)
class Stop:
    """Stop ``model``'s instance; ``reason``: evict, idle, unload or shutdown."""

    model: str
    reason: str


Action = Grant | Fail | Load | Stop


@dataclass
class Waiter:
    """A queued request."""

    rid: int
    since: float


@dataclass
class ModelRun:
    """One served model's live state."""

    spec: ModelSpec
    state: State = "stopped"
    owner: Owner = "gateway"
    placed: Candidate | None = None
    inflight: int = 0
    generation: int = 0
    queue: deque[Waiter] = field(default_factory=deque)
    last_used: float = 0.0
    draining: bool = False
    wanted: bool = False
    """A load was asked for without a request (the load endpoint)."""
    unload: bool = False
    wait_reason: str = ""
    last_error: str = ""

    @property
    def demand(self) -> bool:
        """Whether it should be running."""
        return bool(self.queue) or self.wanted or self.spec.pinned

    def resident(self, *, draining_allowed: bool) -> Resident | None:
        """This instance as admission sees it (None when it holds nothing)."""
        if self.state == "stopped" or self.placed is None:
            return None
        idle = self.state == "ready" and self.inflight == 0
        queued = bool(self.queue) and not self.draining
        evictable = idle and not self.spec.pinned and not queued
        if draining_allowed:
            evictable = self.state == "ready" and not self.spec.pinned
        why = ""
        if not evictable:
            if self.spec.pinned:
                why = "pinned"
            elif self.state in ("loading", "stopping"):
                why = self.state
            elif self.inflight:
                why = f"busy, {self.inflight} request(s)"
            else:
                why = f"{len(self.queue)} request(s) queued"
        return Resident(
            self.spec.name,
            self.placed.need,
            evictable,
            self.spec.priority,
            self.last_used,
            self.placed.whole_gpu,
            why,
        )


class Scheduler:
    """Queues, admission, anti-thrash and idle TTL over a set of served models."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        capacity: Mapping[str, int],
        *,
        queue_limit: int = 64,
        max_wait_s: float = 120.0,
        fairness_s: float = 10.0,
    ) -> None:
        """Serve ``specs`` within ``capacity`` (bytes per device, from the budgets)."""
        self.models = {s.name: ModelRun(s) for s in specs}
        self.capacity = dict(capacity)
        self.queue_limit = queue_limit
        self.max_wait_s = max_wait_s
        self.fairness_s = fairness_s
        self.externals: list[Resident] = []
        """Instances started by ``orch up`` that are not served here: they hold memory."""
        self.closing = False
        self._rids: dict[int, str] = {}

    # ------------------------------------------------------------ requests

    def queued(self) -> int:
        """Requests waiting in every queue."""
        return sum(len(m.queue) for m in self.models.values())

    def submit(self, model: str, rid: int, now: float) -> Fail | None:
        """Queue a request; a Fail when the queues are full or the gateway is stopping."""
        run = self.models[model]
        if self.closing:
            return Fail(rid, model, 503, "shutting_down", SHUTTING_DOWN)
        if run.spec.plan_error:
            return Fail(rid, model, 507, "model_does_not_fit", run.spec.plan_error)
        if self.queued() >= self.queue_limit:
            return Fail(
                rid,
                model,
                429,
                "queue_full",
                f"{self.queue_limit} requests are already waiting; retry later",
            )
        run.queue.append(Waiter(rid, now))
        self._rids[rid] = model
        return None

    def grant_now(self, model: str, rid: int, now: float) -> Grant | None:
        """A slot at once, when the instance is ready with one free and nothing queued.

        The hot path: the same grant :meth:`step` would make, without a whole step.
        """
        run = self.models[model]
        if (
            self.closing
            or run.state != "ready"
            or run.draining
            or run.unload
            or run.queue
            or run.inflight >= max(run.spec.slots, 1)
        ):
            return None
        run.inflight += 1
        run.last_used = now
        return Grant(rid, model, run.generation)

    def pending(self) -> bool:
        """Whether a step could do more than stop idle instances (which the ticker does)."""
        return any(
            r.queue or r.unload or r.draining or (r.state == "stopped" and r.demand)
            for r in self.models.values()
        )

    def cancel(self, rid: int) -> None:
        """Forget a queued request (its client went away or gave up)."""
        model = self._rids.pop(rid, None)
        if model is None:
            return
        queue = self.models[model].queue
        for waiter in list(queue):
            if waiter.rid == rid:
                queue.remove(waiter)

    def release(self, model: str, generation: int, now: float) -> None:
        """A granted request finished."""
        run = self.models[model]
        if generation == run.generation and run.inflight > 0:
            run.inflight -= 1
            run.last_used = now

    # ------------------------------------------------------------ instance events

    def loaded(self, model: str, generation: int, now: float) -> None:
        """The load of ``generation`` is ready and warm."""
        run = self.models[model]
        if run.generation == generation and run.state == "loading":
            run.state = "ready"
            run.last_used = now
            run.wanted = False
            run.last_error = ""

    def load_failed(
        self, model: str, generation: int, status: int, code: str, message: str
    ) -> list[Fail]:
        """The load failed: its waiters get the error."""
        run = self.models[model]
        if run.generation != generation:
            return []
        self._reset(run)
        run.wanted = False
        run.last_error = message
        return self._fail_all(run, status, code, message)

    def stopped(self, model: str) -> None:
        """The instance is gone (stopped, or found dead)."""
        self._reset(self.models[model])

    def adopt(self, model: str, candidate: Candidate, owner: Owner, now: float) -> None:
        """An instance that already runs (a killed gateway's, or ``orch up``'s) is ours now."""
        run = self.models[model]
        run.generation += 1
        run.state, run.owner, run.placed, run.last_used = "ready", owner, candidate, now

    def want(self, model: str) -> None:
        """Load ``model`` even without requests (the load endpoint)."""
        self.models[model].wanted = True
        self.models[model].unload = False

    def unwant(self, model: str) -> None:
        """Stop ``model`` once idle (the unload endpoint)."""
        run = self.models[model]
        run.wanted = False
        if run.state in ("ready", "loading"):
            run.unload = True

    def close(self) -> list[Fail]:
        """Shutting down: no more loads; requests that would need one fail."""
        self.closing = True
        out: list[Fail] = []
        for run in self.models.values():
            if run.state != "ready":
                out.extend(self._fail_all(run, 503, "shutting_down", SHUTTING_DOWN))
        return out

    def _reset(self, run: ModelRun) -> None:
        run.generation += 1
        run.state, run.placed, run.inflight = "stopped", None, 0
        run.draining = run.unload = False
        run.owner = "gateway"

    def _fail_all(self, run: ModelRun, status: int, code: str, message: str) -> list[Fail]:
        out = [Fail(w.rid, run.spec.name, status, code, message) for w in run.queue]
        for w in run.queue:
            self._rids.pop(w.rid, None)
        run.queue.clear()
        return out

    # ------------------------------------------------------------ the decisions

    def residents(self, *, draining_allowed: bool = False) -> list[Resident]:
        """Everything holding memory, as admission sees it."""
        out = list(self.externals)
        for run in self.models.values():
            resident = run.resident(draining_allowed=draining_allowed)
            if resident is not None:
                out.append(resident)
        return out

    def deciding_loads(self) -> bool:
        """Whether a stopped model wants to run, so that :meth:`step` needs the free memory.

        Reading it costs a /proc read (and NVML calls on a GPU machine): callers skip it on
        the hot path of a request for a model that already runs.
        """
        return any(r.state == "stopped" and r.demand for r in self.models.values())

    def step(self, now: float, free: Mapping[str, int | None]) -> list[Action]:
        """Everything to do now, given the time and the live free memory per device."""
        actions: list[Action] = []
        actions.extend(self._grants(now))
        actions.extend(self._loads(now, free))
        actions.extend(self._timeouts(now))
        actions.extend(self._idle(now))
        return actions

    def _grants(self, now: float) -> list[Action]:
        out: list[Action] = []
        for run in self.models.values():
            if run.state != "ready" or run.draining or run.unload:
                continue
            while run.queue and run.inflight < max(run.spec.slots, 1):
                waiter = run.queue.popleft()
                self._rids.pop(waiter.rid, None)
                run.inflight += 1
                run.last_used = now
                out.append(Grant(waiter.rid, run.spec.name, run.generation))
        return out

    def _timeouts(self, now: float) -> list[Action]:
        out: list[Action] = []
        for run in self.models.values():
            if run.state == "loading":
                continue  # requests wait for a load; the load has its own deadline
            for waiter in list(run.queue):
                if now - waiter.since < self.max_wait_s:
                    break  # FIFO: the rest came later
                run.queue.remove(waiter)
                self._rids.pop(waiter.rid, None)
                why = run.wait_reason or "all of its slots stayed busy"
                out.append(
                    Fail(
                        waiter.rid,
                        run.spec.name,
                        503,
                        "timeout_waiting_for_room",
                        f"{run.spec.name}: waited {self.max_wait_s:g} s; {why}",
                    )
                )
        return out

    def _live_free(self, free: Mapping[str, int | None]) -> dict[str, int | None]:
        """Live free memory less what loading instances are about to take."""
        out = dict(free)
        for run in self.models.values():
            if run.state == "loading" and run.placed is not None:
                for device, n in run.placed.need.items():
                    if out.get(device) is not None:
                        out[device] = int(out[device] or 0) - n
        return out

    def _loads(self, now: float, free: Mapping[str, int | None]) -> list[Action]:
        out: list[Action] = []
        waiting = [r for r in self.models.values() if r.state == "stopped" and r.demand]
        waiting.sort(key=lambda r: (not r.spec.pinned, r.queue[0].since if r.queue else now))
        for run in waiting:
            if self.closing:
                out.extend(self._fail_all(run, 503, "shutting_down", SHUTTING_DOWN))
                continue
            room = Room(self.capacity, self._live_free(free))
            residents = self.residents()
            decision = decide(run.spec.candidates, residents, room)
            # instances already stopping free their memory soon: count it as coming, so
            # that only what is still missing gets stopped, and nothing twice
            going = [r for r in residents if self._stopping(r.name)]
            staying = [r for r in residents if not self._stopping(r.name)]
            after = room
            for resident in going:
                after = freed(after, resident)
            if going and not (isinstance(decision, Admit) and not decision.victims):
                decision = decide(run.spec.candidates, staying, after)
                if isinstance(decision, Admit) and not decision.victims:
                    names = ", ".join(r.name for r in going)
                    run.wait_reason = f"waiting for {names} to stop"
                    continue
            if isinstance(decision, Never):
                message = f"{run.spec.name}: {decision.reason}"
                run.last_error = message
                run.wanted = False
                out.extend(self._fail_all(run, 507, "model_does_not_fit", message))
            elif isinstance(decision, Admit) and not decision.victims:
                run.generation += 1
                run.state, run.placed, run.owner = "loading", decision.candidate, "gateway"
                run.wait_reason = ""
                out.append(Load(run.spec.name, decision.candidate, run.generation))
            elif isinstance(decision, Admit):
                names = ", ".join(decision.victims)
                run.wait_reason = f"stopping {names} to make room"
                for victim in decision.victims:
                    self.models[victim].state = "stopping"
                    out.append(Stop(victim, "evict"))
            else:
                assert isinstance(decision, Wait)
                run.wait_reason = decision.reason
                oldest = run.queue[0].since if run.queue else now
                if now - oldest >= self.fairness_s:
                    out.extend(self._drain_for(run, after))
        return out

    def _stopping(self, name: str) -> bool:
        run = self.models.get(name)
        return run is not None and run.state == "stopping"

    def _drain_for(self, run: ModelRun, room: Room) -> list[Action]:
        """Anti-thrash bound reached: instances in the way take no new requests.

        ``room`` already counts the memory of the instances that are stopping as free.
        """
        residents = [r for r in self.residents(draining_allowed=True) if not self._stopping(r.name)]
        decision = decide(run.spec.candidates, residents, room)
        out: list[Action] = []
        if isinstance(decision, Admit):
            for victim in decision.victims:
                other = self.models[victim]
                other.draining = True
                if other.state == "ready" and other.inflight == 0:
                    other.state = "stopping"
                    out.append(Stop(victim, "evict"))
            run.wait_reason = f"{', '.join(decision.victims)} finishing its requests to make room"
        return out

    def _idle(self, now: float) -> list[Action]:
        out: list[Action] = []
        for run in self.models.values():
            if run.state != "ready" or run.inflight or run.queue:
                continue
            if run.unload:
                run.state = "stopping"
                out.append(Stop(run.spec.name, "unload"))
                continue
            ttl = run.spec.idle_ttl_s
            if run.spec.pinned or run.owner != "gateway" or not ttl or run.wanted:
                continue
            if now - run.last_used >= ttl:
                run.state = "stopping"
                out.append(Stop(run.spec.name, "idle"))
        return out
