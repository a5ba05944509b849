//! Hardening regression tests: logs.
