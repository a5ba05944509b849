import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CloseCodes, DEFAULT_BACKOFF, decide, fullJitter } from "../src/index.js";

const max = () => 0.999_999;
const zero = () => 0;
const ctx = (code: number, failures = 0, previousWasAuthFailure = false) => ({
  code,
  failures,
  previousWasAuthFailure,
});

describe("fullJitter", () => {
  it("is uniform in [0, min(cap, base * 2^n))", () => {
    assert.equal(fullJitter(1000, 30_000, 0, zero), 0);
    assert.equal(fullJitter(1000, 30_000, 0, max), 999);
    assert.equal(fullJitter(1000, 30_000, 3, max), 7999);
    assert.equal(fullJitter(1000, 30_000, 10, max), 29_999);
    assert.equal(fullJitter(1000, 30_000, 1e6, max), 29_999, "huge n does not overflow");
  });
});

describe("decide (the close-code table of docs/FRONTEND.md)", () => {
  it("1012 (server draining): reconnect within the first jitter window", () => {
    const d = decide(ctx(CloseCodes.SERVICE_RESTART), DEFAULT_BACKOFF, max);
    assert.deepEqual(d, { action: "retry", delayMs: 999 });
  });

  it("1008 (token refused): one retry with a fresh token, then stop", () => {
    const first = decide(ctx(CloseCodes.POLICY_VIOLATION), DEFAULT_BACKOFF, zero);
    assert.deepEqual(first, { action: "retry", delayMs: 0, refresh: "rejected" });
    const second = decide(ctx(CloseCodes.POLICY_VIOLATION, 1, true), DEFAULT_BACKOFF, zero);
    assert.deepEqual(second, { action: "stop", reason: "auth" });
  });

  it("4003 (disconnected by the operator: logout, account locked): stop at once", () => {
    assert.equal(CloseCodes.DISCONNECTED, 4003);
    for (const failures of [0, 5]) {
      const d = decide(ctx(CloseCodes.DISCONNECTED, failures), DEFAULT_BACKOFF, zero);
      assert.deepEqual(d, { action: "stop", reason: "auth" });
    }
  });

  it("4001 (token expired): fresh token, reconnect within expiredDelayMs", () => {
    const d = decide(ctx(CloseCodes.TOKEN_EXPIRED, 4), DEFAULT_BACKOFF, max);
    assert.deepEqual(d, { action: "retry", delayMs: 499, refresh: "expired" });
  });

  it("1013 and 4000 (capacity): at least busyDelayMs, growing, capped", () => {
    for (const code of [CloseCodes.TRY_AGAIN_LATER, CloseCodes.USER_QUOTA]) {
      const low = decide(ctx(code), DEFAULT_BACKOFF, zero);
      assert.deepEqual(low, { action: "retry", delayMs: 5000 });
      const high = decide(ctx(code), DEFAULT_BACKOFF, max);
      assert.deepEqual(high, { action: "retry", delayMs: 9999 });
      const later = decide(ctx(code, 3), DEFAULT_BACKOFF, max);
      assert.deepEqual(later, { action: "retry", delayMs: 5000 + 39_999 });
      const capped = decide(ctx(code, 20), DEFAULT_BACKOFF, max);
      assert.deepEqual(capped, { action: "retry", delayMs: DEFAULT_BACKOFF.busyMaxDelayMs });
    }
  });

  it("everything else: jittered exponential backoff", () => {
    for (const code of [1000, 1002, 1003, 1006, 1009, 1011, 4008, 4009, 4999]) {
      assert.deepEqual(decide(ctx(code, 2), DEFAULT_BACKOFF, max), {
        action: "retry",
        delayMs: 3999,
      });
    }
  });
});
