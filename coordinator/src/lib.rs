//! fedistill coordinator driver.
pub mod store;
pub mod transport;
