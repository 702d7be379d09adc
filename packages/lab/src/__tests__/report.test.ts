import { describe, expect, it } from "vitest";
import { htmlReport } from "../report/html";
import { toJson } from "../report/json";
import { barChartSvg, escapeXml, lineChartSvg, niceTicks } from "../report/svg";
import { formatResultTable, renderTable } from "../report/table";
import { comparePolicies, runScenario } from "../runner";
import { expectWellFormed, smallGpuScenario } from "./helpers";

describe("SVG charts", () => {
  it("a line chart is well-formed SVG with one path per series and escaped text", () => {
    const svg = lineChartSvg({
      title: "faults <&> time",
      xLabel: "ms",
      yLabel: "faults",
      series: [
        { name: "a&b", x: [0, 1, 2], y: [0, 5, 9] },
        { name: "c", x: [0, 2], y: [0, 3] },
      ],
    });
    expectWellFormed(svg);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain("faults &lt;&amp;&gt; time");
    expect(svg.match(/<path data-series=/g)?.length).toBe(2);
    expect(svg).toContain('data-series="a&amp;b"');
    expect(svg).not.toContain("NaN");
  });

  it("a bar chart has one rect per series and category, and handles empty data", () => {
    const svg = barChartSvg({
      title: "t",
      yLabel: "y",
      categories: ["x", "y", "z"],
      series: [
        { name: "s1", values: [1, 2, 3] },
        { name: "s2", values: [0, 0, 0] },
      ],
    });
    expectWellFormed(svg);
    expect(svg.match(/<rect data-series=/g)?.length).toBe(6);
    const empty = lineChartSvg({ title: "e", xLabel: "x", yLabel: "y", series: [] });
    expectWellFormed(empty);
    expect(empty).not.toContain("NaN");
  });

  it("nice ticks cover the range in 1-2-5 steps", () => {
    expect(niceTicks(0, 9.3, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0, 40580, 5)).toEqual([0, 10000, 20000, 30000, 40000, 50000]);
    expect(niceTicks(0, 0, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(escapeXml(`<"'&>`)).toBe("&lt;&quot;&#39;&amp;&gt;");
  });
});

describe("reports of a comparison", () => {
  it("HTML is self-contained and well formed, with the expected series per policy and the embedded JSON", async () => {
    const s = smallGpuScenario({ workload: { kind: "stream", workingSetMiB: 3, warps: 2, iterations: 1 } });
    const r = await comparePolicies(s, ["first-touch", "tree-prefetch"]);
    const html = htmlReport(r);
    expectWellFormed(html);
    expect(html.startsWith("<!DOCTYPE html>")).toBe(true);
    expect(html).not.toMatch(/<script(?![^>]*application\/json)/); // no executable script
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//); // nothing fetched
    for (const title of [
      "GPU faults over simulated time",
      "Interconnect bytes over simulated time",
      "Pages migrated over simulated time",
    ]) {
      const i = html.indexOf(`<title>${title}</title>`);
      expect(i).toBeGreaterThan(0);
      const svg = html.slice(html.lastIndexOf("<svg", i), html.indexOf("</svg>", i));
      expect(svg).toContain('data-series="first-touch"');
      expect(svg).toContain('data-series="tree-prefetch"');
    }
    const json = html.match(/<script type="application\/json" id="hmmkit-data">([\s\S]*?)<\/script>/)?.[1] as string;
    expect(JSON.parse(json)).toEqual(JSON.parse(toJson(r)));
    const table = formatResultTable(r);
    expect(table.split("\n")[1]).toMatch(/^policy\s+sim time\s+GPU faults/);
    expect(table).toContain("first-touch");
    expect(table).toContain("tree-prefetch");
  });

  it("HTML of a single run and of a CPU run is well formed", async () => {
    const r = await runScenario(smallGpuScenario({ workload: { kind: "random", workingSetMiB: 1, warps: 2, on: "cpu" } }));
    expectWellFormed(htmlReport(r));
    expect(formatResultTable(r)).toContain("CPU faults");
  });

  it("renders an aligned text table", () => {
    const t = renderTable({
      header: ["a", "bb"],
      rows: [
        ["x", "1"],
        ["yy", "22"],
      ],
    });
    expect(t).toBe("a   bb\n──  ──\nx    1\nyy  22");
  });
});
