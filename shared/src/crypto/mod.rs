//! ed25519 identities and domain-separated signed envelopes (`Signed<T>` -> `Verified<T>`).
