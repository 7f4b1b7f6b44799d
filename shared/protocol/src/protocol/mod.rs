//! Sans-IO state machines for the coordinator round and the participant session, plus the pure pieces they
//! use: soft-label encodings and aggregation rules. The rule and encoding enums themselves are wire types
//! (`crate::wire::enums`), re-exported here and from [`mod@aggregate`] and [`softlabels`].
//!
//! Nothing in here does I/O, reads the clock or OS randomness: time comes in as [`Millis`] arguments and
//! randomness as seeds, so the simulator in `sim` drives the same code with a virtual clock.

pub mod abstain;
pub mod aggregate;
pub mod coordinator;
pub mod participant;
pub mod records;
pub mod robust;
pub mod secagg;
#[cfg(test)]
mod sim;
pub mod softlabels;

pub use abstain::{abstain_message, budget_exhausted_message};
pub use aggregate::{aggregate, refresh_targets, AggregateError, AggregationRule, ContributionView, RuleError};
pub use coordinator::{
    aggregate_labels_message, canonical_aggregate_bytes, round_open_message, round_sample_ids, CommitError,
    CommitRecords, CoordinatorConfig, CoordinatorRound, OutMessage, Output, Phase, Rejection, RoundCommit, Snapshot,
};
pub use participant::{ParticipantOutput, ParticipantSession, SessionError};
pub use records::MessageRecords;
pub use softlabels::{Encoding, EncodingError, SoftLabelError};

use serde::{Deserialize, Serialize};

/// A point in time or a duration in milliseconds, on a clock the driver (or the simulator) owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + d`, saturating.
    pub fn plus(self, d: Millis) -> Millis {
        Millis(self.0.saturating_add(d.0))
    }
}
