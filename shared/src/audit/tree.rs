//! Stage 4, tree and proofs: `proofs.json`, checked against the signed roots and the records.
//!
//! Every record of the head checkpoint has an inclusion proof in it, every pair of consecutive
//! checkpoints a consistency proof, nothing else is there, and every checkpoint's root is recomputed
//! from the records themselves.

use super::bundle::canonical_json;
use super::checkpoints::CheckpointChain;
use super::records::{record_item, Log};
use super::{Report, PROOFS_FILE};
use crate::ledger::tree::{leaf_hash, verify_consistency, verify_inclusion, MemoryTree};
use crate::ledger::{Digest, ProofError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A consistency proof between two checkpoint sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyEntry {
    /// Older size.
    pub old_size: u64,
    /// Newer size.
    pub new_size: u64,
    /// Proof hashes.
    pub hashes: Vec<Digest>,
}

/// An inclusion proof of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionEntry {
    /// Record index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
    /// Proof hashes.
    pub hashes: Vec<Digest>,
}

/// `proofs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// Between consecutive checkpoint sizes, ascending.
    pub consistency: Vec<ConsistencyEntry>,
    /// One per record of the head checkpoint, ascending.
    pub inclusion: Vec<InclusionEntry>,
}

/// The proofs an export carries: a consistency proof between each pair of consecutive `sizes`
/// (ascending checkpoint sizes) and an inclusion proof of every record in the largest.
pub(super) fn build_proofs(tree: &MemoryTree, sizes: &[u64]) -> Result<Proofs, ProofError> {
    let head = sizes.last().copied().unwrap_or(0);
    let consistency = sizes
        .windows(2)
        .map(|w| {
            Ok(ConsistencyEntry {
                old_size: w[0],
                new_size: w[1],
                hashes: tree.consistency_proof(w[0], w[1])?,
            })
        })
        .collect::<Result<Vec<_>, ProofError>>()?;
    let inclusion = (0..head)
        .map(|index| {
            Ok(InclusionEntry {
                index,
                size: head,
                hashes: tree.inclusion_proof(index, head)?,
            })
        })
        .collect::<Result<Vec<_>, ProofError>>()?;
    Ok(Proofs { consistency, inclusion })
}

/// Reads `proofs.json`: it must exist, parse and be canonical. A missing or unreadable file is
/// reported and treated as holding no proofs, so every record and checkpoint is then named as unproven.
fn read_proofs(bundle: &super::Bundle, report: &mut Report) -> Proofs {
    let proofs = match bundle.files.get(PROOFS_FILE) {
        None => {
            report.fail(PROOFS_FILE, "missing");
            None
        }
        Some(bytes) => match serde_json::from_slice::<Proofs>(bytes) {
            Ok(p) => {
                if canonical_json(&p) != *bytes {
                    report.fail(PROOFS_FILE, "not in canonical form");
                }
                Some(p)
            }
            Err(e) => {
                report.fail(PROOFS_FILE, format!("not valid proofs: {e}"));
                None
            }
        },
    };
    proofs.unwrap_or(Proofs {
        consistency: Vec::new(),
        inclusion: Vec::new(),
    })
}

/// Stage 4: every record is included in the head checkpoint (and none lies beyond it), consecutive
/// checkpoints are consistent, and every checkpoint's root is the root of the bundle's records.
pub(super) fn check_proofs(bundle: &super::Bundle, log: &Log, chain: &CheckpointChain, report: &mut Report) {
    let Some(head) = chain.head() else {
        return; // `check_checkpoints` hands on only a chain with a head
    };
    let head_size = head.signed.checkpoint.size;
    let head_root = head.signed.checkpoint.root;
    let proofs = read_proofs(bundle, report);
    let mut inclusion: HashMap<u64, &InclusionEntry> = HashMap::new();
    for e in &proofs.inclusion {
        if e.size != head_size || inclusion.insert(e.index, e).is_some() || e.index >= head_size {
            report.fail(
                format!("{PROOFS_FILE}: inclusion of record {} in size {}", e.index, e.size),
                "unexpected or duplicate proof",
            );
        }
    }
    for i in 0..head_size {
        let item = record_item(i as usize, log.records.get(i as usize).and_then(|r| r.as_ref()));
        let Some(data) = log.raw.get(i as usize) else {
            report.fail(item, format!("missing: the head checkpoint covers {head_size} records"));
            break;
        };
        match inclusion.get(&i) {
            None => report.fail(item, "no inclusion proof in the bundle"),
            Some(e) => {
                if let Err(err) = verify_inclusion(leaf_hash(data), i, head_size, &e.hashes, head_root) {
                    report.fail(item, format!("not included in the head checkpoint: {err}"));
                }
            }
        }
    }
    if log.raw.len() as u64 > head_size {
        report.fail(
            record_item(
                head_size as usize,
                log.records.get(head_size as usize).and_then(|r| r.as_ref()),
            ),
            "not covered by any signed checkpoint",
        );
    }
    let sizes: Vec<u64> = chain.by_size.keys().copied().collect();
    let mut consistency: HashMap<(u64, u64), &ConsistencyEntry> = HashMap::new();
    for e in &proofs.consistency {
        let known = sizes.windows(2).any(|w| w[0] == e.old_size && w[1] == e.new_size);
        if !known || consistency.insert((e.old_size, e.new_size), e).is_some() {
            report.fail(
                format!("{PROOFS_FILE}: consistency {} -> {}", e.old_size, e.new_size),
                "unexpected or duplicate proof",
            );
        }
    }
    for w in sizes.windows(2) {
        let (a, b) = (&chain.by_size[&w[0]], &chain.by_size[&w[1]]);
        match consistency.get(&(w[0], w[1])) {
            None => report.fail(b.name.as_str(), format!("no consistency proof from size {}", w[0])),
            Some(e) => {
                if let Err(err) = verify_consistency(
                    w[0],
                    a.signed.checkpoint.root,
                    w[1],
                    b.signed.checkpoint.root,
                    &e.hashes,
                ) {
                    report.fail(b.name.as_str(), format!("not consistent with {}: {err}", a.name));
                }
            }
        }
    }
    // Every checkpoint's root against the records themselves.
    for cp in chain.by_size.values() {
        if cp.signed.checkpoint.size <= log.tree.size() {
            match log.tree.root(cp.signed.checkpoint.size) {
                Ok(root) if root == cp.signed.checkpoint.root => {}
                _ => report.fail(cp.name.as_str(), "root does not match the records in the bundle"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{checkpoints, records};
    use super::*;

    /// The tree stage alone on `b` (the earlier stages run only to hand it their results).
    fn proof_failures(b: &Bundle) -> Vec<String> {
        let mut r = Report::default();
        let log = records::read_records(b, &mut r);
        let chain = checkpoints::check_checkpoints(b, &trust(2), &mut r).expect("a head");
        let before = r.failures.len();
        check_proofs(b, &log, &chain, &mut r);
        r.failures[before..]
            .iter()
            .map(|f| format!("{}: {}", f.item, f.reason))
            .collect()
    }

    fn with_proofs(b: &Bundle, edit: impl FnOnce(&mut Proofs)) -> Bundle {
        let mut p: Proofs = serde_json::from_slice(&b.files[PROOFS_FILE]).expect("proofs");
        edit(&mut p);
        let mut t = b.clone();
        t.files.insert(PROOFS_FILE.into(), canonical_json(&p));
        t.reseal();
        t
    }

    #[test]
    fn built_proofs_verify_against_the_tree() {
        let f = fixture(&[31, 32], None);
        let mut tree = MemoryTree::new();
        for r in &f.records {
            tree.push(&r.encode().expect("encodes"));
        }
        let p = build_proofs(&tree, &[3, 6, 9]).expect("proofs");
        assert_eq!(p.consistency.len(), 2);
        assert_eq!(p.inclusion.len(), 9);
        assert!(proof_failures(&good()).is_empty(), "{:?}", proof_failures(&good()));
        assert!(build_proofs(&tree, &[3, 12]).is_err(), "no proof beyond the tree");
    }

    #[test]
    fn a_dropped_record_is_named() {
        let b = good();
        let mut recs = records_of(&b);
        recs.remove(4);
        let r = check(&with_records(&b, &recs));
        assert_eq!(first(&r).item, "record 4 (contribution)", "{:?}", r.failures);
    }

    #[test]
    fn reordered_records_are_named() {
        let b = good();
        let mut recs = records_of(&b);
        recs.swap(4, 5);
        let r = check(&with_records(&b, &recs));
        assert_eq!(first(&r).item, "record 4 (contribution)", "{:?}", r.failures);
    }

    #[test]
    fn missing_unexpected_and_duplicate_proofs_are_named() {
        let b = good();
        // No proofs at all: every record and every later checkpoint is unproven.
        let mut t = b.clone();
        t.files.remove(PROOFS_FILE);
        t.reseal();
        let f = proof_failures(&t);
        assert_eq!(f[0], "proofs.json: missing");
        assert_eq!(
            f.iter()
                .filter(|l| l.ends_with("no inclusion proof in the bundle"))
                .count(),
            9,
            "{f:?}"
        );
        assert_eq!(
            f.iter()
                .filter(|l| l.contains("no consistency proof from size"))
                .count(),
            2,
            "{f:?}"
        );
        // A duplicate inclusion proof, a proof of another size, a consistency proof between
        // non-consecutive checkpoints.
        let t = with_proofs(&b, |p| {
            let dup = p.inclusion[2].clone();
            p.inclusion.push(dup);
            p.inclusion[0].size = 6;
            p.consistency[1].old_size = 3;
        });
        let f = proof_failures(&t);
        assert!(
            f.iter()
                .any(|l| l == "proofs.json: inclusion of record 2 in size 9: unexpected or duplicate proof"),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|l| l == "proofs.json: inclusion of record 0 in size 6: unexpected or duplicate proof"),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|l| l == "proofs.json: consistency 3 -> 9: unexpected or duplicate proof"),
            "{f:?}"
        );
        assert!(
            f.iter().any(|l| l.ends_with("no consistency proof from size 6")),
            "{f:?}"
        );
        // Not canonical (same proofs, compact JSON).
        let mut t = b.clone();
        let p: Proofs = serde_json::from_slice(&b.files[PROOFS_FILE]).expect("proofs");
        t.files
            .insert(PROOFS_FILE.into(), serde_json::to_vec(&p).expect("json"));
        t.reseal();
        assert_eq!(
            proof_failures(&t),
            vec!["proofs.json: not in canonical form".to_string()]
        );
    }

    #[test]
    fn a_wrong_proof_hash_fails_inclusion_or_consistency() {
        let b = good();
        let t = with_proofs(&b, |p| p.inclusion[7].hashes[0] = Digest::of(b"x"));
        let f = proof_failures(&t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].starts_with("record 7 (round_report): not included in the head checkpoint"),
            "{f:?}"
        );
        let t = with_proofs(&b, |p| p.consistency[0].hashes[0] = Digest::of(b"x"));
        let f = proof_failures(&t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("not consistent with checkpoints/"), "{f:?}");
    }

    #[test]
    fn records_beyond_or_short_of_the_head_are_named() {
        let b = good();
        // One record more than the head covers.
        let mut recs = records_of(&b);
        recs.push(recs[3].clone());
        let f = proof_failures(&with_records(&b, &recs));
        assert_eq!(
            f,
            vec!["record 9 (round_opened): not covered by any signed checkpoint".to_string()]
        );
        // Two fewer: the head covers records that are not there, and its root is not theirs.
        let mut recs = records_of(&b);
        recs.truncate(7);
        let f = proof_failures(&with_records(&b, &recs));
        assert_eq!(f[0], "record 7: missing: the head checkpoint covers 9 records", "{f:?}");
        assert!(
            f.iter().all(|l| !l.contains("root does not match")),
            "the head is beyond the records: {f:?}"
        );
        // Same count, one record changed: the roots of the checkpoints covering it do not match.
        let mut recs = records_of(&b);
        recs[8] = recs[3].clone();
        let f = proof_failures(&with_records(&b, &recs));
        assert!(
            f.iter()
                .any(|l| l.ends_with("root does not match the records in the bundle")),
            "{f:?}"
        );
    }
}
