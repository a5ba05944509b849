//! Hardening regression tests: frames.
