//! `fedistill audit export`: what a bundle holds, read from the coordinator's log through [`LogSource`]
//! (the coordinator's store implements it in the binary; this crate cannot see the store): the head
//! checkpoint ([`choose_head`]) and the records, checkpoints and payloads up to it ([`collect`]), ready for
//! [`Bundle::build`](super::Bundle::build).

use super::ExportInput;
use crate::ledger::{Digest, Record, RecordError, SignedCheckpoint};
use std::collections::BTreeSet;
use std::ops::Range;

/// The reads of a signed update log that an export needs.
pub trait LogSource {
    /// Why a read failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Sizes of the signed checkpoints, ascending.
    fn checkpoint_sizes(&self) -> Result<Vec<u64>, Self::Error>;
    /// The signed checkpoint of this size, with its cosignatures.
    fn checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, Self::Error>;
    /// Canonical record bytes of the leaves in `range`.
    fn records_raw(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, Self::Error>;
    /// The stored payload with this digest.
    fn payload(&self, digest: &Digest) -> Result<Option<Vec<u8>>, Self::Error>;
}

/// Why an export could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E: std::error::Error + Send + Sync + 'static> {
    /// Reading the log failed.
    #[error(transparent)]
    Source(#[from] E),
    /// `--size` names no signed checkpoint.
    #[error("no signed checkpoint of size {size} (available: {available:?})")]
    NoCheckpoint {
        /// The size asked for.
        size: u64,
        /// The sizes of the signed checkpoints.
        available: Vec<u64>,
    },
    /// A record of the log does not decode.
    #[error("record {index}")]
    Record {
        /// Its position in the log.
        index: usize,
        /// Why.
        source: RecordError,
    },
}

/// The checkpoint an export ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its tree size (0: an empty log).
    pub size: u64,
    /// False when no size was asked for and no checkpoint has a witness cosignature yet (the head is then
    /// the newest checkpoint).
    pub cosigned: bool,
}

/// The head of an export: the checkpoint of `size`, or else the newest checkpoint that has at least one
/// witness cosignature, or else the newest checkpoint.
pub fn choose_head<S: LogSource>(log: &S, size: Option<u64>) -> Result<Head, ExportError<S::Error>> {
    let sizes = log.checkpoint_sizes()?;
    if let Some(size) = size {
        if !sizes.contains(&size) {
            return Err(ExportError::NoCheckpoint { size, available: sizes });
        }
        return Ok(Head { size, cosigned: true });
    }
    for &s in sizes.iter().rev() {
        if log.checkpoint(s)?.is_some_and(|c| c.signatures.len() > 1) {
            return Ok(Head {
                size: s,
                cosigned: true,
            });
        }
    }
    Ok(Head {
        size: sizes.last().copied().unwrap_or(0),
        cosigned: false,
    })
}

/// The records up to `head`, every signed checkpoint up to it and, with `payloads`, the stored payloads the
/// records name (contributions, secure-aggregation transcripts, round reports, abstentions).
pub fn collect<S: LogSource>(log: &S, head: u64, payloads: bool) -> Result<ExportInput, ExportError<S::Error>> {
    let sizes = log.checkpoint_sizes()?;
    let records = log.records_raw(0..head)?;
    let mut checkpoints = Vec::new();
    for &s in sizes.iter().filter(|s| **s <= head) {
        if let Some(c) = log.checkpoint(s)? {
            checkpoints.push(c);
        }
    }
    let payloads = if payloads {
        let mut wanted = BTreeSet::new();
        for (index, r) in records.iter().enumerate() {
            match Record::decode(r).map_err(|source| ExportError::Record { index, source })? {
                Record::Contribution { payload_digest, .. }
                | Record::SecureAggregation {
                    transcript_digest: payload_digest,
                    ..
                } => {
                    wanted.insert(payload_digest);
                }
                Record::RoundReport { message_digest, .. } | Record::Abstention { message_digest, .. } => {
                    wanted.insert(message_digest);
                }
                _ => {}
            }
        }
        let mut out: Vec<(Digest, Vec<u8>)> = Vec::new();
        for d in wanted {
            if let Some(bytes) = log.payload(&d)? {
                out.push((d, bytes));
            }
        }
        Some(out)
    } else {
        None
    };
    Ok(ExportInput {
        records,
        checkpoints,
        payloads,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// An in-memory log: the fixture's records, checkpoints and payloads.
    struct Memory(Fixture);

    impl LogSource for Memory {
        type Error = std::convert::Infallible;
        fn checkpoint_sizes(&self) -> Result<Vec<u64>, Self::Error> {
            Ok(self.0.checkpoints.iter().map(|c| c.checkpoint.size).collect())
        }
        fn checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, Self::Error> {
            Ok(self.0.checkpoints.iter().find(|c| c.checkpoint.size == size).cloned())
        }
        fn records_raw(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, Self::Error> {
            let (start, end) = (range.start as usize, range.end as usize);
            Ok(self.0.records[start..end]
                .iter()
                .map(|r| r.encode().expect("encodes"))
                .collect())
        }
        fn payload(&self, digest: &Digest) -> Result<Option<Vec<u8>>, Self::Error> {
            Ok(self
                .0
                .payloads
                .iter()
                .find(|(d, _)| d == digest)
                .map(|(_, p)| p.clone()))
        }
    }

    #[test]
    fn exports_the_newest_cosigned_checkpoint_and_the_payloads_it_names() {
        // Checkpoints at 3, 6 and 9 records; each carries a witness cosignature.
        let log = Memory(fixture(&[31, 32], None));
        let head = choose_head(&log, None).expect("reads");
        assert_eq!(
            head,
            Head {
                size: 9,
                cosigned: true
            }
        );
        let input = collect(&log, head.size, true).expect("collects");
        assert_eq!(input.records.len(), 9);
        assert_eq!(input.checkpoints.len(), 3);
        // Both contributions; the report's message is not stored.
        assert_eq!(input.payloads.as_ref().map(Vec::len), Some(2));
        let bundle = Bundle::build(input).expect("builds");
        let report = check(&bundle);
        assert!(report.ok(), "{:?}", report.failures);
        assert_eq!(report.aggregates_recomputed, 1);
    }

    #[test]
    fn an_uncosigned_log_exports_its_newest_checkpoint_and_a_size_cuts_it_back() {
        let mut f = fixture(&[], None);
        for c in &mut f.checkpoints {
            c.signatures.truncate(1);
        }
        let log = Memory(f);
        assert_eq!(
            choose_head(&log, None).expect("reads"),
            Head {
                size: 9,
                cosigned: false
            }
        );
        assert_eq!(
            choose_head(&log, Some(6)).expect("reads"),
            Head {
                size: 6,
                cosigned: true
            }
        );
        let input = collect(&log, 6, false).expect("collects");
        assert_eq!((input.records.len(), input.checkpoints.len()), (6, 2));
        assert!(input.payloads.is_none());
        let err = choose_head(&log, Some(5)).expect_err("no checkpoint of size 5");
        assert_eq!(err.to_string(), "no signed checkpoint of size 5 (available: [3, 6, 9])");
    }

    #[test]
    fn an_undecodable_record_names_its_position() {
        struct Garbled(Memory);
        impl LogSource for Garbled {
            type Error = std::convert::Infallible;
            fn checkpoint_sizes(&self) -> Result<Vec<u64>, Self::Error> {
                self.0.checkpoint_sizes()
            }
            fn checkpoint(&self, size: u64) -> Result<Option<SignedCheckpoint>, Self::Error> {
                self.0.checkpoint(size)
            }
            fn records_raw(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, Self::Error> {
                let mut records = self.0.records_raw(range)?;
                records[4] = vec![0xff; 3];
                Ok(records)
            }
            fn payload(&self, digest: &Digest) -> Result<Option<Vec<u8>>, Self::Error> {
                self.0.payload(digest)
            }
        }
        let log = Garbled(Memory(fixture(&[31], None)));
        assert!(
            collect(&log, 9, false).is_ok(),
            "records are decoded only for the payloads"
        );
        match collect(&log, 9, true) {
            Err(ExportError::Record { index, .. }) => assert_eq!(index, 4),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("record 4 does not decode"),
        }
    }
}
