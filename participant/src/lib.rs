//! fedistill participant driver.
