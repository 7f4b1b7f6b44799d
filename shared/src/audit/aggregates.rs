//! Stage 7, payloads and aggregates: payload files hash to their names, every contribution's payload
//! is present (and every record's, with `--require-payloads`), abstentions say what their signed
//! messages say, and every aggregate is recomputed bit for bit from its contributions.

use super::bundle::Manifest;
use super::policy::check_abstain_message;
use super::records::record_item;
use super::{Bundle, Report, PAYLOADS_DIR};
use crate::ledger::{Digest, ParticipantId, Record};

/// One contribution fed to an aggregate recomputation.
#[derive(Debug, Clone, Copy)]
pub struct AggregateInput<'a> {
    /// Contributor.
    pub participant: &'a ParticipantId,
    /// Encoding named in the contribution record.
    pub encoding: &'a str,
    /// The stored payload (the signed message bytes).
    pub payload: &'a [u8],
}

/// Recomputes an aggregate from its contributions: returns the bytes whose SHA-256 the
/// aggregate record's `digest` must equal. [`ProtocolRecompute`] is the implementation for
/// fedistill's own protocol; closures `Fn(&str, &[AggregateInput]) -> Result<Vec<u8>, String>`
/// implement it too.
pub trait Recompute {
    /// Aggregates `inputs` (in the record's contributor order) with the rule named `rule`.
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String>;

    /// Recomputes a secure round's aggregate: unmasks the sum of the masked `inputs` with the round's
    /// stored transcript, after checking every signature in it under `keys` (the log's roster when the
    /// round ran). The default refuses: only [`ProtocolRecompute`] knows fedistill's secure aggregation.
    fn secure_aggregate(&self, round: &SecureRound<'_>, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        let _ = inputs;
        Err(format!(
            "round {} aggregated securely, which this recompute function cannot check",
            round.round
        ))
    }
}

/// What a secure round's recomputation needs besides its masked inputs.
pub struct SecureRound<'a> {
    /// Federation id (bound into every key derivation and signature).
    pub federation: &'a str,
    /// The round.
    pub round: crate::ledger::RoundId,
    /// Aggregation rule name.
    pub rule: &'a str,
    /// The stored transcript (`protocol::secagg::SecureTranscript`, bincode).
    pub transcript: &'a [u8],
    /// Survivors and dropped as the log's `secure_aggregation` record names them.
    pub survivors: &'a [ParticipantId],
    /// Participants that shared keys but sent no masked input.
    pub dropped: &'a [ParticipantId],
    /// Each enrolled participant's ed25519 key when the round ran.
    pub keys: &'a std::collections::BTreeMap<ParticipantId, ed25519_dalek::VerifyingKey>,
}

impl<F> Recompute for F
where
    F: Fn(&str, &[AggregateInput<'_>]) -> Result<Vec<u8>, String>,
{
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        self(rule, inputs)
    }
}

/// Recomputes aggregates as the coordinator does: each payload is a bincode `SoftLabels`
/// message, decoded with `protocol::softlabels::decode`, aggregated with `protocol::aggregate`
/// under the parsed rule; the result is the aggregate probabilities as little-endian f32 bytes.
pub struct ProtocolRecompute;

impl Recompute for ProtocolRecompute {
    fn aggregate(&self, rule: &str, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        use crate::protocol::{aggregate, softlabels, AggregationRule, ContributionView};
        use crate::wire::messages::SoftLabels;
        let rule = AggregationRule::parse(rule).map_err(|e| e.to_string())?;
        let mut decoded = Vec::with_capacity(inputs.len());
        let mut shape: Option<(usize, usize)> = None;
        for input in inputs {
            let sl: SoftLabels = crate::wire::frame::decode_payload(input.payload)
                .map_err(|e| format!("payload of {}: {e}", input.participant))?;
            if sl.encoding.name() != input.encoding {
                return Err(format!(
                    "payload of {} is {} but the record says {}",
                    input.participant,
                    sl.encoding.name(),
                    input.encoding
                ));
            }
            let (rows, classes) = (sl.rows as usize, sl.classes as usize);
            if shape.is_some_and(|s| s != (rows, classes)) {
                return Err(format!("payload of {} has a different shape", input.participant));
            }
            shape = Some((rows, classes));
            let p = softlabels::decode(&sl.payload, rows, classes, sl.encoding)
                .map_err(|e| format!("payload of {}: {e}", input.participant))?;
            decoded.push((p, sl.samples));
        }
        let (rows, classes) = shape.ok_or("aggregate has no contributors")?;
        let views: Vec<ContributionView<'_>> = decoded
            .iter()
            .map(|(p, samples)| ContributionView {
                probabilities: p,
                samples: *samples,
            })
            .collect();
        let out = aggregate(rule, &views, rows, classes).map_err(|e| e.to_string())?;
        Ok(crate::protocol::canonical_aggregate_bytes(&out))
    }

    fn secure_aggregate(&self, round: &SecureRound<'_>, inputs: &[AggregateInput<'_>]) -> Result<Vec<u8>, String> {
        super::secure::recompute(round, inputs)
    }
}

/// The path of the payload with SHA-256 `d`.
fn payload_path(d: &Digest) -> String {
    format!("{PAYLOADS_DIR}/{}", d.to_hex())
}

/// Stage 7: every payload file hashes to its name; then, when the manifest declares payloads, the
/// records' payloads ([`check_record_payloads`]) and, with a [`Recompute`], every aggregate
/// ([`recompute_aggregates`]). What is skipped is said in `report.notes`.
pub(super) fn check_payloads_and_aggregates(
    bundle: &Bundle,
    manifest: Option<&Manifest>,
    records: &[Option<Record>],
    recompute: Option<&dyn Recompute>,
    report: &mut Report,
) {
    check_payload_files(bundle, report);
    if !manifest.is_some_and(|m| m.payloads) {
        report
            .notes
            .push("bundle has no payloads: aggregates were not recomputed".into());
        return;
    }
    check_record_payloads(bundle, records, report);
    let Some(recompute) = recompute else {
        report
            .notes
            .push("no aggregation function supplied: aggregates were not recomputed".into());
        return;
    };
    recompute_aggregates(bundle, records, recompute, report);
}

/// Every `payloads/<hex>` file hashes to its name.
fn check_payload_files(bundle: &Bundle, report: &mut Report) {
    for (name, bytes) in bundle.files_under(PAYLOADS_DIR) {
        let hexname = &name[PAYLOADS_DIR.len() + 1..];
        if Digest::from_hex(hexname).ok() != Some(Digest::of(bytes)) {
            report.fail(name.as_str(), "payload does not hash to its file name");
        }
    }
}

/// In a bundle with payloads: every contribution's payload is present, and every abstention's is
/// present and says what the record says.
fn check_record_payloads(bundle: &Bundle, records: &[Option<Record>], report: &mut Report) {
    for (i, rec) in records.iter().enumerate() {
        if let Some(
            Record::Contribution { payload_digest, .. }
            | Record::SecureAggregation {
                transcript_digest: payload_digest,
                ..
            },
        ) = rec
        {
            if !bundle.files.contains_key(&payload_path(payload_digest)) {
                report.fail(record_item(i, rec.as_ref()), "payload missing from the bundle");
            }
        }
        if let Some(Record::Abstention {
            round,
            reason,
            figures,
            message_digest,
            ..
        }) = rec
        {
            let item = record_item(i, rec.as_ref());
            let Some(bytes) = bundle.files.get(&payload_path(message_digest)) else {
                report.fail(item, "payload missing from the bundle");
                continue;
            };
            if let Err(why) = check_abstain_message(*round, reason, figures, bytes) {
                report.fail(item, why);
            }
        }
    }
}

/// Every aggregate record recomputed from the payloads of its contributors' (single, earlier)
/// contributions in its round, in the record's contributor order; its digest must match bit for bit.
/// A missing payload is fed as empty bytes (already reported by [`check_record_payloads`]).
fn recompute_aggregates(bundle: &Bundle, records: &[Option<Record>], recompute: &dyn Recompute, report: &mut Report) {
    let empty = Vec::new();
    let payload = |d: &Digest| bundle.files.get(&payload_path(d)).unwrap_or(&empty);
    let federation = records.iter().flatten().find_map(|r| match r {
        Record::FederationCreated { federation_id, .. } => Some(federation_id.clone()),
        _ => None,
    });
    let mut keys = std::collections::BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        if let Some(Record::RosterChange {
            participant,
            action,
            signing_key,
            ..
        }) = rec
        {
            match action {
                crate::ledger::RosterAction::Revoke => {
                    keys.remove(participant);
                }
                _ => {
                    if let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(signing_key) {
                        keys.insert(participant.clone(), k);
                    }
                }
            }
        }
        let Some(Record::Aggregate {
            round,
            digest,
            rule,
            contributors,
            ..
        }) = rec
        else {
            continue;
        };
        let item = record_item(i, rec.as_ref());
        let mut inputs = Vec::with_capacity(contributors.len());
        let mut missing = None;
        for c in contributors {
            let found: Vec<&Record> = records[..i]
                .iter()
                .flatten()
                .filter(|r| matches!(r, Record::Contribution { round: cr, participant, .. } if cr == round && participant == c))
                .collect();
            match found.as_slice() {
                [Record::Contribution {
                    participant,
                    encoding,
                    payload_digest,
                    ..
                }] => inputs.push(AggregateInput {
                    participant,
                    encoding: encoding.as_str(),
                    payload: payload(payload_digest),
                }),
                [] => missing = Some(format!("no logged contribution of {c} in round {round}")),
                _ => missing = Some(format!("{c} has several contributions in round {round}")),
            }
        }
        if let Some(m) = missing {
            report.fail(item, m);
            continue;
        }
        let secure = records[..i].iter().flatten().find_map(|r| match r {
            Record::SecureAggregation {
                round: sr,
                transcript_digest,
                survivors,
                dropped,
                ..
            } if sr == round => Some((transcript_digest, survivors, dropped)),
            _ => None,
        });
        let recomputed = match secure {
            Some((transcript_digest, survivors, dropped)) => {
                if survivors != contributors {
                    report.fail(
                        item,
                        "the secure round's survivors are not the aggregate's contributors",
                    );
                    continue;
                }
                let round_info = SecureRound {
                    federation: federation.as_deref().unwrap_or(""),
                    round: *round,
                    rule: rule.as_str(),
                    transcript: payload(transcript_digest),
                    survivors,
                    dropped,
                    keys: &keys,
                };
                recompute.secure_aggregate(&round_info, &inputs)
            }
            None => recompute.aggregate(rule.as_str(), &inputs),
        };
        match recomputed {
            Ok(bytes) if Digest::of(&bytes) == *digest => report.aggregates_recomputed += 1,
            Ok(bytes) => report.fail(
                item,
                format!(
                    "recomputed aggregate hashes to {}, the signed record says {digest}",
                    Digest::of(&bytes)
                ),
            ),
            Err(e) => report.fail(item, format!("could not recompute: {e}")),
        }
    }
}

/// How many missing payloads a `--require-payloads` failure lists by name.
const MISSING_PAYLOADS_NAMED: usize = 5;

/// `--require-payloads`: every contribution, round report and abstention among the records `raw` has
/// its payload in the bundle; sets `report.payloads_present` when they all do.
pub(super) fn check_payloads_present(bundle: &Bundle, raw: &[Vec<u8>], report: &mut Report) {
    let mut total = 0usize;
    let mut missing = Vec::new();
    for (i, bytes) in raw.iter().enumerate() {
        let Ok(rec) = Record::decode(bytes) else {
            continue; // already a failure of `verify`
        };
        let digest = match &rec {
            Record::Contribution { payload_digest, .. }
            | Record::SecureAggregation {
                transcript_digest: payload_digest,
                ..
            } => payload_digest,
            Record::RoundReport { message_digest, .. } | Record::Abstention { message_digest, .. } => message_digest,
            _ => continue,
        };
        total += 1;
        if !bundle.files.contains_key(&payload_path(digest)) {
            missing.push(format!(
                "{} (payload {})",
                record_item(i, Some(&rec)),
                &digest.to_hex()[..16]
            ));
        }
    }
    if missing.is_empty() {
        report.payloads_present = Some(total);
        return;
    }
    let more = missing.len().saturating_sub(MISSING_PAYLOADS_NAMED);
    let mut named = missing[..missing.len().min(MISSING_PAYLOADS_NAMED)].join(", ");
    if more > 0 {
        named.push_str(&format!(" and {more} more"));
    }
    report.fail(
        PAYLOADS_DIR,
        format!(
            "payloads required (--require-payloads) but {} of {total} are missing from the bundle: {named}",
            missing.len()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The aggregate stage alone on the fixture's records.
    fn stage(b: &Bundle, f: &Fixture, recompute: Option<&dyn Recompute>) -> Report {
        let mut r = Report::default();
        let manifest = super::super::bundle::check_manifest(b, &mut r);
        assert!(r.ok(), "{:?}", r.failures);
        check_payloads_and_aggregates(b, manifest.as_ref(), &decoded(&f.records), recompute, &mut r);
        r
    }

    #[test]
    fn the_stage_recomputes_or_says_why_not() {
        let f = fixture(&[31, 32], None);
        let r = stage(&bundle_of(&f, true), &f, Some(&ProtocolRecompute));
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.aggregates_recomputed, 1);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let r = stage(&bundle_of(&f, true), &f, None);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(
            r.notes,
            vec!["no aggregation function supplied: aggregates were not recomputed"]
        );
        let r = stage(&bundle_of(&f, false), &f, Some(&ProtocolRecompute));
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.aggregates_recomputed, 0);
        assert_eq!(r.notes, vec!["bundle has no payloads: aggregates were not recomputed"]);
    }

    #[test]
    fn a_recomputed_aggregate_mismatch_is_named() {
        let f = fixture(&[31, 32], Some(Digest::of(b"not the mean")));
        let r = check(&bundle_of(&f, true));
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, "record 6 (aggregate)");
        assert!(
            first(&r).reason.contains("recomputed aggregate hashes to"),
            "{}",
            first(&r).reason
        );
    }

    /// Inputs reach the recomputation in the record's contributor order, with the logged encodings and
    /// payloads; its errors are named.
    #[test]
    fn recompute_gets_the_contributions_in_order_and_its_errors_are_named() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        let seen = std::cell::RefCell::new(Vec::new());
        let spy = |rule: &str, inputs: &[AggregateInput<'_>]| -> Result<Vec<u8>, String> {
            seen.borrow_mut().push((
                rule.to_string(),
                inputs
                    .iter()
                    .map(|x| (x.participant.to_string(), x.encoding.to_string(), Digest::of(x.payload)))
                    .collect::<Vec<_>>(),
            ));
            Err("spy".into())
        };
        let r = stage(&b, &f, Some(&spy));
        assert_eq!(lines(&r), vec!["record 6 (aggregate): could not recompute: spy"]);
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "mean");
        let names: Vec<&str> = seen[0]
            .1
            .iter()
            .map(|(p, e, _)| {
                assert_eq!(e, "f32");
                p.as_str()
            })
            .collect();
        assert_eq!(names, vec!["bank-a", "bank-b"]);
        assert_eq!(seen[0].1[0].2, f.payloads[0].0);
        assert_eq!(seen[0].1[1].2, f.payloads[1].0);
        assert_eq!(r.aggregates_recomputed, 0);
    }

    #[test]
    fn an_aggregate_without_its_contributions_is_named() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        let mut r = Report::default();
        // The aggregate with bank-b's contribution missing, then with it twice.
        let mut recs = decoded(&f.records);
        recs[5] = None;
        recompute_aggregates(&b, &recs, &ProtocolRecompute, &mut r);
        assert_eq!(
            lines(&r),
            vec!["record 6 (aggregate): no logged contribution of bank-b in round 1"]
        );
        let mut recs = decoded(&f.records);
        recs[3] = recs[5].clone();
        let mut r = Report::default();
        recompute_aggregates(&b, &recs, &ProtocolRecompute, &mut r);
        assert_eq!(
            lines(&r),
            vec!["record 6 (aggregate): bank-b has several contributions in round 1"]
        );
    }

    #[test]
    fn payload_files_and_missing_payloads_are_named() {
        let f = fixture(&[31, 32], None);
        let b = bundle_of(&f, true);
        // A payload under another name.
        let mut t = b.clone();
        let name = format!("{PAYLOADS_DIR}/{}", f.payloads[0].0.to_hex());
        let bytes = t.files.remove(&name).expect("payload");
        t.files
            .insert(format!("{PAYLOADS_DIR}/{}", Digest::of(b"x").to_hex()), bytes);
        let mut r = Report::default();
        check_payload_files(&t, &mut r);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).reason, "payload does not hash to its file name");
        // ... so the contribution's own payload is missing.
        let mut r = Report::default();
        check_record_payloads(&t, &decoded(&f.records), &mut r);
        assert_eq!(
            lines(&r),
            vec!["record 4 (contribution): payload missing from the bundle"]
        );
        // An abstention without its message.
        let (a, _) = abstention_of("bank-a", 1, 3);
        let mut r = Report::default();
        check_record_payloads(&b, &decoded(&[a]), &mut r);
        assert_eq!(
            lines(&r),
            vec!["record 0 (abstention): payload missing from the bundle"]
        );
    }

    fn requiring_payloads(b: &Bundle) -> Report {
        let opts = VerifyOptions {
            expect_checkpoint: None,
            require_payloads: true,
        };
        verify_with(b, &trust(2), Some(&ProtocolRecompute), &opts)
    }

    #[test]
    fn check_payloads_present_lists_five_and_counts_the_rest() {
        let recs: Vec<Vec<u8>> = (1..=7)
            .map(|round| contribution_in("bank-a", round).encode().expect("encodes"))
            .collect();
        let mut r = Report::default();
        check_payloads_present(&Bundle::default(), &recs, &mut r);
        let reason = &first(&r).reason;
        assert!(reason.contains("7 of 7 are missing"), "{reason}");
        assert!(
            reason.contains("record 4 (contribution)") && !reason.contains("record 5 (contribution)"),
            "{reason}"
        );
        assert!(reason.ends_with(" and 2 more"), "{reason}");
        assert_eq!(r.payloads_present, None);
        // Records that name no payload do not count; undecodable ones are skipped.
        let mut r = Report::default();
        check_payloads_present(
            &Bundle::default(),
            &[b"junk".to_vec(), preamble()[0].encode().expect("encodes")],
            &mut r,
        );
        assert!(r.ok());
        assert_eq!(r.payloads_present, Some(0));
    }

    #[test]
    fn require_payloads_names_the_missing_ones() {
        // The fixture's round report has no stored message: fine for plain verification.
        let f = fixture(&[31, 32], None);
        assert!(check(&bundle_of(&f, true)).ok());
        let r = requiring_payloads(&bundle_of(&f, true));
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(first(&r).item, PAYLOADS_DIR);
        assert!(
            first(&r)
                .reason
                .contains("1 of 3 are missing from the bundle: record 7 (round_report)"),
            "{}",
            first(&r).reason
        );
        // Exported without payloads: verifies (with a note), fails when payloads are required.
        let without = bundle_of(&f, false);
        assert!(check(&without).ok());
        let r = requiring_payloads(&without);
        assert!(
            first(&r)
                .reason
                .contains("3 of 3 are missing from the bundle: record 4 (contribution)"),
            "{}",
            first(&r).reason
        );
        // With every payload present it passes and says how many.
        let mut complete = fixture(&[31, 32], None);
        complete
            .payloads
            .push((Digest::of(b"report message"), b"report message".to_vec()));
        let r = requiring_payloads(&bundle_of(&complete, true));
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.payloads_present, Some(3));
        // One payload removed (manifest resealed): named.
        let mut b = bundle_of(&complete, true);
        let Record::Contribution { payload_digest, .. } = &complete.records[5] else {
            unreachable!()
        };
        b.files.remove(&format!("{PAYLOADS_DIR}/{}", payload_digest.to_hex()));
        b.reseal();
        let r = requiring_payloads(&b);
        let named = r
            .failures
            .iter()
            .find(|x| x.item == PAYLOADS_DIR)
            .expect("the requirement fails");
        assert!(
            named
                .reason
                .contains("1 of 3 are missing from the bundle: record 5 (contribution)"),
            "{}",
            named.reason
        );
    }
}
