//! Attack harness (in progress).
