"""Tables that fit the terminal: 80 columns (a pipe's width), or one line per row.

Rich wraps a cell that does not fit, which splits every row of a piped log over several
lines. These tables keep their cells short (one unit for a whole memory table, given in the
title), and where even that does not fit the console, they are printed as plain lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from orchestrator.memory.breakdown import GIB, MIB, MemoryEstimate
from orchestrator.sizing import DeviceBudget


def unit_for(values: Sequence[int]) -> tuple[str, int]:
    """``("GiB", GIB)`` when any value reaches 1 GiB, else ``("MiB", MIB)``."""
    return ("GiB", GIB) if any(v >= GIB for v in values) else ("MiB", MIB)


def amount(value: int, unit: tuple[str, int]) -> str:
    """``value`` in ``unit``: two decimals for GiB, whole MiB."""
    name, size = unit
    return f"{value / size:.2f}" if name == "GiB" else f"{value / size:.0f}"


def plain_table(title: str | None, columns: Sequence[str], right_from: int = 1) -> Table:
    """A borderless table: a header, a rule, the rows; columns from ``right_from`` right-aligned."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
    )
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i >= right_from else "left", no_wrap=True)
    return table


def print_table(console: Console, table: Table, rows: Sequence[Sequence[str]]) -> None:
    """Print ``table``, or, when it is wider than the console, one line per row.

    ``rows`` are the table's cells, the first one naming the row; each line is
    ``FIRST: column value, column value, ...``.
    """
    unbounded = console.options.update_width(1_000_000)
    width = Measurement.get(console, unbounded, table).maximum
    if width <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(str(table.title), markup=False)
    headers = [str(c.header) for c in table.columns]
    for row in rows:
        cells = ", ".join(f"{h} {v}" for h, v in zip(headers[1:], row[1:], strict=True))
        console.print(f"  {row[0]}: {cells}", markup=False)


MEMORY_COLUMNS = ("device", "weights", "kv", "compute", "overhead", "total", "budget", "fits")


def memory_rows(
    memory: MemoryEstimate, budgets: Sequence[DeviceBudget], unit: tuple[str, int]
) -> list[list[str]]:
    """One row per device: the four parts, the total, the budget and whether it fits."""
    caps = {b.device: b for b in budgets}
    rows = []
    for device, mem in memory.devices.items():
        budget = caps.get(device)
        if budget is None:
            capacity = fits = "-"
        else:
            capacity = amount(budget.capacity, unit)
            fits = "yes" if budget.fits else f"NO +{amount(budget.over_by, unit)}"
        rows.append(
            [
                device,
                amount(mem.weights, unit),
                amount(mem.kv, unit),
                amount(mem.compute, unit),
                amount(mem.overhead, unit),
                amount(mem.total, unit),
                capacity,
                fits,
            ]
        )
    return rows


def print_memory(
    console: Console, title: str, memory: MemoryEstimate, budgets: Sequence[DeviceBudget]
) -> None:
    """The per-device memory table, in one unit for all its figures (named in the title)."""
    unit = unit_for([m.total for m in memory.devices.values()])
    table = plain_table(f"{title} ({unit[0]})", MEMORY_COLUMNS)
    rows = memory_rows(memory, budgets, unit)
    for row in rows:
        table.add_row(*row)
    print_table(console, table, rows)
