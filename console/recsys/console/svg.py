"""Server-side SVG plots: an interval look by look against zero, and a time series.

Why SVG strings: the pages must work offline and without JavaScript, and a plot is a few dozen shapes.
Each plot is a self-contained ``<svg role="img">`` with a ``<title>`` (read by screen readers) and
``<title>`` tooltips on every look. Shapes carry class names (``cs-band``, ``cs-estimate``, ``cs-look``,
``cs-zero``, ``ts-line``) that the browser tests look for; colours are presentation attributes, so a
plot also renders when saved on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

BAND = "#9ec5e8"
LINE = "#1f5f99"
ZERO = "#222"
MARGIN = "#888"
STOP = "#b3261e"
GRID = "#e4e4e4"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.001:
        return f"{v:.2g}"
    return f"{v:.4g}"


class _Frame:
    """Maps data coordinates to pixels inside the plot area."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.left, self.right, self.top, self.bottom = 62, width - 12, 12, height - 36
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return round(self.left + (v - self.x0) / span * (self.right - self.left), 1)

    def y(self, v: float) -> float:
        v = min(max(v, self.y0), self.y1)
        span = (self.y1 - self.y0) or 1.0
        return round(self.bottom - (v - self.y0) / span * (self.bottom - self.top), 1)


def _open(width: int, height: int, title: str, css_class: str) -> list[str]:
    return [f'<svg class="{css_class}" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
            f"<title>{escape(title)}</title>"]


def _y_axis(f: _Frame, ticks: list[float], label: str) -> list[str]:
    out = []
    for t in ticks:
        y = f.y(t)
        out.append(f'<line x1="{f.left}" x2="{f.right}" y1="{y}" y2="{y}" stroke="{GRID}"/>')
        out.append(f'<text x="{f.left - 6}" y="{y + 4}" text-anchor="end" fill="#444">{escape(fmt(t))}</text>')
    mid = (f.top + f.bottom) / 2
    out.append(f'<text x="12" y="{mid}" transform="rotate(-90 12 {mid})" text-anchor="middle" fill="#444">'
               f"{escape(label)}</text>")
    return out


def empty_plot(message: str, width: int = 640, height: int = 120) -> str:
    parts = _open(width, height, message, "plot plot-empty")
    parts.append(f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="{GRID}"/>')
    parts.append(f'<text x="{width / 2}" y="{height / 2 + 4}" text-anchor="middle" fill="#555">'
                 f"{escape(message)}</text>")
    return "".join(parts) + "</svg>"


def interval_plot(estimate: Sequence[float], lower: Sequence[float], upper: Sequence[float], *,
                  look_labels: Sequence[str], title: str, y_label: str, margin: float | None = None,
                  stop_index: int | None = None, width: int = 640, height: int = 240) -> str:
    """The interval of each look (band + whisker), the estimate through the looks, zero and the margin."""
    n = len(estimate)
    if n == 0:
        return empty_plot("no looks yet: " + title, width)
    values = _finite([*estimate, *lower, *upper, 0.0, *((margin, -margin) if margin else ())])
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.01
    f = _Frame(width, height, (0.5, n + 0.5), (lo - pad, hi + pad))
    parts = _open(width, height, title, "plot interval-plot")
    parts += _y_axis(f, nice_ticks(lo - pad, hi + pad), y_label)

    def bound(v: float, default: float) -> float:
        return float(v) if v is not None and math.isfinite(float(v)) else default

    ups = [bound(u, f.y1) for u in upper]
    downs = [bound(d, f.y0) for d in lower]
    if n > 1:
        pts = [f"{f.x(i + 1)},{f.y(u)}" for i, u in enumerate(ups)]
        pts += [f"{f.x(i + 1)},{f.y(d)}" for i, d in reversed(list(enumerate(downs)))]
        parts.append(f'<polygon class="cs-band" points="{" ".join(pts)}" fill="{BAND}" fill-opacity="0.55"/>')
    if margin:
        for m in (margin, -margin):
            parts.append(f'<line class="cs-margin" x1="{f.left}" x2="{f.right}" y1="{f.y(m)}" y2="{f.y(m)}" '
                         f'stroke="{MARGIN}" stroke-dasharray="5 4"/>')
    parts.append(f'<line class="cs-zero" x1="{f.left}" x2="{f.right}" y1="{f.y(0)}" y2="{f.y(0)}" '
                 f'stroke="{ZERO}" stroke-width="1.2"/>')
    est_pts = [(f.x(i + 1), f.y(e)) for i, e in enumerate(estimate) if e is not None and math.isfinite(float(e))]
    if len(est_pts) > 1:
        parts.append(f'<polyline class="cs-estimate" points="{" ".join(f"{x},{y}" for x, y in est_pts)}" '
                     f'fill="none" stroke="{LINE}" stroke-width="1.8"/>')
    for i in range(n):
        x = f.x(i + 1)
        tip = (f"{look_labels[i] if i < len(look_labels) else f'look {i + 1}'}: estimate {fmt(float(estimate[i]))} "
               f"[{fmt(float(lower[i]))}, {fmt(float(upper[i]))}]")
        parts.append(f'<g class="cs-look"><title>{escape(tip)}</title>'
                     f'<line x1="{x}" x2="{x}" y1="{f.y(ups[i])}" y2="{f.y(downs[i])}" stroke="{LINE}"/>'
                     f'<circle cx="{x}" cy="{f.y(bound(estimate[i], 0.0))}" r="3.2" fill="{LINE}"/></g>')
    if stop_index is not None and 0 <= stop_index < n:
        x = f.x(stop_index + 1)
        parts.append(f'<line class="cs-stop" x1="{x}" x2="{x}" y1="{f.top}" y2="{f.bottom}" stroke="{STOP}" '
                     f'stroke-dasharray="2 3"><title>decision reached at look {stop_index + 1}</title></line>')
    parts.append(_legend(f.right, stop_index is not None and 0 <= stop_index < n))
    step = max(1, math.ceil(n / 12))
    for i in range(0, n, step):
        parts.append(f'<text x="{f.x(i + 1)}" y="{f.bottom + 15}" text-anchor="middle" fill="#444">{i + 1}</text>')
    parts.append(f'<text x="{(f.left + f.right) / 2}" y="{height - 4}" text-anchor="middle" fill="#444">look</text>')
    return "".join(parts) + "</svg>"


def _legend(right: float, with_stop: bool) -> str:
    """A small key in the top-right corner: band, estimate and (when drawn) the decision marker."""
    x = right - (238 if with_stop else 150)
    out = [f'<g class="legend" font-size="10" fill="#444"><rect x="{x - 6}" y="4" width="{right - x + 4}" height="18" '
           f'fill="#fff" fill-opacity="0.85"/>',
           f'<rect x="{x}" y="8" width="14" height="10" fill="{BAND}"/><text x="{x + 18}" y="17">interval</text>',
           f'<line x1="{x + 68}" x2="{x + 84}" y1="13" y2="13" stroke="{LINE}" stroke-width="1.8"/>'
           f'<text x="{x + 88}" y="17">estimate</text>']
    if with_stop:
        out.append(f'<line x1="{x + 146}" x2="{x + 146}" y1="7" y2="19" stroke="{STOP}" stroke-dasharray="2 2"/>'
                   f'<text x="{x + 151}" y="17">decision reached</text>')
    return "".join(out) + "</g>"


def time_series_plot(seconds_ago: Sequence[float], values: Sequence[float | None], *, title: str, y_label: str,
                     width: int = 460, height: int = 180) -> str:
    """A line over the last scrapes (x: seconds before now)."""
    pts = [(float(t), float(v)) for t, v in zip(seconds_ago, values, strict=True)
           if v is not None and math.isfinite(float(v))]
    if len(pts) < 2:
        return empty_plot(f"{title}: collecting (needs two scrapes)", width, 80)
    x_max = max(t for t, _ in pts) or 1.0
    ys = [v for _, v in pts]
    lo, hi = min(0.0, min(ys)), max(ys)
    hi = hi if hi > lo else lo + 1.0
    f = _Frame(width, height, (-x_max, 0.0), (lo, hi * 1.08))
    parts = _open(width, height, title, "plot ts-plot")
    parts += _y_axis(f, nice_ticks(lo, hi * 1.08, 4), y_label)
    line = " ".join(f"{f.x(-t)},{f.y(v)}" for t, v in sorted(pts, key=lambda p: -p[0]))
    parts.append(f'<polyline class="ts-line" points="{line}" fill="none" stroke="{LINE}" stroke-width="1.6"/>')
    for t in nice_ticks(0.0, x_max, 4):
        parts.append(f'<text x="{f.x(-t)}" y="{f.bottom + 15}" text-anchor="middle" fill="#444">'
                     f'{"now" if t == 0 else f"-{fmt(t)} s"}</text>')
    return "".join(parts) + "</svg>"


def ci_bars(rows: Sequence[tuple[str, float, float, float]], *, title: str, width: int = 460) -> str:
    """A forest plot: one horizontal interval per row (label, estimate, lower, upper) against zero."""
    rows = [r for r in rows if all(math.isfinite(float(x)) for x in r[1:])]
    if not rows:
        return empty_plot(f"{title}: no interval recorded", width, 60)
    height = 28 + 26 * len(rows)
    values = [0.0, *(float(x) for r in rows for x in r[1:])]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.01
    left, right = 130, width - 16
    span = (hi - lo + 2 * pad) or 1.0

    def x(v: float) -> float:
        return round(left + (v - lo + pad) / span * (right - left), 1)

    parts = _open(width, height, title, "plot ci-plot")
    parts.append(f'<line class="cs-zero" x1="{x(0)}" x2="{x(0)}" y1="6" y2="{height - 20}" stroke="{ZERO}"/>')
    for i, (label, est, low, up) in enumerate(rows):
        y = 18 + 26 * i
        colour = LINE if (low > 0 or up < 0) else MARGIN
        parts.append(f'<g class="ci-row"><title>{escape(f"{label}: {fmt(est)} [{fmt(low)}, {fmt(up)}]")}</title>'
                     f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" fill="#333">{escape(label)}</text>'
                     f'<line x1="{x(low)}" x2="{x(up)}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="3"/>'
                     f'<circle cx="{x(est)}" cy="{y}" r="4" fill="{colour}"/></g>')
    for t in nice_ticks(lo - pad, hi + pad, 4):
        parts.append(f'<text x="{x(t)}" y="{height - 6}" text-anchor="middle" fill="#444">{escape(fmt(t))}</text>')
    return "".join(parts) + "</svg>"
