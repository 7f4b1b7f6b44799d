//! fedistill participant driver.
pub mod transport;
pub mod witness;
