//! fedistill participant driver.
pub mod witness;
