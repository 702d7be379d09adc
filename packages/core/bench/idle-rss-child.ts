/**
 * Child of core.bench.ts (run in a fresh process by runFresh): RSS growth of booting a machine
 * with 16 GiB of emulated RAM and touching nothing. The module graph is loaded before the first
 * reading, so only the machine itself is measured.
 */
import { emitResults, rssGrowthMiB } from "../../../bench/lib";
import { Machine } from "../src/index";

// Warm the code paths on a tiny machine so JIT and lazily-initialised module state are not counted.
Machine.create({ ramMiB: [4] }).dispose();
const growth = await rssGrowthMiB(
  () => Machine.create({ ramMiB: [16384] }),
  (m) => m.dispose(),
);
emitResults([{ id: "core.phys.idle_rss_mib_16gib", value: growth, unit: "MiB" }]);
