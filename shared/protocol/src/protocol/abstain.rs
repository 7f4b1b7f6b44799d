//! A participant's abstention (`Abstain`): the one place it is assembled ([`abstain_message`],
//! [`budget_exhausted_message`] with the figure names of `budget_exhausted`) and the shape the coordinator
//! requires of it ([`check_abstain`]). The participant lifecycle and the simulator build it here; the
//! coordinator's state machine checks it here and logs it through `protocol::records`.

use std::collections::BTreeSet;

use crate::crypto::RoundId;
use crate::wire::messages::{Abstain, AbstainReason};

/// Longest abstention figure name, in bytes (reason codes are [`AbstainReason`] names, all shorter).
pub const MAX_ABSTAIN_REASON: usize = 64;
/// Most figures in an abstention.
pub const MAX_ABSTAIN_FIGURES: usize = 16;

/// The figures of a [`AbstainReason::BudgetExhausted`] abstention, in the order the message carries them:
/// the participant's epsilon budget, what it has spent, and what releasing this round would reach.
pub const BUDGET_EXHAUSTED_FIGURES: [&str; 3] = ["epsilon_budget", "epsilon_spent", "epsilon_would_reach"];

/// An `Abstain` message (unsigned) for `round`: `reason` and its `figures` as (name, value) pairs, in the
/// order given (the log sorts them).
pub fn abstain_message(round: RoundId, reason: AbstainReason, figures: &[(&str, f64)]) -> Abstain {
    Abstain {
        round,
        reason,
        figures: figures.iter().map(|(n, v)| ((*n).to_string(), *v)).collect(),
    }
}

/// The abstention of a participant whose differential-privacy budget `budget` would be exceeded by `round`:
/// it has spent `spent`, and releasing the round would reach `would_reach` (docs/privacy.md, "When the
/// budget runs out").
pub fn budget_exhausted_message(round: RoundId, budget: f64, spent: f64, would_reach: f64) -> Abstain {
    let [b, s, w] = BUDGET_EXHAUSTED_FIGURES;
    abstain_message(
        round,
        AbstainReason::BudgetExhausted,
        &[(b, budget), (s, spent), (w, would_reach)],
    )
}

/// Checks an abstention's figures: at most 16, with unique, non-empty names of at most 64 bytes of
/// `[a-z0-9_]` and finite values (so it can be logged canonically). The reason is typed: a name this build
/// does not know never decodes.
pub fn check_abstain(a: &Abstain) -> Result<(), String> {
    let code_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_ABSTAIN_REASON
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if a.figures.len() > MAX_ABSTAIN_FIGURES {
        return Err(format!(
            "{} abstention figures (at most {MAX_ABSTAIN_FIGURES})",
            a.figures.len()
        ));
    }
    let mut names = BTreeSet::new();
    for (n, v) in &a.figures {
        if !code_ok(n) || !names.insert(n.as_str()) {
            return Err(format!(
                "abstention figure name {n:?} is empty, too long, not [a-z0-9_] or repeated"
            ));
        }
        if !v.is_finite() {
            return Err(format!("abstention figure {n} = {v} is not finite"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_abstention_names_its_reason_and_figures() {
        let a = budget_exhausted_message(RoundId(3), 5.0, 4.0, 8.0);
        assert_eq!(
            a,
            Abstain {
                round: RoundId(3),
                reason: AbstainReason::BudgetExhausted,
                figures: vec![
                    ("epsilon_budget".into(), 5.0),
                    ("epsilon_spent".into(), 4.0),
                    ("epsilon_would_reach".into(), 8.0),
                ],
            }
        );
        assert_eq!(check_abstain(&a), Ok(()));
        let generic = abstain_message(RoundId(1), AbstainReason::BudgetExhausted, &[("x", 1.0)]);
        assert_eq!(generic.figures, vec![("x".to_string(), 1.0)]);
        assert_eq!(generic.reason.as_str(), "budget_exhausted");
    }

    /// A peer's abstention with a reason this build does not know never becomes a `Verified<Abstain>`: its
    /// signed payload does not decode, which the coordinator answers with `bad_payload` and the reason's
    /// name in the message; a refused message's figures are refused in their own words.
    #[test]
    fn an_unknown_reason_from_a_peer_is_refused_as_a_bad_payload() {
        use crate::crypto::{FederationId, ParticipantId, ReplayGuard, Signed, SignedMessage, Signer, SigningIdentity};
        use crate::wire::messages::RejectCode;
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Newer {
            round: RoundId,
            reason: String,
            figures: Vec<(String, f64)>,
        }
        impl SignedMessage for Newer {
            const DOMAIN: &'static str = Abstain::DOMAIN;
        }
        let key = SigningIdentity::from_seed([3; 32]);
        let fed = FederationId::new("abstain").expect("valid");
        let me = Signer::Participant(ParticipantId::new("p"));
        let newer = Newer {
            round: RoundId(1),
            reason: "guard_regression".into(),
            figures: Vec::new(),
        };
        let s = Signed::sign(&key, me.clone(), fed.clone(), RoundId(1), 5, &newer).expect("sign");
        let as_abstain = Signed::<Abstain>::from_parts(me.clone(), fed.clone(), RoundId(1), 5, s.payload, s.signature);
        let err = as_abstain
            .verify(&key.public_key(), &me, &ReplayGuard::new(fed), RoundId(1))
            .expect_err("refused");
        assert_eq!(RejectCode::from(&err), RejectCode::BadPayload);
        let text = err.to_string();
        assert!(
            text.contains("unknown abstention reason `guard_regression` (this build knows budget_exhausted)"),
            "{text}"
        );

        let refused = super::super::Rejection::Malformed("\"x\" does not sort strictly after \"y\"".into());
        assert_eq!(refused.code(), RejectCode::BadPayload);
        assert_eq!(refused.to_string(), "\"x\" does not sort strictly after \"y\"");
    }

    #[test]
    fn malformed_figures_are_refused() {
        let with = |figures: &[(&str, f64)]| {
            check_abstain(&abstain_message(RoundId(1), AbstainReason::BudgetExhausted, figures))
        };
        assert!(with(&[("a", 1.0), ("a", 2.0)]).is_err_and(|e| e.contains("repeated")));
        assert!(with(&[("Bad", 1.0)]).is_err_and(|e| e.contains("not [a-z0-9_]")));
        assert!(with(&[("a", f64::NAN)]).is_err_and(|e| e.contains("not finite")));
        let many: Vec<(String, f64)> = (0..=MAX_ABSTAIN_FIGURES).map(|i| (format!("f{i}"), 0.0)).collect();
        let many: Vec<(&str, f64)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert!(with(&many).is_err_and(|e| e.contains("at most 16")));
        assert_eq!(with(&[]), Ok(()));
    }
}
