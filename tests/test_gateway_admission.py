"""Admission and scheduling decisions, with plain numbers (no engines, no HTTP)."""

from __future__ import annotations

from typing import TypeVar

import pytest

from orchestrator.gateway.admission import (
    Admit,
    Candidate,
    Never,
    Resident,
    Room,
    Wait,
    decide,
    place,
)
from orchestrator.gateway.scheduler import Action, Fail, Grant, Load, ModelSpec, Scheduler, Stop

G = 2**30


def cpu(name: str, gib: float, **kw: object) -> Resident:
    return Resident(name, {"CPU": int(gib * G)}, **kw)  # type: ignore[arg-type]


ROOM = Room({"CPU": 10 * G})


@pytest.mark.parametrize(
    ("name", "residents", "need", "expected"),
    [
        ("fits beside", [cpu("a", 4, evictable=True)], 5, Admit(Candidate("", {"CPU": 5 * G}))),
        (
            "lowest priority first",
            [
                cpu("hi", 4, evictable=True, priority=5, last_used=1),
                cpu("lo", 4, evictable=True, priority=0, last_used=9),
            ],
            5,
            Admit(Candidate("", {"CPU": 5 * G}), ("lo",)),
        ),
        (
            "least recently used among equals",
            [
                cpu("new", 4, evictable=True, last_used=9),
                cpu("old", 4, evictable=True, last_used=1),
            ],
            5,
            Admit(Candidate("", {"CPU": 5 * G}), ("old",)),
        ),
        (
            "both go when one is not enough",
            [cpu("a", 4, evictable=True), cpu("b", 4, evictable=True)],
            9,
            Admit(Candidate("", {"CPU": 9 * G}), ("a", "b")),
        ),
        (
            "a victim that turned out unneeded is kept",
            [
                cpu("small", 1, evictable=True, last_used=1),
                cpu("big", 6, evictable=True, last_used=2),
            ],
            6,
            Admit(Candidate("", {"CPU": 6 * G}), ("big",)),
        ),
        (
            "busy and pinned are never stopped",
            [
                cpu("busy", 4, evictable=False, why_kept="busy, 1 request(s)"),
                cpu("pin", 4, evictable=False, why_kept="pinned"),
            ],
            5,
            Wait(
                "waiting for room: held by busy (busy, 1 request(s)), pin (pinned)",
                ("busy", "pin"),
            ),
        ),
        (
            "over budget alone",
            [],
            11,
            Never(
                "does not fit even with nothing else running (CPU: needs 11.00 GiB, "
                "budget 10.00 GiB)"
            ),
        ),
    ],
)
def test_decide_cpu(name: str, residents: list[Resident], need: int, expected: object) -> None:
    assert decide([Candidate("", {"CPU": need * G})], residents, ROOM) == expected, name


def test_live_free_memory_counts_and_victims_free_it() -> None:
    room = Room({"CPU": 10 * G}, {"CPU": 3 * G})  # something outside orch holds RAM
    a = cpu("a", 2, evictable=True)
    assert decide([Candidate("", {"CPU": 3 * G})], [a], room) == Admit(
        Candidate("", {"CPU": 3 * G})
    )
    assert decide([Candidate("", {"CPU": 4 * G})], [a], room) == Admit(
        Candidate("", {"CPU": 4 * G}), ("a",)
    )
    assert isinstance(decide([Candidate("", {"CPU": 6 * G})], [a], room), Wait)


TWO_GPUS = Room({"CPU": 100 * G, "CUDA0": 80 * G, "CUDA1": 80 * G})


def gpu_candidates(gib: float, whole: bool = False) -> list[Candidate]:
    return [
        Candidate(f"CUDA{i}", {"CPU": G, f"CUDA{i}": int(gib * G)}, whole_gpu=whole) for i in (0, 1)
    ]


def test_any_gpu_goes_where_it_fits() -> None:
    on0 = Resident("x", {"CUDA0": 60 * G}, evictable=False)
    decision = decide(gpu_candidates(30), [on0], TWO_GPUS)
    assert isinstance(decision, Admit) and decision.candidate.key == "CUDA1"
    assert not decision.victims


def test_any_gpu_prefers_no_stops_then_the_cheapest() -> None:
    on0 = Resident("x", {"CUDA0": 60 * G}, evictable=True, priority=1)
    on1 = Resident("y", {"CUDA1": 60 * G}, evictable=True, priority=0)
    decision = decide(gpu_candidates(30), [on0, on1], TWO_GPUS)
    assert decision == Admit(gpu_candidates(30)[1], ("y",))


def test_whole_gpu_is_honoured_both_ways() -> None:
    small = Resident("small", {"CUDA0": G}, evictable=False, why_kept="busy")
    decision = decide(gpu_candidates(10, whole=True)[:1], [small], TWO_GPUS)
    assert decision == Wait("waiting for room: held by small (busy)", ("small",))
    holder = Resident("holder", {"CUDA0": G}, evictable=True, whole_gpu=True)
    decision = decide(gpu_candidates(10)[:1], [holder], TWO_GPUS)
    assert decision == Admit(gpu_candidates(10)[0], ("holder",))
    # with two GPUs, the sharer simply goes to the other one
    decision = decide(gpu_candidates(10), [holder], TWO_GPUS)
    assert decision == Admit(gpu_candidates(10)[1])


# ---------------------------------------------------------------- the scheduler


def spec(name: str, gib: float, **kw: object) -> ModelSpec:
    return ModelSpec(name, (Candidate("", {"CPU": int(gib * G)}),), **kw)  # type: ignore[arg-type]


FREE: dict[str, int | None] = {"CPU": None}

T = TypeVar("T")


def one(cls: type[T], actions: list[Action]) -> T:
    assert len(actions) == 1 and isinstance(actions[0], cls), actions
    return actions[0]


def test_loads_then_grants_per_slot_fifo() -> None:
    s = Scheduler([spec("a", 4, slots=2)], {"CPU": 10 * G})
    for rid in (1, 2, 3):
        assert s.submit("a", rid, now=0) is None
    load = one(Load, s.step(1, FREE))
    assert isinstance(load, Load) and load.model == "a"
    assert s.step(2, FREE) == []  # still loading: nobody times out, nobody is granted
    s.loaded("a", load.generation, 3)
    assert s.step(3, FREE) == [Grant(1, "a", load.generation), Grant(2, "a", load.generation)]
    s.release("a", load.generation, 4)
    assert s.step(4, FREE) == [Grant(3, "a", load.generation)]


def test_queue_limit_and_timeout() -> None:
    s = Scheduler([spec("a", 4), spec("b", 8)], {"CPU": 10 * G}, queue_limit=2, max_wait_s=5)
    s.submit("a", 1, 0)
    load = one(Load, s.step(0, FREE))
    s.loaded("a", load.generation, 0)
    assert s.step(0, FREE) == [Grant(1, "a", load.generation)]  # a is busy now
    assert s.submit("b", 2, 1) is None
    assert s.submit("b", 3, 1) is None
    full = s.submit("b", 4, 1)
    assert isinstance(full, Fail) and full.status == 429
    assert s.step(2, FREE) == []  # a is busy: b waits
    timed_out = [f for f in s.step(6.5, FREE) if isinstance(f, Fail)]
    assert [(f.rid, f.status) for f in timed_out] == [(2, 503), (3, 503)]
    assert "a (busy, 1 request(s))" in timed_out[0].message


def test_swap_stops_idle_then_loads() -> None:
    s = Scheduler([spec("a", 4), spec("b", 4), spec("c", 9)], {"CPU": 10 * G})
    gens = {}
    for rid, name in enumerate("ab"):
        s.submit(name, rid, rid)
        load = one(Load, [x for x in s.step(rid, FREE) if isinstance(x, Load)])
        s.loaded(name, load.generation, rid)
        grant = one(Grant, s.step(rid, FREE))
        s.release(name, grant.generation, rid + 0.5)
        gens[name] = load.generation
    assert {m.spec.name: m.state for m in s.models.values()} == {
        "a": "ready",
        "b": "ready",
        "c": "stopped",
    }
    s.submit("c", 10, 5)
    assert s.step(5, FREE) == [Stop("a", "evict"), Stop("b", "evict")]
    assert s.step(5.1, FREE) == []  # stops still under way: the need still counts
    s.stopped("a")
    s.stopped("b")
    load = one(Load, s.step(6, FREE))
    assert isinstance(load, Load) and load.model == "c"


def test_anti_thrash_serves_the_queue_then_drains() -> None:
    s = Scheduler([spec("a", 6), spec("c", 6)], {"CPU": 10 * G}, fairness_s=10)
    s.submit("a", 1, 0)
    load = one(Load, s.step(0, FREE))
    s.loaded("a", load.generation, 0)
    g = load.generation
    assert s.step(0, FREE) == [Grant(1, "a", g)]
    s.submit("c", 2, 1)  # c cannot fit beside a
    s.submit("a", 3, 2)  # a has more work queued
    assert s.step(2, FREE) == []  # a busy: c waits
    s.release("a", g, 3)
    assert s.step(3, FREE) == [Grant(3, "a", g)]  # the queued a request goes first
    s.submit("a", 4, 4)
    s.release("a", g, 5)
    # a's queue keeps it busy, but c has waited 10 s: a takes no new requests
    assert s.step(11, FREE) == [Grant(4, "a", g)] or s.step(11, FREE) == []
    s.submit("a", 5, 11.5)
    actions = s.step(12, FREE)
    assert s.models["a"].draining, actions
    assert not any(isinstance(x, Grant) for x in actions)
    s.release("a", g, 13)
    assert Stop("a", "evict") in s.step(13, FREE)
    s.stopped("a")
    load_c = one(Load, s.step(14, FREE))
    assert isinstance(load_c, Load) and load_c.model == "c"


def test_pinned_loads_first_and_never_stops() -> None:
    s = Scheduler(
        [spec("p", 6, pinned=True), spec("x", 6, idle_ttl_s=1)], {"CPU": 10 * G}, max_wait_s=3
    )
    load = one(Load, s.step(0, FREE))
    assert load == Load("p", spec("p", 6).candidates[0], load.generation)
    s.loaded("p", load.generation, 0)
    s.submit("x", 1, 1)
    assert s.step(100, FREE)[0] == Fail(
        1,
        "x",
        503,
        "timeout_waiting_for_room",
        "x: waited 3 s; waiting for room: held by p (pinned)",
    )
    assert s.models["p"].state == "ready"


def test_idle_ttl_only_for_the_gateways_own() -> None:
    s = Scheduler([spec("a", 2, idle_ttl_s=5), spec("u", 2, idle_ttl_s=5)], {"CPU": 10 * G})
    s.adopt("u", spec("u", 2).candidates[0], "up", 0)
    s.submit("a", 1, 0)
    load = one(Load, s.step(0, FREE))
    s.loaded("a", load.generation, 0)
    grant = one(Grant, s.step(0, FREE))
    s.release("a", grant.generation, 1)
    assert s.step(5.9, FREE) == []
    assert s.step(6.1, FREE) == [Stop("a", "idle")]


def test_never_fits_fails_with_the_reason_and_load_failure_reaches_waiters() -> None:
    s = Scheduler([spec("huge", 11), spec("a", 1)], {"CPU": 10 * G})
    s.submit("huge", 1, 0)
    fail = one(Fail, s.step(0, FREE))
    assert isinstance(fail, Fail) and fail.status == 507 and "needs 11.00 GiB" in fail.message
    s.submit("a", 2, 0)
    s.submit("a", 3, 0)
    load = one(Load, s.step(0, FREE))
    fails = s.load_failed("a", load.generation, 502, "engine_failed", "boom")
    assert [(f.rid, f.status) for f in fails] == [(2, 502), (3, 502)]
    assert s.models["a"].state == "stopped"


def test_stale_release_after_a_restart_is_ignored() -> None:
    s = Scheduler([spec("a", 1, slots=1)], {"CPU": 10 * G})
    s.submit("a", 1, 0)
    load = one(Load, s.step(0, FREE))
    s.loaded("a", load.generation, 0)
    grant = one(Grant, s.step(0, FREE))
    s.stopped("a")  # the engine died mid-request
    s.submit("a", 2, 1)
    load2 = one(Load, s.step(1, FREE))
    s.loaded("a", load2.generation, 1)
    grant2 = one(Grant, s.step(1, FREE))
    s.release("a", grant.generation, 2)  # the old request ends
    assert s.models["a"].inflight == 1  # the new one still counts
    s.release("a", grant2.generation, 2)
    assert s.models["a"].inflight == 0


def test_loading_instances_count_against_live_free_memory() -> None:
    s = Scheduler([spec("a", 4), spec("b", 4)], {"CPU": 10 * G})
    s.submit("a", 1, 0)
    s.submit("b", 2, 0)
    actions = s.step(0, {"CPU": 6 * G})
    assert [type(a).__name__ for a in actions] == ["Load"]  # b must wait for a's memory


def test_grant_now_is_the_grant_a_step_would_make() -> None:
    s = Scheduler([spec("a", 1, slots=2), spec("b", 1)], {"CPU": 10 * G})
    assert s.grant_now("a", 1, 0) is None  # stopped: it must load first
    assert s.deciding_loads() is False  # nobody asked for anything yet
    s.submit("a", 1, 0)
    assert s.deciding_loads() is True and s.pending() is True
    load = one(Load, s.step(0, FREE))
    assert s.deciding_loads() is False  # loading, not waiting to be admitted
    s.loaded("a", load.generation, 0)
    one(Grant, s.step(0, FREE))
    assert s.grant_now("a", 2, 1) == Grant(2, "a", load.generation)  # the second slot
    assert s.grant_now("a", 3, 1) is None  # both slots busy
    s.submit("a", 3, 1)
    s.release("a", load.generation, 2)
    assert s.pending() is True  # request 3 waits: a step must grant it
    assert s.grant_now("a", 4, 2) is None  # FIFO: not ahead of request 3
    assert s.step(2, FREE) == [Grant(3, "a", load.generation)]
    s.release("a", load.generation, 3)
    s.release("a", load.generation, 3)
    assert s.pending() is False  # nothing waits: releases need no step
    s.models["a"].draining = True
    assert s.grant_now("a", 5, 4) is None  # making room for another model
    s.models["a"].draining = False
    s.close()
    assert s.grant_now("a", 6, 5) is None  # shutting down


def test_place_prefers_live_free_memory_over_an_empty_budget() -> None:
    # both budgets are empty, but something orch did not start uses most of GPU 0
    free = Room(TWO_GPUS.capacity, {"CUDA0": 20 * G, "CUDA1": 90 * G, "CPU": 100 * G})
    assert place(gpu_candidates(30), [], free) == gpu_candidates(30)[1]
    # without live figures (--skip-memory-check), the budgets decide: a tie, the lowest GPU
    assert place(gpu_candidates(30), [], TWO_GPUS) == gpu_candidates(30)[0]
    # the one with more room left wins even when both fit
    tight = Room(TWO_GPUS.capacity, {"CUDA0": 50 * G, "CUDA1": 40 * G, "CPU": 100 * G})
    assert place(gpu_candidates(30), [], tight) == gpu_candidates(30)[0]
    # fits nowhere: None, and decide says why it waits
    full = Room(TWO_GPUS.capacity, {"CUDA0": 10 * G, "CUDA1": 10 * G, "CPU": 100 * G})
    assert place(gpu_candidates(30), [], full) is None
    assert decide(gpu_candidates(30), [], full) == Wait(
        "waiting for room: held by live free memory", ()
    )


def test_stops_under_way_count_as_room_coming_so_no_second_victim() -> None:
    """Two fit; a third needs one stopped. While that stop runs, no other is stopped too."""
    s = Scheduler([spec("hi", 4, priority=10), spec("lo", 4), spec("new", 4)], {"CPU": 10 * G})
    for t, name in enumerate(("hi", "new"), start=1):
        s.submit(name, t, t)
        load = one(Load, s.step(t, FREE))
        s.loaded(name, load.generation, t)
        grant = one(Grant, s.step(t, FREE))
        s.release(name, grant.generation, t)
    s.submit("lo", 3, 3)
    assert s.step(3, FREE) == [Stop("new", "evict")]  # priority first, though hi is older
    assert s.step(3.1, FREE) == []  # new still stopping: its memory is coming, hi stays
    assert s.step(3.2, FREE) == []
    assert s.models["lo"].wait_reason == "waiting for new to stop"
    s.stopped("new")
    assert [type(a).__name__ for a in s.step(4, FREE)] == ["Load"]
    assert s.models["hi"].state == "ready"


def test_a_stop_under_way_that_is_not_enough_adds_only_what_is_missing() -> None:
    s = Scheduler([spec("a", 3), spec("b", 3), spec("c", 3), spec("big", 7)], {"CPU": 10 * G})
    for t, name in enumerate(("a", "b", "c"), start=1):
        s.submit(name, t, t)
        load = one(Load, s.step(t, FREE))
        s.loaded(name, load.generation, t)
        grant = one(Grant, s.step(t, FREE))
        s.release(name, grant.generation, t)
    s.models["a"].state = "stopping"  # say, its idle TTL ran out
    s.submit("big", 9, 5)
    assert s.step(5, FREE) == [Stop("b", "evict")]  # a's 3 GiB are coming: b's make 7
    assert s.step(5.1, FREE) == []
