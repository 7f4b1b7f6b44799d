//! fedistill coordinator driver.
