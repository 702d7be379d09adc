/**
 * The simulation kernel: virtual time, randomness, errors, tracepoints, counters, DI tokens.
 * @packageDocumentation
 */
export { Fence, SimClock, type SimEvent } from "./clock";
export { BugError, bugOn, ERRNO, type Errno, einval, errnoName, HmmError } from "./errors";
export { type CoreEvents, TraceBus } from "./events";
export { Rng } from "./rng";
export { createToken, type Token, type TokenBrand } from "./tokens";
export { type VmCounters, VmStat, type VmStatName, zeroCounters } from "./vmstat";
