/**
 * @hmmkit/lab: public API of the lab package (scenarios, workloads, traces, policies, runner, reports).
 *
 * @packageDocumentation
 */

/** Version of @hmmkit/lab, kept equal to the `version` field of its package.json. */
export const VERSION = "0.1.0";
