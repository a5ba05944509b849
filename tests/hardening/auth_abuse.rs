//! Hardening regression tests: auth_abuse.
