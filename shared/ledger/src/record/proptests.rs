//! Property tests of the record decoder: arbitrary and mutated bytes never decode to a non-canonical record.

use super::tests::samples;
use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder, and anything it accepts is canonical.
    #[test]
    fn arbitrary_bytes_decode_canonically_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = Record::decode(&bytes) {
            prop_assert_eq!(r.encode().expect("decoded records encode"), bytes);
        }
    }

    /// Mutating one byte of a valid record either fails to decode or yields a record whose
    /// encoding is exactly the mutated bytes (never a silent re-spelling).
    #[test]
    fn mutated_records_stay_canonical(which in 0usize..10, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = samples()[which].encode().expect("encodes");
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(r) = Record::decode(&bytes) {
            prop_assert_eq!(r.encode().expect("encodes"), bytes);
        }
    }
}
