//! Hardening regression tests: publish_abuse.
