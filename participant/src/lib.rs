//! fedistill participant: the tokio + quinn driver around the sans-IO participant session, with the
//! teacher/student lifecycle, the log witness and the participant's artifacts.
pub mod config;
pub mod console;
pub mod service;
pub mod transport;
pub mod witness;
