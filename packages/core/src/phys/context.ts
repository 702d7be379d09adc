/**
 * What hardware models need from a machine: its clock, randomness, trace bus and physical memory.
 *
 * `@hmmkit/device-emu` depends on core's `sim` and `phys` only (hardware knows nothing of the
 * kernel's mm); it receives this context from whoever builds the machine.
 */
import type { SimClock } from "../sim/clock";
import type { Rng } from "../sim/rng";
import type { Contents } from "./contents";
import type { PageState } from "./page-state";

/** The services of one machine that hardware models use. */
export interface PhysContext {
  /** The machine's virtual clock. */
  readonly clock: SimClock;
  /** The machine's seeded randomness (fork a stream per consumer). */
  readonly rng: Rng;
  /** Per-page state (regions are added here). */
  readonly pages: PageState;
  /** Page contents (real bytes). */
  readonly contents: Contents;
}
