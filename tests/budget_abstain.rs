//! End to end with real processes: a participant whose differential-privacy budget runs out abstains (a
//! signed `Abstain`, issue 8) instead of going silent, so later rounds close as soon as the others
//! contributed, not at the collection deadline. The deadline is set far beyond the test's overall wait, so
//! a federation that finishes at all proves no round waited for it (completion, not timing, is asserted).
//! The update log carries the abstentions and `fedistill audit verify` accepts it.
//! Set `FEDISTILL_KEEP_TEST_DIRS=1` to keep the test's directory (configs, store, `logs/*.log`).

mod common;

use std::time::{Duration, Instant};

use common::{
    audit_export_verify_show, free_udp_port, names, provision, write_participant_config, write_trust, Procs,
    StatusServer,
};

/// Overall limit of the run; far below the collection deadline below.
const WAIT: Duration = Duration::from_secs(300);
/// Collection deadline per round: 30 minutes, so no round can close on it within `WAIT`.
const COLLECT_MS: u64 = 1_800_000;
const ROUNDS: u64 = 3;
const NAMES: [&str; 3] = ["p0", "p1", "p2"];

fn data_toml() -> &'static str {
    "[data]\ndataset = \"digits\"\nparticipants = 3\npartition = \"iid\"\nseed = 7\ntest_fraction = 0.1\npublic_fraction = 0.7\n"
}

/// Three participants with DP on (4 epsilon per round); p2's budget (5) covers round 1 only, so it abstains
/// in rounds 2 and 3. Asserts: every round aggregated (the deadline is 30 minutes, the test waits at most 5),
/// p2 contributed to round 1 and abstained (not absent) from rounds 2 and 3 in `/status`, its log says why,
/// the update log holds its two abstentions with the budget figures, and `audit verify` passes.
#[test]
fn a_participant_out_of_budget_abstains_and_rounds_close_without_it() {
    let mut procs = Procs::new();
    let dir = procs.dir().to_path_buf();
    let port = free_udp_port();
    let status = StatusServer::on_free_port();
    let federation = provision(&dir, "budget", port, &NAMES);
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "federation_dir = \"federation\"\nbind = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n\
             status = \"{status}\"\nrounds = {ROUNDS}\nmin_participants = 3\nquorum = 2\n\
             collect_timeout_ms = {COLLECT_MS}\nreport_timeout_ms = 120000\nsamples_per_round = 200\n\
             rule = \"median\"\ntemperature = 2.0\n{}",
            data_toml()
        ),
    )
    .expect("write coordinator.toml");
    for (shard, (n, budget)) in NAMES.iter().zip([100.0, 100.0, 5.0]).enumerate() {
        let privacy = format!("[privacy]\nepsilon_per_round = 4.0\ndelta = 1e-5\nbudget_epsilon = {budget}\n");
        write_participant_config(&dir, n, shard, &[32], 5, &format!("{}{privacy}", data_toml()));
    }
    // The auditor's trust file, as `fedistill demo` writes it: the log key and the three witnesses, 2 of 3.
    write_trust(&dir, &federation, &NAMES);

    let started = Instant::now();
    let deadline = started + WAIT;
    procs.start_coordinator();
    for n in NAMES {
        procs.start_participant(n);
    }
    // The coordinator lingers a few seconds after the last round: read its final /status then.
    let what = format!("a finished /status within {WAIT:?} (deadline {COLLECT_MS} ms per round)");
    let done = procs.wait_for(status, &what, deadline, StatusServer::finished);
    procs.wait_all_exit(
        deadline,
        &format!(
            "the federation did not finish within {WAIT:?} (its rounds' deadline is {COLLECT_MS} ms): a round waited for the abstainer"
        ),
    );

    // Completion counts: every round aggregated; p2 in round 1, abstaining (not absent) in rounds 2 and 3.
    let history = done["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len() as u64, ROUNDS, "{done}");
    for h in &history {
        let round = h["round"].as_u64().unwrap_or(0);
        let (contributors, abstained) = if round == 1 {
            (vec!["p0", "p1", "p2"], vec![])
        } else {
            (vec!["p0", "p1"], vec!["p2"])
        };
        assert_eq!(names(&h["contributors"]), contributors, "round {round}: {h}");
        assert_eq!(names(&h["abstained"]), abstained, "round {round}: {h}");
        assert!(names(&h["absent"]).is_empty(), "round {round}: {h}");
    }
    let p2 = procs.log("p2");
    for round in [2, 3] {
        assert!(
            p2.contains(&format!(
                "privacy budget would be exceeded: abstaining from round {round}"
            )),
            "p2 says why it stops in round {round}:\n{p2}"
        );
    }
    assert!(p2.contains("abstention recorded by the coordinator"), "{p2}");

    let show = audit_export_verify_show(&dir);
    let abstentions: Vec<&str> = show.lines().filter(|l| l.contains("ABSTENTION by")).collect();
    assert_eq!(abstentions.len(), 2, "{abstentions:?}");
    for (line, round) in abstentions.iter().zip([2, 3]) {
        assert!(
            line.contains(&format!("round {round}: ABSTENTION by p2: budget_exhausted"))
                && line.contains("epsilon_budget=5")
                && line.contains("epsilon_spent=")
                && line.contains("epsilon_would_reach="),
            "{line}"
        );
    }
    // p2 spent budget in round 1 only.
    assert!(
        show.lines().any(|l| l.contains("round 1: privacy spend by p2")),
        "{show}"
    );
    assert!(
        !show.lines().any(|l| l.contains("round 2: privacy spend by p2")),
        "{show}"
    );
}
