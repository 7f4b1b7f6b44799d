//! `fedistill audit show`: a readable timeline of a bundle, without verifying it.

use super::records::split_records;
use super::{Bundle, Report, CHECKPOINTS_DIR, RECORDS_FILE};
use crate::ledger::{Record, SignedCheckpoint};

/// A readable timeline of a bundle (records interleaved with checkpoints), without verifying it.
pub fn timeline(bundle: &Bundle) -> String {
    let mut report = Report::default();
    let raw = bundle
        .files
        .get(RECORDS_FILE)
        .map(|b| split_records(b, &mut report))
        .unwrap_or_default();
    let mut cps: Vec<SignedCheckpoint> = bundle
        .files_under(CHECKPOINTS_DIR)
        .filter_map(|(_, v)| SignedCheckpoint::parse(v).ok())
        .collect();
    cps.sort_by_key(|c| c.checkpoint.size);
    let mut out = String::from("(unverified: run `fedistill audit verify` to check signatures and proofs)\n");
    let mut next_cp = cps.iter().peekable();
    for (i, r) in raw.iter().enumerate() {
        while let Some(cp) = next_cp.next_if(|c| c.checkpoint.size <= i as u64) {
            out.push_str(&checkpoint_line(cp));
        }
        match Record::decode(r) {
            Ok(rec) => out.push_str(&format!("#{i:<6} {}\n", rec.summary())),
            Err(e) => out.push_str(&format!("#{i:<6} <undecodable record: {e}>\n")),
        }
    }
    for cp in next_cp {
        out.push_str(&checkpoint_line(cp));
    }
    for f in report.failures {
        out.push_str(&format!("!! {}: {}\n", f.item, f.reason));
    }
    out
}

fn checkpoint_line(cp: &SignedCheckpoint) -> String {
    let cosigners: Vec<&str> = cp
        .signatures
        .iter()
        .filter(|s| s.name != cp.checkpoint.origin)
        .map(|s| s.name.as_str())
        .collect();
    format!(
        "-- checkpoint size {} root {} cosigned by [{}]\n",
        cp.checkpoint.size,
        &cp.checkpoint.root.to_hex()[..16],
        cosigners.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn the_timeline_lists_records_and_checkpoints() {
        let t = timeline(&good());
        assert!(t.contains("#4      round 1: contribution from bank-a"), "{t}");
        assert!(t.contains("-- checkpoint size 9"), "{t}");
        assert!(t.contains("cosigned by [w-a, w-b]"), "{t}");
    }

    #[test]
    fn the_timeline_interleaves_checkpoints_and_shows_framing_errors() {
        let b = good();
        let t = timeline(&b);
        let lines: Vec<&str> = t.lines().collect();
        // The checkpoint of size 3 comes after record 2 and before record 3.
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).expect(prefix);
        assert!(
            at("#2 ") < at("-- checkpoint size 3") && at("-- checkpoint size 3") < at("#3 "),
            "{t}"
        );
        assert_eq!(
            lines.last().copied().map(|l| l.starts_with("-- checkpoint size 9")),
            Some(true),
            "{t}"
        );
        let mut cut = b.clone();
        if let Some(f) = cut.files.get_mut(RECORDS_FILE) {
            f.truncate(f.len() - 3);
        }
        let t = timeline(&cut);
        assert!(t.contains("!! record 8: records.bin truncated"), "{t}");
    }
}
