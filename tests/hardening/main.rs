//! End-to-end regression tests for the defects a hostile-client probe and an RFC 6455
//! conformance run found (issue #11): each test reproduces the attack on real sockets against
//! the server (in-process, or the real binary when it reads the log or needs an open-files
//! limit) and asserts what a client sees once the defect is fixed.

#[path = "../common/mod.rs"]
mod common;

mod accounting;
mod auth_abuse;
mod frames;
mod limits;
mod logs;
mod publish_abuse;
