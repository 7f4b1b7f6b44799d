//! The signed update log.
