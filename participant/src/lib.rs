//! fedistill participant: the tokio + quinn driver ([`driver`]) around the synchronous round lifecycle
//! ([`lifecycle`]), which runs a [`learner::Learner`] (the real one: teacher, student, INT8, guard) for
//! what the sans-IO participant session asks; the log witness, the status page and the node's artifacts.
pub mod absent;
pub mod config;
pub mod console;
pub mod driver;
pub mod learner;
pub mod lifecycle;
pub mod owndata;
pub mod personalize;
pub mod regression;
pub mod service;
pub mod transport;
pub mod witness;

pub use learner::{Distilled, Learner, LearnerSummary};
