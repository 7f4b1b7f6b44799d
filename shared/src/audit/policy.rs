//! Policy checks: quarantines, releases and abstentions are consistent with the rest of the log.
//!
//! A `quarantine` names an enrolled participant that is in its round's (earlier) aggregate and not
//! already quarantined, and its evidence shows `ewma_score > threshold` (with the policy figures, the
//! threshold and strike count recomputed); a quarantined participant has no contribution and is in no
//! aggregate of a later round until a `quarantine_release` that names its quarantine round, follows its
//! own round's aggregate and comes no earlier than `quarantined_round + after_rounds`; an `abstention`
//! has a reason, is the participant's only one for its round, and the participant has no contribution in
//! and is in no aggregate of that round. Scores are not replayed: the distances behind them are not in
//! the log. The records walk ([`check_records`](super::records::check_records)) feeds every record to
//! [`Policy::record`] before checking its signature, then calls [`Policy::finish`].

use super::records::record_item;
use super::Report;
use crate::ledger::{Metric, ParticipantId, Record, RoundId};
use std::collections::{BTreeMap, HashMap};

/// What the policy checks remember while the log is walked.
#[derive(Debug, Default)]
pub(super) struct Policy {
    /// Quarantine in force: participant -> round of the decision.
    quarantined: HashMap<ParticipantId, RoundId>,
    /// Contributors of every aggregate seen so far, by round.
    aggregated: HashMap<RoundId, Vec<ParticipantId>>,
    /// (round, participant) -> record index of every abstention and contribution, checked against
    /// each other at the end.
    abstentions: BTreeMap<(u64, ParticipantId), usize>,
    contributed: BTreeMap<(u64, ParticipantId), usize>,
}

impl Policy {
    /// Checks record `i` (named `item`) against the policy state of the records before it, then
    /// records it. `enrolled` says whether a participant is on the roster at this point of the log.
    pub(super) fn record(
        &mut self,
        i: usize,
        rec: &Record,
        item: &str,
        enrolled: &dyn Fn(&ParticipantId) -> bool,
        report: &mut Report,
    ) {
        match rec {
            Record::Contribution { round, participant, .. } => {
                if let Some(q) = self.quarantined.get(participant).filter(|q| q.0 < round.0) {
                    report.fail(
                        item,
                        format!("contribution from {participant}, quarantined since round {q}"),
                    );
                }
                self.contributed.insert((round.0, participant.clone()), i);
            }
            Record::Aggregate {
                round, contributors, ..
            } => {
                for c in contributors {
                    if let Some(q) = self.quarantined.get(c).filter(|q| q.0 < round.0) {
                        report.fail(item, format!("aggregates {c}, quarantined since round {q}"));
                    }
                }
                self.aggregated.insert(*round, contributors.clone());
            }
            Record::Quarantine {
                round,
                participant,
                evidence,
                ..
            } => {
                if !enrolled(participant) {
                    report.fail(item, format!("{participant} is not an enrolled participant here"));
                }
                if !self.aggregated.get(round).is_some_and(|c| c.contains(participant)) {
                    report.fail(
                        item,
                        format!("{participant} is not a contributor of an earlier aggregate of round {round}"),
                    );
                }
                if let Some(q) = self.quarantined.get(participant) {
                    report.fail(item, format!("{participant} is already quarantined (since round {q})"));
                }
                if let Err(why) = check_quarantine_evidence(evidence) {
                    report.fail(item, why);
                }
                self.quarantined.insert(participant.clone(), *round);
            }
            Record::QuarantineRelease {
                round,
                participant,
                quarantined_round,
                after_rounds,
                ..
            } => {
                match self.quarantined.get(participant) {
                    None => report.fail(item, format!("{participant} is not quarantined")),
                    Some(q) if q != quarantined_round => report.fail(
                        item,
                        format!(
                            "names the quarantine of round {quarantined_round}, but {participant}'s is of round {q}"
                        ),
                    ),
                    Some(_) => {}
                }
                if *after_rounds == 0 || round.0 < quarantined_round.0.saturating_add(u64::from(*after_rounds)) {
                    report.fail(
                        item,
                        format!(
                            "released after round {round}: earlier than round {quarantined_round} + {after_rounds} round(s)"
                        ),
                    );
                }
                if !self.aggregated.contains_key(round) {
                    report.fail(item, format!("no earlier aggregate of round {round}"));
                }
                self.quarantined.remove(participant);
            }
            Record::Abstention {
                round,
                participant,
                reason,
                ..
            } => {
                if reason.is_empty() {
                    report.fail(item, "abstention without a reason code");
                }
                if self.abstentions.insert((round.0, participant.clone()), i).is_some() {
                    report.fail(item, format!("{participant} abstained twice from round {round}"));
                }
            }
            _ => {}
        }
    }

    /// The checks across the whole log: no participant both abstained from and contributed to (or was
    /// aggregated in) the same round. `records` names the abstentions in failures.
    pub(super) fn finish(&self, records: &[Option<Record>], report: &mut Report) {
        for ((round, participant), &i) in &self.abstentions {
            let item = record_item(i, records.get(i).and_then(|r| r.as_ref()));
            if self.contributed.contains_key(&(*round, participant.clone())) {
                report.fail(
                    item.as_str(),
                    format!("{participant} abstained from round {round} but also contributed to it"),
                );
            }
            if self
                .aggregated
                .get(&RoundId(*round))
                .is_some_and(|c| c.contains(participant))
            {
                report.fail(
                    item.as_str(),
                    format!("{participant} abstained from round {round} but is in its aggregate"),
                );
            }
        }
    }
}

/// Checks a quarantine's evidence (names as written by `protocol::robust`): the score is above the
/// threshold and, when the policy is recorded, the threshold and the strike count follow from it.
pub(super) fn check_quarantine_evidence(evidence: &[Metric]) -> Result<(), String> {
    let get = |n: &str| evidence.iter().find(|m| m.name == n).map(|m| m.value);
    let (Some(score), Some(threshold)) = (get("ewma_score"), get("threshold")) else {
        return Err("evidence lacks ewma_score or threshold".into());
    };
    if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
        return Err(format!(
            "evidence: ewma_score {score} is not above the threshold {threshold}"
        ));
    }
    if let (Some(factor), Some(floor), Some(median)) = (get("policy_factor"), get("policy_floor"), get("median_score"))
    {
        let expected = (factor * median).max(floor);
        if expected.to_bits() != threshold.to_bits() {
            return Err(format!(
                "evidence: threshold {threshold} is not max(policy_factor {factor} x median_score {median}, policy_floor {floor}) = {expected}"
            ));
        }
    }
    if let (Some(strikes), Some(needed)) = (get("strikes"), get("policy_consecutive")) {
        if strikes
            .partial_cmp(&needed)
            .is_none_or(|o| o == std::cmp::Ordering::Less)
        {
            return Err(format!("evidence: {strikes} strikes, the policy needs {needed}"));
        }
    }
    Ok(())
}

/// Checks an abstention's stored payload: a bincode `Abstain` message that says what the record
/// says (round, reason code, figures).
pub(super) fn check_abstain_message(
    round: RoundId,
    reason: &str,
    figures: &[Metric],
    bytes: &[u8],
) -> Result<(), String> {
    match crate::wire::frame::decode_payload::<crate::wire::messages::Abstain>(bytes) {
        Err(e) => Err(format!("payload is not an Abstain message: {e}")),
        Ok(a) => {
            let same_figures =
                Metric::canonical(a.figures.iter().map(|(n, v)| (n.clone(), *v))).is_ok_and(|f| f == *figures);
            if a.round != round || a.reason != reason || !same_figures {
                return Err("the signed Abstain message says something else than the record".into());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The policy alone over `records` (everyone enrolled): `item: reason` of its failures.
    fn policy_failures(records: &[Record]) -> Vec<String> {
        let mut r = Report::default();
        let mut p = Policy::default();
        for (i, rec) in records.iter().enumerate() {
            p.record(i, rec, &record_item(i, Some(rec)), &|_| true, &mut r);
        }
        p.finish(&decoded(records), &mut r);
        lines(&r)
    }

    #[test]
    fn the_policy_state_machine_follows_a_quarantine_and_its_release() {
        let mut log = Vec::new();
        for r in 1..=3 {
            log.extend(round_of(r, &ALL));
        }
        log.push(quarantine_of("bank-d", 3));
        log.extend(round_of(4, &HONEST));
        log.extend(round_of(5, &HONEST));
        log.push(release_of("bank-d", 5, 3, 2));
        log.extend(round_of(6, &ALL));
        assert!(policy_failures(&log).is_empty(), "{:?}", policy_failures(&log));
        // Back in round 5, before the release: the contribution and the aggregate are named.
        let mut early = log[..20].to_vec(); // rounds 1 to 3, the quarantine, round 4
        early.extend(round_of(5, &ALL));
        assert_eq!(
            policy_failures(&early),
            vec![
                "record 23 (contribution): contribution from bank-d, quarantined since round 3",
                "record 24 (aggregate): aggregates bank-d, quarantined since round 3",
            ]
        );
        // A quarantine of someone the roster does not hold.
        let mut r = Report::default();
        let q = quarantine_of("bank-d", 3);
        Policy::default().record(0, &q, "q", &|_| false, &mut r);
        let f = lines(&r);
        assert_eq!(f[0], "q: bank-d is not an enrolled participant here", "{f:?}");
        assert_eq!(
            f[1], "q: bank-d is not a contributor of an earlier aggregate of round 3",
            "{f:?}"
        );
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn quarantine_evidence_rules() {
        let Record::Quarantine { evidence, .. } = quarantine_of("bank-d", 3) else {
            unreachable!()
        };
        assert_eq!(check_quarantine_evidence(&evidence), Ok(()));
        let without = |name: &str| evidence.iter().filter(|m| m.name != name).cloned().collect::<Vec<_>>();
        assert_eq!(
            check_quarantine_evidence(&without("ewma_score")),
            Err("evidence lacks ewma_score or threshold".into())
        );
        // Without the policy figures only the score against the threshold is checked.
        let bare: Vec<Metric> = evidence
            .iter()
            .filter(|m| m.name == "ewma_score" || m.name == "threshold")
            .cloned()
            .collect();
        assert_eq!(check_quarantine_evidence(&bare), Ok(()));
        let set = |name: &str, value: f64| {
            let mut e = evidence.clone();
            for m in &mut e {
                if m.name == name {
                    m.value = value;
                }
            }
            check_quarantine_evidence(&e)
        };
        assert!(set("ewma_score", f64::NAN).is_err_and(|e| e.contains("is not above")));
        assert!(set("threshold", 0.6000001).is_err_and(|e| e.contains("is not max(policy_factor")));
        assert!(set("strikes", f64::NAN).is_err_and(|e| e.contains("the policy needs 3")));
        assert_eq!(set("strikes", 4.0), Ok(()));
    }

    #[test]
    fn abstain_messages_must_say_what_the_record_says() {
        let (rec, (_, payload)) = abstention_of("bank-d", 2, 7);
        let Record::Abstention {
            round, reason, figures, ..
        } = rec
        else {
            unreachable!()
        };
        assert_eq!(check_abstain_message(round, &reason, &figures, &payload), Ok(()));
        let differs = Err("the signed Abstain message says something else than the record".to_string());
        assert_eq!(check_abstain_message(RoundId(3), &reason, &figures, &payload), differs);
        assert_eq!(check_abstain_message(round, "other", &figures, &payload), differs);
        assert_eq!(check_abstain_message(round, &reason, &figures[1..], &payload), differs);
        assert!(check_abstain_message(round, &reason, &figures, b"\xff")
            .is_err_and(|e| e.starts_with("payload is not an Abstain message")));
    }

    #[test]
    fn abstentions_need_a_reason_and_come_once() {
        let (mut a, _) = abstention_of("bank-d", 2, 7);
        let f = policy_failures(&[a.clone(), a.clone()]);
        assert_eq!(f, vec!["record 1 (abstention): bank-d abstained twice from round 2"]);
        if let Record::Abstention { reason, .. } = &mut a {
            reason.clear();
        }
        assert_eq!(
            policy_failures(&[a]),
            vec!["record 0 (abstention): abstention without a reason code"]
        );
    }

    #[test]
    fn a_consistent_quarantine_and_release_verify() {
        let b = quarantine_log(release_of("bank-d", 5, 3, 2), &ALL);
        assert!(failures(&b).is_empty(), "{:?}", failures(&b));
        // Without any release the quarantine is permanent: bank-d may not come back in round 6.
        let mut rest = Vec::new();
        for r in 1..=3 {
            rest.extend(round_of(r, &ALL));
        }
        rest.push(quarantine_of("bank-d", 3));
        rest.extend(round_of(4, &HONEST));
        assert!(failures(&log_of(rest.clone(), None)).is_empty());
        rest.extend(round_of(5, &ALL));
        let f = failures(&log_of(rest, None));
        assert!(
            f.iter()
                .any(|f| f.contains("(contribution)") && f.contains("quarantined since round 3")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|f| f.contains("(aggregate)") && f.contains("aggregates bank-d")),
            "{f:?}"
        );
    }

    #[test]
    fn inconsistent_releases_are_named() {
        // Released after round 4: one round early for a 2-round policy.
        let f = failures(&quarantine_log(release_of("bank-d", 4, 3, 2), &HONEST));
        assert!(
            f.iter()
                .any(|f| f.contains("(quarantine_release)") && f.contains("earlier than")),
            "{f:?}"
        );
        // Names another quarantine round.
        let f = failures(&quarantine_log(release_of("bank-d", 5, 2, 2), &ALL));
        assert!(f.iter().any(|f| f.contains("names the quarantine of round 2")), "{f:?}");
        // Releases someone never quarantined (and bank-d stays quarantined, so round 6 fails too).
        let f = failures(&quarantine_log(release_of("bank-a", 5, 3, 2), &ALL));
        assert!(f.iter().any(|f| f.contains("bank-a is not quarantined")), "{f:?}");
        assert!(f.iter().any(|f| f.contains("quarantined since round 3")), "{f:?}");
        // after_rounds 0 is never a valid policy.
        let f = failures(&quarantine_log(release_of("bank-d", 5, 3, 0), &ALL));
        assert!(f.iter().any(|f| f.contains("earlier than")), "{f:?}");
    }

    #[test]
    fn quarantine_evidence_and_context_are_checked() {
        let with = |q: Record| {
            let mut rest = Vec::new();
            for r in 1..=3 {
                rest.extend(round_of(r, &ALL));
            }
            rest.push(q);
            failures(&log_of(rest, None))
        };
        assert!(with(quarantine_of("bank-d", 3)).is_empty());
        let edit = |name: &str, value: f64| {
            let Record::Quarantine {
                round,
                participant,
                reason,
                mut evidence,
            } = quarantine_of("bank-d", 3)
            else {
                unreachable!()
            };
            for m in &mut evidence {
                if m.name == name {
                    m.value = value;
                }
            }
            Record::Quarantine {
                round,
                participant,
                reason,
                evidence,
            }
        };
        for (name, value, needle) in [
            ("threshold", 0.7, "is not max(policy_factor"),
            ("ewma_score", 0.5, "is not above the threshold"),
            ("strikes", 2.0, "the policy needs 3"),
        ] {
            let f = with(edit(name, value));
            assert!(f.iter().any(|f| f.contains(needle)), "{name}: {f:?}");
        }
        // Not in its round's aggregate; quarantined twice.
        let f = with(quarantine_of("bank-d", 4));
        assert!(
            f.iter()
                .any(|f| f.contains("not a contributor of an earlier aggregate of round 4")),
            "{f:?}"
        );
        let mut rest = Vec::new();
        for r in 1..=3 {
            rest.extend(round_of(r, &ALL));
        }
        rest.push(quarantine_of("bank-d", 3));
        rest.push(quarantine_of("bank-d", 3));
        let f = failures(&log_of(rest, None));
        assert!(f.iter().any(|f| f.contains("already quarantined")), "{f:?}");
    }

    #[test]
    fn abstentions_are_signed_and_exclusive_of_contributions() {
        let (a, pa) = abstention_of("bank-d", 2, 7);
        let mut rest = round_of(1, &ALL);
        rest.push(a.clone());
        rest.extend(round_of(2, &HONEST));
        let ok = log_of(rest.clone(), with_contribution_payloads(&rest, pa.clone()));
        let report = verify(&ok, &trust(0), None);
        assert!(report.ok(), "{:?}", report.failures);
        // Forged signature (another participant's key).
        let (forged, pf) = abstention_of("bank-a", 2, 7);
        let Record::Abstention { signature, .. } = forged else {
            unreachable!()
        };
        let mut bad = a.clone();
        if let Record::Abstention { signature: s, .. } = &mut bad {
            *s = signature;
        }
        let mut r2 = round_of(1, &ALL);
        r2.push(bad);
        r2.extend(round_of(2, &HONEST));
        let p2 = with_contribution_payloads(&r2, pf);
        let f = failures(&log_of(r2, p2));
        assert!(
            f.iter().any(|f| f.contains("signature of bank-d does not verify")),
            "{f:?}"
        );
        // Abstained and contributed to the same round.
        let mut r3 = round_of(1, &ALL);
        r3.push(a.clone());
        r3.extend(round_of(2, &ALL));
        let p3 = with_contribution_payloads(&r3, pa.clone());
        let f = failures(&log_of(r3, p3));
        assert!(
            f.iter()
                .any(|f| f.contains("abstained from round 2 but also contributed")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|f| f.contains("abstained from round 2 but is in its aggregate")),
            "{f:?}"
        );
        // The record's figures differ from the signed message's.
        let mut edited = a.clone();
        if let Record::Abstention { figures, .. } = &mut edited {
            figures[0].value = 1.0;
        }
        let mut r4 = round_of(1, &ALL);
        r4.push(edited);
        let p4 = with_contribution_payloads(&r4, pa);
        let f = failures(&log_of(r4, p4));
        assert!(
            f.iter().any(|f| f.contains("says something else than the record")),
            "{f:?}"
        );
    }
}
