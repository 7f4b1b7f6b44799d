//! cargo-fuzz target for the frame decoder and the signed envelope: arbitrary bytes must never panic,
//! never allocate beyond the cap, and anything that decodes must survive an encode/decode round trip
//! byte for byte.

#![no_main]

use fedistill_shared::crypto::{Signed, SignedMessage};
use fedistill_shared::wire::{decode_frame, decode_header, encode_frame, WireError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Sample {
    round: u64,
    name: String,
    values: Vec<f32>,
    #[serde(with = "fedistill_shared::wire::bytes")]
    blob: Vec<u8>,
}

impl SignedMessage for Sample {
    const DOMAIN: &'static str = "fedistill/fuzz";
}

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    match decode_header(data, CAP) {
        Ok(h) => assert!(h.len <= CAP),
        Err(WireError::Incomplete { needed }) => assert!(needed > 0 && data.len() < HEADER_LEN),
        Err(_) => {}
    }
    if let Ok(d) = decode_frame::<Sample>(data, CAP) {
        assert!(d.consumed <= data.len());
        let again = encode_frame(d.kind, &d.value).expect("re-encode");
        let back = decode_frame::<Sample>(&again, CAP).expect("decode own encoding");
        // Compare encodings, not values: NaN != NaN, but its bits must survive the round trip.
        assert_eq!(encode_frame(back.kind, &back.value).expect("re-encode"), again);
    }
    if let Ok(d) = decode_frame::<Signed<Sample>>(data, CAP) {
        let _ = d.value.payload_digest();
    }
});
