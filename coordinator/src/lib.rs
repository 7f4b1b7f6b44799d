//! fedistill coordinator driver.
pub mod store;
