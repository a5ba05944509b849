#!/usr/bin/env python3
"""Reads an Autobahn|Testsuite fuzzingclient report and fails on any non-conformant case.

The server relays notifications and does not echo what a client sends, so a case whose only
expectation it misses is an echo of the client's own message ("echo-only") is not counted:
it must have failed on the missing echo alone, i.e. with the closing handshake as the case
expects and with everything the case expected besides echoed messages received in order.
Nor is a case that sends a binary message and sees it refused with 1003, as the client
contract says (README, close codes).
Every other case must be OK, NON-STRICT or INFORMATIONAL.

Usage: check.py REPORT_DIR  (prints a summary line and each failure; exit 1 on any failure)
"""

import json
import os
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def without_messages(events):
    return [e for e in events if e and e[0] != "message"]


def binary_refused(case):
    """True when the case sends a binary message, which the contract refuses with 1003."""
    expected = case.get("expected", {}).values()
    sends_binary = any(e and e[0] == "message" and e[2] for events in expected for e in events)
    return sends_binary and case.get("remoteCloseCode") == 1003 and not case.get("received")


def echo_only(case):
    """True when the case failed only for want of an echo of the client's messages."""
    if case.get("behaviorClose") not in PASSING:
        return False
    if case.get("result", "").startswith("Did not receive message") and not case.get("received"):
        return True
    received = [list(e) for e in case.get("received", [])]
    if any(e and e[0] == "message" for e in received):
        return False
    for expected in case.get("expected", {}).values():
        if not any(e and e[0] == "message" for e in expected):
            continue
        if without_messages([list(e) for e in expected]) == received:
            return True
    return False


def main(report_dir):
    with open(os.path.join(report_dir, "index.json")) as f:
        index = json.load(f)
    failures, echo_skipped, binary_skipped, passed = [], [], [], 0
    for agent, cases in index.items():
        for case_id, summary in sorted(cases.items()):
            if summary["behavior"] in PASSING and summary["behaviorClose"] in PASSING:
                passed += 1
                continue
            with open(os.path.join(report_dir, summary["reportfile"])) as f:
                case = json.load(f)
            if summary["behavior"] == "FAILED" and echo_only(case):
                echo_skipped.append(case_id)
                continue
            if binary_refused(case):
                binary_skipped.append(case_id)
                continue
            failures.append(
                "%s %s: behavior %s, close %s, server close code %s — %s"
                % (agent, case_id, summary["behavior"], summary["behaviorClose"],
                   summary.get("remoteCloseCode"), case.get("description", "").strip()))
    for line in failures:
        print("FAILED " + line)
    print("autobahn: %d echo-only cases not applicable (the server does not echo): %s"
          % (len(echo_skipped), " ".join(echo_skipped)))
    print("autobahn: %d binary-message cases answered 1003 as the contract says: %s"
          % (len(binary_skipped), " ".join(binary_skipped)))
    print("autobahn: %d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
