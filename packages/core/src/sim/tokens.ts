/**
 * Typed dependency-injection tokens (tsyringe).
 *
 * Every service of a machine is registered under one token; every injectable constructor
 * parameter carries `@inject(TOKEN)`. vitest's transform emits no decorator metadata, and
 * interfaces have no runtime identity, so tokens are explicit everywhere.
 */
import type { InjectionToken } from "tsyringe";

/** A typed injection token: a unique symbol that remembers the service type `T`. */
export type Token<T> = InjectionToken<T> & symbol & TokenBrand<T>;

/** The compile-time brand that remembers a token's service type (never set at run time). */
export interface TokenBrand<T> {
  /** Phantom field carrying the service type. */
  readonly __service?: T;
}

/**
 * Create a token for a service type.
 * @param name - the service's name, shown in errors.
 * @returns a fresh unique token.
 */
export function createToken<T>(name: string): Token<T> {
  return Symbol(name) as Token<T>;
}
