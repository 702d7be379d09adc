/**
 * @hmmkit/drivers: public API of the drivers package (dmirror, nouveau-like, uvmem-like, zswap-like).
 *
 * @packageDocumentation
 */

/** Version of @hmmkit/drivers, kept equal to the `version` field of its package.json. */
export const VERSION = "0.1.0";
