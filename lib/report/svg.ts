// svg.ts: small self-contained SVG charts for reports (accuracy vs MACs, speedup vs density): points and lines
// on linear axes with ticks, labels and a legend. No dependencies; the output opens in any browser.

export interface ChartPoint {
  x: number;
  y: number;
  label?: string;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
  /** draw a line through the points (otherwise markers only) */
  line?: boolean;
  dashed?: boolean;
  color?: string;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  width?: number;
  height?: number;
  xMin?: number;
  xMax?: number;
  yMin?: number;
  yMax?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#7f7f7f'];

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** "Nice" tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function formatTick(v: number): string {
  if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(6)));
}

export function renderChart(o: ChartOptions): string {
  const W = o.width ?? 640;
  const H = o.height ?? 420;
  const m = { left: 70, right: 170, top: 40, bottom: 55 };
  const all = o.series.flatMap((s) => s.points);
  const pad = (lo: number, hi: number) => (hi > lo ? (hi - lo) * 0.06 : Math.abs(lo) * 0.1 + 1);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  let x0 = o.xMin ?? Math.min(...xs);
  let x1 = o.xMax ?? Math.max(...xs);
  let y0 = o.yMin ?? Math.min(...ys);
  let y1 = o.yMax ?? Math.max(...ys);
  if (o.xMin === undefined) x0 -= pad(x0, x1);
  if (o.xMax === undefined) x1 += pad(x0, x1);
  if (o.yMin === undefined) y0 -= pad(y0, y1);
  if (o.yMax === undefined) y1 += pad(y0, y1);
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2 - m.right / 2 + m.left / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(o.title)}</text>`);
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<line x1="${px(t)}" y1="${m.top}" x2="${px(t)}" y2="${H - m.bottom}" stroke="#eee"/>`);
    parts.push(`<text x="${px(t)}" y="${H - m.bottom + 16}" text-anchor="middle">${formatTick(t)}</text>`);
  }
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.left}" y1="${py(t)}" x2="${W - m.right}" y2="${py(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.left - 6}" y="${py(t) + 4}" text-anchor="end">${formatTick(t)}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    if (s.line && s.points.length > 1) {
      const d = s.points.map((p, k) => `${k ? 'L' : 'M'}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ');
      parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    for (const p of s.points) {
      parts.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="4.5" fill="${color}"><title>${escapeXml(`${s.name}: ${p.label ?? ''} (${p.x}, ${p.y})`)}</title></circle>`);
      if (p.label) parts.push(`<text x="${(px(p.x) + 7).toFixed(1)}" y="${(py(p.y) - 7).toFixed(1)}" font-size="11" fill="${color}">${escapeXml(p.label)}</text>`);
    }
    const ly = m.top + 10 + i * 20;
    parts.push(`<line x1="${W - m.right + 14}" y1="${ly}" x2="${W - m.right + 34}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<circle cx="${W - m.right + 24}" cy="${ly}" r="4" fill="${color}"/>`);
    parts.push(`<text x="${W - m.right + 40}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
