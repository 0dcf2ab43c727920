"""The report's stylesheet: readable on screen, printable on A4/Letter, no web fonts or assets."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
:root { --bad: #b00020; --warn: #8a5a00; --ok: #1b6e3a; --info: #2f4f6f; --line: #d0d4da;
  --muted: #5b6470; --bg-soft: #f5f7fa; }
* { box-sizing: border-box; }
html { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; font-size: 15px;
  color: #1d232b; background: #fff; line-height: 1.45; }
body { margin: 0 auto; max-width: 1120px; padding: 24px 32px 48px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.02rem; margin: 18px 0 6px; }
p { margin: 6px 0; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.banner { border: 3px solid var(--bad); background: #fdecee; color: var(--bad);
  padding: 12px 16px; margin: 12px 0 18px; font-weight: bold; font-size: 1.05rem; }
.banner small { display: block; font-weight: normal; color: #5a0010; margin-top: 4px; }
ul.findings { list-style: none; padding: 0; margin: 8px 0 16px; }
ul.findings li { padding: 7px 12px 7px 14px; margin: 5px 0; border-left: 6px solid var(--line);
  background: var(--bg-soft); }
ul.findings li .lvl { display: inline-block; min-width: 7.5em; margin-right: 6px; font-weight: bold;
  font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
li.bad { border-left-color: var(--bad) !important; color: var(--bad);
  background: #fdecee !important; }
li.warn { border-left-color: #d08a00 !important; color: var(--warn);
  background: #fff6e5 !important; }
li.ok { border-left-color: var(--ok) !important; color: var(--ok); }
li.info { border-left-color: var(--info) !important; color: var(--info); }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 8px;
  margin: 10px 0; }
.fact { border: 1px solid var(--line); padding: 8px 10px; background: #fff; }
.fact b { display: block; font-size: 1.15rem; }
.fact span { color: var(--muted); font-size: .85rem; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 14px; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left;
  vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: .82rem;
  word-break: break-all; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
figure { margin: 0; border: 1px solid var(--line); padding: 8px; background: #fff; }
figcaption { color: var(--muted); font-size: .82rem; margin-top: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-family: inherit; fill: #1d232b; }
svg.chart .chart-title { font-weight: 600; font-size: 13px; }
svg.chart .tick, svg.chart .legend { font-size: 11px; fill: #3b434d; }
svg.chart .axis-label { font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: #e6e9ee; stroke-width: 1; }
svg.chart .axis { stroke: #5b6470; stroke-width: 1; }
svg.chart .cap { stroke: var(--bad); stroke-width: 1.6; stroke-dasharray: 7 4; }
svg.chart .cap-label { fill: var(--bad); font-size: 11px; font-weight: 600; }
svg.chart .near { stroke: #d08a00; stroke-width: 1; stroke-dasharray: 3 3; }
svg.chart .near-label { fill: var(--warn); font-size: 10px; }
svg.chart .no-data { fill: var(--muted); font-size: 13px; }
table.grid td.cell { text-align: center; font-size: .8rem; white-space: nowrap; }
.trained { background: #dff3e4; color: #14532d; }
.refused { background: #fde2e4; color: var(--bad); font-weight: 600; }
.dropped { background: #fff1cc; color: var(--warn); font-weight: 600; }
.not-selected { background: #f1f2f4; color: #6b7280; }
.key span { display: inline-block; padding: 2px 10px; margin-right: 6px; font-size: .8rem;
  border: 1px solid var(--line); }
dl.manifest { display: grid; grid-template-columns: minmax(180px, 240px) 1fr; gap: 4px 16px;
  margin: 8px 0; }
dl.manifest dt { font-weight: 600; color: #333b45; }
dl.manifest dd { margin: 0; }
.status-intact { color: var(--ok); font-weight: bold; }
.status-tampered, .status-unverifiable { color: var(--bad); font-weight: bold; }
.status-absent { color: var(--warn); font-weight: bold; }
.muted { color: var(--muted); }
footer { margin-top: 36px; color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line);
  padding-top: 8px; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  html { font-size: 10.5pt; }
  body { max-width: none; padding: 0; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, table, .banner, ul.findings li, dl.manifest { break-inside: avoid;
    page-break-inside: avoid; }
  .charts { grid-template-columns: 1fr 1fr; }
  a { color: inherit; text-decoration: none; }
}
"""
