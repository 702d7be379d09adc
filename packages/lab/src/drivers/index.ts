/**
 * The drivers the lab runs out of the box (adapters from `@hmmkit/drivers` to
 * {@link LabDriverFactory}).
 * @see ../driver-binding.ts
 */
import type { LabDriverFactory, LabDriverRegistry } from "../driver-binding";
import { nouveauLabDriver } from "./nouveau";

/**
 * The built-in driver registry.
 * @returns a fresh map of driver name → factory.
 */
export function defaultDrivers(): LabDriverRegistry {
  const m = new Map<string, LabDriverFactory>();
  m.set(nouveauLabDriver.name, nouveauLabDriver);
  return m;
}
