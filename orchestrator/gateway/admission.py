"""Admission by memory: may a profile start now, and what must stop first? Pure.

Every device (each GPU and host RAM) is checked twice: the plans of everything resident
plus the new plan must stay within the hardware profile's budget, and the new plan must fit
in the memory the machine has free now plus what the instances to be stopped would free.
Instances that may be stopped are chosen lowest priority first, then least recently used;
pinned, busy and external ones never are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Need = Mapping[str, int]
"""Bytes per device: ``{"CPU": ..., "CUDA0": ...}``."""


@dataclass(frozen=True)
class Candidate:
    """One way to start a profile: a plan's per-device need (one per GPU for ``gpus = "any"``)."""

    key: str
    need: Need
    whole_gpu: bool = False

    @property
    def gpus(self) -> frozenset[str]:
        """The GPUs it uses."""
        return frozenset(d for d, n in self.need.items() if d != "CPU" and n > 0)


@dataclass(frozen=True)
class Resident:
    """Something that holds memory now: a gateway instance, or one started by ``orch up``."""

    name: str
    need: Need
    evictable: bool
    priority: int = 0
    last_used: float = 0.0
    whole_gpu: bool = False
    why_kept: str = ""
    """Why it cannot be stopped (busy, pinned, started by orch up...), for messages."""

    @property
    def gpus(self) -> frozenset[str]:
        """The GPUs it uses."""
        return frozenset(d for d, n in self.need.items() if d != "CPU" and n > 0)


@dataclass(frozen=True)
class Admit:
    """Start ``candidate`` once ``victims`` (maybe none) have stopped."""

    candidate: Candidate
    victims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wait:
    """Not now: what is in the way cannot be stopped yet."""

    reason: str
    blockers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Never:
    """It cannot fit even with nothing else running."""

    reason: str


Decision = Admit | Wait | Never


@dataclass(frozen=True)
class Room:
    """The devices: budget capacity and live free memory (None: not checked)."""

    capacity: Mapping[str, int]
    free: Mapping[str, int | None] = field(default_factory=dict)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def alone_problems(candidate: Candidate, room: Room) -> list[str]:
    """Devices on which the candidate is over budget with nothing else running."""
    out = []
    for device, need in candidate.need.items():
        capacity = room.capacity.get(device)
        if capacity is None:
            out.append(f"{device}: not in the hardware profile")
        elif need > capacity:
            out.append(f"{device}: needs {_gib(need)}, budget {_gib(capacity)}")
    return out


def shortfall(candidate: Candidate, residents: Sequence[Resident], room: Room) -> dict[str, int]:
    """Bytes missing per device for ``candidate`` next to ``residents`` (empty: it fits)."""
    short: dict[str, int] = {}
    for device, need in candidate.need.items():
        if need <= 0:
            continue
        used = sum(r.need.get(device, 0) for r in residents)
        capacity = room.capacity.get(device, 0)
        over = used + need - capacity
        free = room.free.get(device)
        if free is not None:
            # what stopping the others (not resident any more) frees is already counted out
            over = max(over, need - free)
        if over > 0:
            short[device] = over
    return short


def whole_gpu_conflicts(candidate: Candidate, residents: Sequence[Resident]) -> list[Resident]:
    """Residents that share a GPU with the candidate where either wants it whole."""
    return [
        r for r in residents if candidate.gpus & r.gpus and (candidate.whole_gpu or r.whole_gpu)
    ]


def _fits(candidate: Candidate, residents: Sequence[Resident], room: Room) -> bool:
    return not shortfall(candidate, residents, room) and not whole_gpu_conflicts(
        candidate, residents
    )


def _victims_for(
    candidate: Candidate, residents: Sequence[Resident], room: Room
) -> tuple[str, ...] | None:
    """The fewest evictable residents (cheapest first) whose stopping lets it fit, or None."""
    order = sorted(
        (r for r in residents if r.evictable), key=lambda r: (r.priority, r.last_used, r.name)
    )
    staying = list(residents)
    chosen: list[Resident] = []
    adjusted = Room(room.capacity, dict(room.free))
    for victim in order:
        if _fits(candidate, staying, adjusted):
            break
        short = shortfall(candidate, staying, adjusted)
        conflicts = whole_gpu_conflicts(candidate, staying)
        helps = victim in conflicts or any(victim.need.get(d, 0) > 0 for d in short)
        if not helps:
            continue
        staying.remove(victim)
        chosen.append(victim)
        adjusted = freed(adjusted, victim)
    if not _fits(candidate, staying, adjusted):
        return None
    # drop victims that turned out not to be needed (a later one freed enough)
    for victim in list(reversed(chosen)):
        trial = [v for v in chosen if v is not victim]
        room_trial = room
        for v in trial:
            room_trial = freed(room_trial, v)
        if _fits(candidate, [r for r in residents if r not in trial], room_trial):
            chosen = trial
    return tuple(v.name for v in chosen)


def freed(room: Room, victim: Resident) -> Room:
    """The room once ``victim`` has stopped: its plan's bytes count as free again."""
    free = dict(room.free)
    for device, n in victim.need.items():
        if free.get(device) is not None:
            free[device] = int(free[device] or 0) + n
    return Room(room.capacity, free)


def place(
    candidates: Sequence[Candidate], residents: Sequence[Resident], room: Room
) -> Candidate | None:
    """Where a profile starts without stopping anything, or None where it cannot.

    The placement rule of both ``orch up`` and ``orch serve``: among the candidates that
    fit (every device's budget, the live free memory where known, whole-GPU holders), the
    one that leaves the most room on its GPUs, so ``gpus = "any"`` profiles spread out;
    on a tie, the lowest GPU.
    """
    fitting = [c for c in candidates if not alone_problems(c, room) and _fits(c, residents, room)]
    return max(fitting, key=lambda c: _spare(c, residents, room), default=None)


def decide(candidates: Sequence[Candidate], residents: Sequence[Resident], room: Room) -> Decision:
    """Admit a candidate (by :func:`place`, else the fewest, cheapest stops), wait, or never."""
    possible = [c for c in candidates if not alone_problems(c, room)]
    if not possible:
        problems = "; ".join(p for c in candidates for p in alone_problems(c, room))
        return Never(f"does not fit even with nothing else running ({problems})")
    placed = place(possible, residents, room)
    if placed is not None:
        return Admit(placed)
    best: tuple[tuple[int, int, float], Candidate, tuple[str, ...]] | None = None
    by_name = {r.name: r for r in residents}
    for candidate in possible:
        victims = _victims_for(candidate, residents, room)
        if victims is None:
            continue
        cost = (
            len(victims),
            sum(by_name[v].priority for v in victims),
            -max((by_name[v].last_used for v in victims), default=0.0),
        )
        if best is None or cost < best[0]:
            best = (cost, candidate, victims)
    if best is not None:
        return Admit(best[1], best[2])
    blockers = _blockers(possible, residents, room)
    why = ", ".join(f"{r.name} ({r.why_kept or 'in use'})" for r in blockers) or "live free memory"
    return Wait(f"waiting for room: held by {why}", tuple(r.name for r in blockers))


def _spare(candidate: Candidate, residents: Sequence[Resident], room: Room) -> int:
    """The least room left on the candidate's GPUs (all its devices without one), once it runs.

    Room left is the budget left, or the live free memory left where that is known and
    smaller: a GPU whose budget looks empty may be in use by something orch did not start.
    """
    spare = []
    for device in sorted(candidate.gpus) or list(candidate.need):
        need = candidate.need.get(device, 0)
        left = room.capacity.get(device, 0) - sum(r.need.get(device, 0) for r in residents) - need
        free = room.free.get(device)
        if free is not None:
            left = min(left, free - need)
        spare.append(left)
    return min(spare, default=0)


def _blockers(
    candidates: Sequence[Candidate], residents: Sequence[Resident], room: Room
) -> list[Resident]:
    """Non-evictable residents on the devices where the candidates fall short."""
    devices: set[str] = set()
    for c in candidates:
        devices |= set(shortfall(c, residents, room))
        devices |= {d for r in whole_gpu_conflicts(c, residents) for d in r.gpus}
    return [r for r in residents if not r.evictable and any(r.need.get(d, 0) for d in devices)]
