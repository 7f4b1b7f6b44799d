//! Fault injection for tests: `FEDISTILL_FAILPOINT=<name>:<round>` makes a node abort at that named point of
//! that round, as a crash or SIGKILL would, so tests can prove that a crash between two steps loses nothing.
//! Never set in a deployment; an unset or different value costs one environment lookup. Points: the
//! coordinator's `open-persisted` (docs/operations.md) and `secure-unmasking` (a secure round's masked
//! inputs are in, the unmasking requests about to go out), a participant's `labels-delivered`.

use crate::crypto::RoundId;

/// Environment variable that names a crash point.
pub const FAILPOINT_ENV: &str = "FEDISTILL_FAILPOINT";

/// Aborts the process when [`FAILPOINT_ENV`] is `<name>:<round>` for this point and round.
pub fn failpoint(name: &str, round: RoundId) {
    let Ok(v) = std::env::var(FAILPOINT_ENV) else { return };
    if v == format!("{name}:{}", round.0) {
        tracing::error!(failpoint = %v, "failpoint reached: aborting the process");
        std::process::abort();
    }
}
