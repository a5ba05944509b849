//! Hardening regression tests: accounting.
