"""The depth sweep as a picture: an SVG file, and bars for the terminal.

Pure: rows in, text out. The x axis is the context depth (prompt tokens the engine
processed) on a log scale, because a sweep doubles its depth at every step; each panel's y
axis starts at zero, so a drop reads as the share of speed it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from orchestrator.bench.ledger import RunRow

WIDTH = 820
PANEL_HEIGHT = 250
LEFT = 84
RIGHT = 28
TOP = 78
GAP = 86
BOTTOM = 62
TG_COLOUR = "#1f6fb2"
PP_COLOUR = "#c0561b"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def tokens_label(tokens: float) -> str:
    """512, 1K, 16K, 1M: how people say context sizes."""
    if tokens >= 1024 * 1024 and tokens % (1024 * 1024) == 0:
        return f"{int(tokens) // (1024 * 1024)}M"
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{int(tokens) // 1024}K"
    return f"{int(tokens)}"


def nice_ceiling(value: float) -> tuple[float, float]:
    """An axis top at or above ``value`` and a tick step: 1, 2, 2.5 or 5 times a power of 10."""
    if value <= 0:
        return 1.0, 0.25
    raw_step = value / 5
    power = 10 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw_step)
    return step * math.ceil(value / step - 1e-9), step


def value_label(value: float) -> str:
    """A tok/s figure with as many decimals as its size needs."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class _XScale:
    low: float
    high: float
    left: float
    right: float

    def __call__(self, tokens: float) -> float:
        if self.high <= self.low:
            return (self.left + self.right) / 2
        share = (math.log2(max(tokens, 1)) - math.log2(self.low)) / (
            math.log2(self.high) - math.log2(self.low)
        )
        return self.left + share * (self.right - self.left)


def _x_ticks(rows: Sequence[RunRow], xscale: _XScale) -> list[tuple[float, str]]:
    """A tick under each point, labelled with the depth the sweep asked for.

    The points sit at the prompt tokens the engine counted (chat template included), so
    "0" marks the shortest prompt a request can have. A label closer than 30 px to the one
    before it is left out.
    """
    ticks: list[tuple[float, str]] = []
    for row in sorted(rows, key=lambda r: r.prompt_tokens):
        x = xscale(max(row.prompt_tokens, 1))
        if ticks and x - ticks[-1][0] < 30:
            continue
        ticks.append((x, tokens_label(row.requested_tokens)))
    return ticks


def tick_label(value: float, step: float) -> str:
    """A y-axis tick: whole numbers when the step is, else as few decimals as it needs."""
    return f"{value:,.0f}" if step >= 1 else f"{value:g}"


def _text(x: float, y: float, text: str, **attrs: str | float) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def _panel(
    rows: Sequence[RunRow],
    values: Sequence[float],
    *,
    top: float,
    xscale: _XScale,
    x_ticks: Sequence[tuple[float, str]],
    y_title: str,
    colour: str,
) -> list[str]:
    bottom = top + PANEL_HEIGHT
    y_top, y_step = nice_ceiling(max(values) * 1.12 if values else 1.0)

    def y(value: float) -> float:
        return bottom - value / y_top * PANEL_HEIGHT

    out = [f'<g class="panel" data-metric="{escape(y_title)}">']
    ticks = int(round(y_top / y_step))
    for i in range(ticks + 1):
        value = i * y_step
        out.append(
            f'<line x1="{xscale.left}" x2="{xscale.right}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#e3e3e3" stroke-width="1"/>'
        )
        out.append(
            _text(
                xscale.left - 8,
                y(value) + 4,
                tick_label(value, y_step),
                text_anchor="end",
                fill="#444",
            )
        )
    for x, label in x_ticks:
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" '
            f'stroke="#f0f0f0" stroke-width="1"/>'
        )
        out.append(_text(x, bottom + 18, label, text_anchor="middle"))
    out.append(
        f'<line x1="{xscale.left}" x2="{xscale.right}" y1="{bottom}" y2="{bottom}" '
        f'stroke="#333" stroke-width="1.2"/>'
    )
    out.append(
        f'<line x1="{xscale.left}" x2="{xscale.left}" y1="{top}" y2="{bottom}" '
        f'stroke="#333" stroke-width="1.2"/>'
    )
    middle = top + PANEL_HEIGHT / 2
    out.append(
        _text(
            22,
            middle,
            y_title,
            text_anchor="middle",
            transform=f"rotate(-90 22 {middle:.1f})",
            font_weight="bold",
            fill=colour,
        )
    )
    points = [(xscale(r.prompt_tokens), y(v)) for r, v in zip(rows, values, strict=True)]
    if len(points) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
    for (px, py), value in zip(points, values, strict=True):
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{colour}"/>')
        out.append(_text(px, py - 10, value_label(value), text_anchor="middle", fill=colour))
    out.append("</g>")
    return out


def _wrap(text: str, width: int) -> list[str]:
    """Split at " · " so that no line is longer than ``width`` characters (where it can)."""
    lines: list[str] = []
    for part in text.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def sweep_svg(rows: Sequence[RunRow], *, title: str, subtitle: str, note: str = "") -> str:
    """Two panels over context depth: generation (TG) tok/s above, prompt (PP) tok/s below."""
    sub_lines = _wrap(subtitle, (WIDTH - LEFT - RIGHT) // 7)
    top = TOP + 18 * (len(sub_lines) - 1)
    height = top + 2 * PANEL_HEIGHT + GAP + BOTTOM + (18 if note else 0)
    depths = [max(r.prompt_tokens, 1) for r in rows] or [1]
    xscale = _XScale(min(depths), max(depths), LEFT + 18, WIDTH - RIGHT - 18)
    ticks = _x_ticks(rows, xscale)
    x_title = "context depth: tokens in the prompt before generation (log scale)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}" font-size="13">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        _text(LEFT, 30, title, font_size=18, font_weight="bold"),
    ]
    parts += [_text(LEFT, 52 + 18 * i, line, fill="#555") for i, line in enumerate(sub_lines)]
    panels = (
        ("generation (TG) tok/s", [r.tg_tps for r in rows], TG_COLOUR),
        ("prompt processing (PP) tok/s", [r.pp_tps for r in rows], PP_COLOUR),
    )
    for index, (y_title, values, colour) in enumerate(panels):
        panel_top = top + index * (PANEL_HEIGHT + GAP)
        parts += _panel(
            rows,
            values,
            top=panel_top,
            xscale=xscale,
            x_ticks=ticks,
            y_title=y_title,
            colour=colour,
        )
        parts.append(
            _text(
                (LEFT + WIDTH - RIGHT) / 2,
                panel_top + PANEL_HEIGHT + 40,
                x_title,
                text_anchor="middle",
            )
        )
    if note:
        parts.append(_text(LEFT, height - 14, note, fill="#8a1c1c"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def bars(rows: Sequence[RunRow], width: int = 24) -> list[str]:
    """One line per depth: TG and PP as bars scaled to their largest value."""
    if not rows:
        return []
    tg_max = max(r.tg_tps for r in rows) or 1.0
    pp_max = max(r.pp_tps for r in rows) or 1.0

    def bar(value: float, top: float) -> str:
        eighths = round(value / top * width * 8)
        full, rest = divmod(eighths, 8)
        return ("█" * full + ("▏▎▍▌▋▊▉"[rest - 1] if rest else "")).ljust(width)

    lines = [f"{'depth':>7}  {'TG tok/s':<{width + 8}}  PP tok/s"]
    for r in rows:
        tg = f"{bar(r.tg_tps, tg_max)} {value_label(r.tg_tps):>7}"
        pp = f"{bar(r.pp_tps, pp_max)} {value_label(r.pp_tps):>7}"
        lines.append(f"{tokens_label(r.requested_tokens):>7}  {tg}  {pp}")
    return lines
