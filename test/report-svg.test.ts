// report-svg.test.ts: the SVG chart writer — ticks, marker placement inside the plot, escaping.
import { niceTicks, renderChart } from '../lib/report/svg';

test('nice ticks cover the range with round steps', () => {
  expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
  expect(niceTicks(3, 27)).toEqual([5, 10, 15, 20, 25]);
  const t = niceTicks(0.48, 1.02);
  expect(t[0]).toBeGreaterThanOrEqual(0.48);
  expect(t[t.length - 1]).toBeLessThanOrEqual(1.02);
});

test('one marker per point, all inside the plot area, labels escaped', () => {
  const svg = renderChart({
    title: 'Top-1 <vs> MACs & more',
    xLabel: 'MACs (M)',
    yLabel: 'Top-1 (%)',
    series: [
      { name: 'dense', points: [{ x: 31, y: 91.2, label: 'dense' }] },
      { name: 'MSGC', points: [{ x: 15, y: 91.5 }, { x: 20, y: 91.9 }], line: true },
    ],
  });
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg).toContain('Top-1 &lt;vs&gt; MACs &amp; more');
  const circles = [...svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)" r="4.5"/g)];
  expect(circles).toHaveLength(3);
  for (const c of circles) {
    const x = Number(c[1]);
    const y = Number(c[2]);
    expect(x).toBeGreaterThan(70);
    expect(x).toBeLessThan(640 - 170);
    expect(y).toBeGreaterThan(40);
    expect(y).toBeLessThan(420 - 55);
  }
  // higher accuracy is drawn higher (smaller y)
  const [dense, m15, m20] = circles.map((c) => Number(c[2]));
  expect(m20).toBeLessThan(m15);
  expect(m15).toBeLessThan(dense);
  expect(svg).toContain('<path d="M');
});
