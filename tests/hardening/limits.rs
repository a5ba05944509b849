//! Hardening regression tests: limits.
