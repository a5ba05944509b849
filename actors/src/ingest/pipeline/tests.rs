//! Unit tests of the pipeline's rules.
