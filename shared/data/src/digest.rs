//! The content digest of the public transfer set: SHA-256 over a documented canonical byte
//! encoding, so that the coordinator and every participant can check they hold the same samples.
//!
//! Layout (all integers little-endian; see docs/data.md):
//! `TAG (32 bytes) || n: u64 || dim: u64 || n*dim features: f32 bits, row-major ||
//!  ids.len(): u64 || ids: u64 each`.

use sha2::{Digest, Sha256};

use crate::{DataError, Dataset};

/// Domain-separation tag opening the encoding (exactly 32 ASCII bytes).
pub const PUBLIC_DIGEST_TAG: &[u8; 32] = b"fedistill/public-transfer-set/v1";

/// SHA-256 of the canonical encoding of `public`'s features and the sample `ids`. Labels are not
/// covered: the public set is unlabeled for participants.
pub fn public_digest(public: &Dataset, ids: &[u64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PUBLIC_DIGEST_TAG);
    h.update((public.n as u64).to_le_bytes());
    h.update((public.dim as u64).to_le_bytes());
    let mut buf = Vec::with_capacity(public.dim * 4);
    for row in public.features.chunks(public.dim.max(1)) {
        buf.clear();
        for v in row {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&buf);
    }
    h.update((ids.len() as u64).to_le_bytes());
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().into()
}

/// SHA-256 and size of a file's bytes, streamed (the digest a task card declares for its public set).
pub fn sha256_file(path: &std::path::Path) -> Result<([u8; 32], u64), DataError> {
    use std::io::Read;
    let file = path.display().to_string();
    let io = |source| DataError::Io {
        file: file.clone(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().into(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataKind;

    fn ds(features: Vec<f32>) -> Dataset {
        Dataset::new(
            "t",
            features,
            vec![0, 1],
            2,
            DataKind::Tabular,
            vec!["a".into(), "b".into()],
        )
        .expect("consistent")
    }

    #[test]
    fn digest_matches_the_documented_layout() {
        // Expected value: SHA-256 of the bytes assembled by hand from the documented layout.
        let d = ds(vec![1.0, -2.5, 0.0, 3.25]);
        let mut bytes = PUBLIC_DIGEST_TAG.to_vec();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&2u64.to_le_bytes());
        for v in [1.0f32, -2.5, 0.0, 3.25] {
            bytes.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&9u64.to_le_bytes());
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(public_digest(&d, &[7, 9]), want);
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = public_digest(&ds(vec![1.0, 2.0, 3.0, 4.0]), &[0, 1]);
        assert_ne!(base, public_digest(&ds(vec![1.0, 2.0, 3.0, 4.5]), &[0, 1]));
        assert_ne!(base, public_digest(&ds(vec![1.0, 2.0, 3.0, 4.0]), &[1, 0]));
        let mut labels_changed = ds(vec![1.0, 2.0, 3.0, 4.0]);
        labels_changed.labels = vec![1, 0];
        assert_eq!(base, public_digest(&labels_changed, &[0, 1]));
    }
}
