//! The one error type of secure aggregation: every variant names the participant, index or length at fault,
//! so a driver can turn it into a reject code or a log line without re-deriving what went wrong.

use super::ShareKind;

/// Everything that can go wrong in the secure-aggregation core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecAggError {
    /// An input value is NaN or infinite and has no fixed-point encoding.
    #[error("value at index {index} is not finite")]
    NonFinite {
        /// Position of the value in the input vector.
        index: usize,
    },
    /// An input value's magnitude is at or above `2^(62 - FRAC_BITS)`.
    #[error("value {value} at index {index} is out of the fixed-point range (|v| must be < {limit})")]
    OutOfRange {
        /// Position of the value in the input vector.
        index: usize,
        /// The offending value.
        value: f32,
        /// The exclusive bound on `|v|`.
        limit: f64,
    },
    /// A real-valued standard deviation cannot be turned into a fixed-point variance.
    #[error("noise standard deviation {sigma} is not a finite non-negative number of representable size")]
    BadNoiseScale {
        /// The offending standard deviation.
        sigma: f64,
    },
    /// More participants than GF(256) has non-zero x-coordinates.
    #[error("{n} participants, at most {max} are supported (Shamir x-coordinate = index + 1 <= 255)")]
    TooManyParticipants {
        /// Requested number of participants.
        n: usize,
        /// The largest supported number.
        max: usize,
    },
    /// Fewer participants than the graph needs.
    #[error("{n} participants, at least {min} are needed")]
    TooFewParticipants {
        /// Requested number of participants.
        n: usize,
        /// The smallest supported number.
        min: usize,
    },
    /// The Shamir threshold is outside `2..=max`.
    #[error("threshold {t} is outside 2..={max}")]
    BadThreshold {
        /// Requested threshold.
        t: usize,
        /// The largest threshold the graph allows.
        max: usize,
    },
    /// The Harary degree `k` is odd or below 2.
    #[error("Harary degree {k} must be even and at least 2")]
    BadDegree {
        /// Requested degree.
        k: usize,
    },
    /// The public-key list and the graph disagree on the number of participants.
    #[error("{keys} public keys for a graph on {graph} participants")]
    KeyCountMismatch {
        /// Number of public keys supplied.
        keys: usize,
        /// Number of nodes in the graph.
        graph: usize,
    },
    /// A participant index is not below the number of participants.
    #[error("participant index {index} is out of range (n = {n})")]
    IndexOutOfRange {
        /// The offending index.
        index: usize,
        /// Number of participants.
        n: usize,
    },
    /// The same index appears twice in a participant set.
    #[error("participant {index} appears twice in a participant set")]
    DuplicateIndex {
        /// The repeated index.
        index: usize,
    },
    /// The public keys at `me`'s position are not the ones derived from `me`'s secrets.
    #[error("the public keys at index {me} are not this participant's")]
    OwnKeyMismatch {
        /// The caller's claimed index.
        me: usize,
    },
    /// The caller's index is missing from the set of participants whose shares were confirmed.
    #[error("participant {me} is not in the confirmed share set U2")]
    NotInU2 {
        /// The caller's index.
        me: usize,
    },
    /// Fewer live participants than the threshold: continuing would expose too small a sum.
    #[error("only {have} live participants (need at least the threshold {need})")]
    TooFewSurvivors {
        /// Live participants counted.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// An X25519 exchange with a peer's advertised key gave the all-zero output (a low-order point).
    #[error("participant {peer}'s public key is a low-order point (non-contributory key exchange)")]
    NonContributoryKey {
        /// The peer whose key is degenerate.
        peer: usize,
    },
    /// An encrypted share addressed to someone else.
    #[error("share from {from} is addressed to {to}, not to {me}")]
    WrongRecipient {
        /// Claimed sender.
        from: u32,
        /// Claimed recipient.
        to: u32,
        /// The caller's index.
        me: usize,
    },
    /// An encrypted share from an index outside the participant list.
    #[error("share from unknown participant {from} (n = {n})")]
    UnknownSender {
        /// Claimed sender.
        from: u32,
        /// Number of participants.
        n: usize,
    },
    /// Two encrypted shares from the same sender.
    #[error("two shares from participant {from}")]
    DuplicateSender {
        /// The repeated sender.
        from: u32,
    },
    /// Authenticated decryption failed: tampered, truncated, misaddressed or from another round.
    #[error("share from participant {from} failed authentication")]
    Decryption {
        /// Claimed sender.
        from: u32,
    },
    /// A share plaintext of the wrong length.
    #[error("share from participant {from} has a {len}-byte plaintext, expected {expected}")]
    BadPlaintextLength {
        /// Claimed sender.
        from: u32,
        /// Length found.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// A decrypted share whose Shamir x-coordinate is not the recipient's (`index + 1`).
    #[error("share from participant {from} carries x-coordinate {found}, expected {expected}")]
    ShareIdentifierMismatch {
        /// Claimed sender.
        from: u32,
        /// The x-coordinate found.
        found: u8,
        /// The recipient's x-coordinate.
        expected: u8,
    },
    /// [`super::HeldShares`] were opened by a different participant than the caller.
    #[error("shares held by {held_by} used by participant {me}")]
    HolderMismatch {
        /// The holder the shares belong to.
        held_by: usize,
        /// The caller's index.
        me: usize,
    },
    /// The coordinator asked for both the self-seed and the mask-secret share of one peer: with both, it could
    /// unmask that peer's individual input. This refusal is what the protocol's privacy rests on.
    #[error("both the self-seed and the mask-secret share of participant {peer} were requested")]
    BothSharesRequested {
        /// The peer named in both lists.
        peer: usize,
    },
    /// The coordinator asked a live participant for its own mask secret.
    #[error("participant {me} was asked for its own mask-secret share")]
    OwnMaskSecretRequested {
        /// The caller's index.
        me: usize,
    },
    /// The coordinator named the same peer twice in one request list.
    #[error("participant {peer} is requested twice")]
    DuplicateRequest {
        /// The repeated peer.
        peer: usize,
    },
    /// The coordinator asked for the share of a peer this holder holds no share of (not a neighbour, or its
    /// shares never arrived).
    #[error("no share of participant {owner} is held here")]
    NoShareHeld {
        /// The peer asked about.
        owner: usize,
    },
    /// No masked inputs were given to unmask.
    #[error("no masked inputs to unmask")]
    NoMaskedInputs,
    /// A masked input from a participant outside U2 (its shares were never confirmed).
    #[error("masked input from participant {participant}, which is not in U2")]
    MaskedInputOutsideU2 {
        /// The sender of the masked input.
        participant: usize,
    },
    /// Two masked inputs from one participant.
    #[error("two masked inputs from participant {participant}")]
    DuplicateMaskedInput {
        /// The repeated participant.
        participant: usize,
    },
    /// A vector of the wrong length.
    #[error("vector from participant {participant} has length {len}, expected {expected}")]
    VectorLength {
        /// The vector's owner.
        participant: usize,
        /// Length found.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// A revealed share of the wrong kind for its owner: a self-seed share of a dropped participant, a
    /// mask-secret share of a survivor, or a share of someone outside U2.
    #[error("holder {holder} revealed a {kind:?} share of participant {owner}, which its status does not call for")]
    UnexpectedShare {
        /// The revealing holder.
        holder: usize,
        /// The share's owner.
        owner: usize,
        /// The kind revealed.
        kind: ShareKind,
    },
    /// A revealed share from a participant that is not one of the owner's share holders.
    #[error("participant {holder} is not a share holder of participant {owner}")]
    NotAHolder {
        /// The revealing participant.
        holder: usize,
        /// The share's owner.
        owner: usize,
    },
    /// A revealed share of the wrong length or with an x-coordinate other than `holder + 1`.
    #[error("malformed {kind:?} share of participant {owner} from holder {holder}")]
    MalformedShare {
        /// The revealing holder.
        holder: usize,
        /// The share's owner.
        owner: usize,
        /// The share's kind.
        kind: ShareKind,
    },
    /// The same holder revealed the same share twice.
    #[error("holder {holder} revealed its {kind:?} share of participant {owner} twice")]
    DuplicateShare {
        /// The revealing holder.
        holder: usize,
        /// The share's owner.
        owner: usize,
        /// The share's kind.
        kind: ShareKind,
    },
    /// Fewer than `t` shares of a secret that unmasking needs.
    #[error("{have} shares of participant {owner}'s {kind:?}, need {need}")]
    NotEnoughShares {
        /// The secret's owner.
        owner: usize,
        /// The secret's kind.
        kind: ShareKind,
        /// Shares available.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// More than `t` shares were revealed and they do not lie on one polynomial: at least one is forged.
    #[error("the {kind:?} shares of participant {owner} are inconsistent")]
    InconsistentShares {
        /// The secret's owner.
        owner: usize,
        /// The secret's kind.
        kind: ShareKind,
    },
    /// A reconstructed mask secret does not match the owner's advertised mask public key.
    #[error("the reconstructed mask secret of participant {owner} does not match its public key")]
    ReconstructedKeyMismatch {
        /// The secret's owner.
        owner: usize,
    },
    /// A vector too long for one ChaCha20 keystream (2^32 blocks of 64 bytes).
    #[error("vector of {len} elements exceeds the mask keystream")]
    MaskTooLong {
        /// The vector length.
        len: usize,
    },
    /// HKDF-SHA256 refused the output length (cannot happen for the 32-byte keys derived here; kept so that
    /// no code path panics).
    #[error("key derivation failed")]
    KeyDerivation,
    /// AEAD encryption failed (cannot happen for the short plaintexts sealed here; kept so that no code path
    /// panics).
    #[error("share encryption failed")]
    Encryption,
    /// The Shamir layer (vsss-rs) rejected its input.
    #[error("Shamir secret sharing failed: {detail}")]
    Shamir {
        /// vsss-rs's description of the problem.
        detail: String,
    },
}
