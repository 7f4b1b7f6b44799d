//! RFC 6962 / RFC 9162 Merkle tree arithmetic: leaf and node hashes, roots, inclusion and
//! consistency proofs.
//!
//! The arithmetic is `tlog_tiles` (Cloudflare's port of Go's `golang.org/x/mod/sumdb/tlog`), which
//! keeps the tree as a flat sequence of "stored hashes": for each appended leaf, the leaf hash plus
//! the hash of every subtree that leaf completes. The coordinator's store persists exactly that
//! sequence; [`MemoryTree`] holds it in memory for auditors and witnesses. This module wraps the
//! crate so the rest of fedistill sees [`Digest`]s and our own error type, and bounds proof sizes
//! before handing untrusted proofs to the crate.

use crate::ids::Digest;
use tlog_tiles::{Hash, HashReader};

/// Longest proof accepted (a tree of 2^64 leaves needs at most 64 hashes; consistency one more).
pub const MAX_PROOF_LEN: usize = 65;

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof does not lead to the claimed root(s).
    #[error("proof does not verify")]
    Invalid,
    /// Indices or sizes are out of range (leaf past the tree, old tree larger than new…).
    #[error("bad proof request: {0}")]
    BadRange(String),
    /// The proof has more hashes than any valid proof.
    #[error("proof has {0} hashes, more than the {MAX_PROOF_LEN} any tree needs")]
    TooLong(usize),
    /// Reading stored hashes failed (missing node, storage error).
    #[error("reading tree nodes: {0}")]
    Storage(String),
}

/// Supplies stored hashes by their `tlog` storage index (see [`stored_hash_index`]).
pub trait NodeSource {
    /// Returns exactly one hash per index, in order, or an error.
    fn nodes(&self, indexes: &[u64]) -> Result<Vec<Digest>, String>;
}

struct Adapter<'a, S: NodeSource + ?Sized>(&'a S);

impl<S: NodeSource + ?Sized> HashReader for Adapter<'_, S> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let got = self.0.nodes(indexes).map_err(tlog_tiles::Error::InvalidInput)?;
        // tlog_tiles asserts on a short answer; turn that into an error instead.
        if got.len() != indexes.len() {
            return Err(tlog_tiles::Error::InvalidInput(format!(
                "node source returned {} hashes for {} indexes",
                got.len(),
                indexes.len()
            )));
        }
        Ok(got.into_iter().map(|d| Hash(d.0)).collect())
    }
}

fn map_err(e: tlog_tiles::Error) -> ProofError {
    match e {
        tlog_tiles::Error::InvalidProof => ProofError::Invalid,
        tlog_tiles::Error::InvalidInput(m) => ProofError::Storage(m),
        other => ProofError::Storage(other.to_string()),
    }
}

/// Root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Digest = Digest(tlog_tiles::EMPTY_HASH.0);

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    Digest(tlog_tiles::record_hash(data).0)
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: Digest, right: Digest) -> Digest {
    Digest(tlog_tiles::node_hash(Hash(left.0), Hash(right.0)).0)
}

/// Storage index of the hash of the `n`-th subtree at `level` (level 0 = leaves).
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    tlog_tiles::stored_hash_index(level, n)
}

/// Number of stored hashes for a tree of `size` leaves.
pub fn stored_hash_count(size: u64) -> u64 {
    tlog_tiles::stored_hash_count(size)
}

/// The hashes to store when appending leaf number `n` (0-based) with hash `leaf`; they go at
/// consecutive indexes starting at `stored_hash_index(0, n)`. Reads earlier hashes from `src`.
pub fn stored_hashes_for_leaf<S: NodeSource + ?Sized>(
    n: u64,
    leaf: Digest,
    src: &S,
) -> Result<Vec<Digest>, ProofError> {
    tlog_tiles::stored_hashes_for_record_hash(n, Hash(leaf.0), &Adapter(src))
        .map(|v| v.into_iter().map(|h| Digest(h.0)).collect())
        .map_err(map_err)
}

/// Root hash of the first `size` leaves.
pub fn root<S: NodeSource + ?Sized>(size: u64, src: &S) -> Result<Digest, ProofError> {
    tlog_tiles::tree_hash(size, &Adapter(src))
        .map(|h| Digest(h.0))
        .map_err(map_err)
}

/// Inclusion proof (RFC 9162 audit path, leaf sibling first) for leaf `index` in the tree of `size`.
pub fn prove_inclusion<S: NodeSource + ?Sized>(index: u64, size: u64, src: &S) -> Result<Vec<Digest>, ProofError> {
    if index >= size {
        return Err(ProofError::BadRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    tlog_tiles::prove_record(size, index, &Adapter(src))
        .map(|v| v.into_iter().map(|h| Digest(h.0)).collect())
        .map_err(map_err)
}

/// Consistency proof from the tree of `old` leaves to the tree of `new` leaves (RFC 9162).
/// Empty when `old == 0` or `old == new`.
pub fn prove_consistency<S: NodeSource + ?Sized>(old: u64, new: u64, src: &S) -> Result<Vec<Digest>, ProofError> {
    if old > new {
        return Err(ProofError::BadRange(format!(
            "old size {old} is larger than new size {new}"
        )));
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    tlog_tiles::prove_tree(new, old, &Adapter(src))
        .map(|v| v.into_iter().map(|h| Digest(h.0)).collect())
        .map_err(map_err)
}

/// Checks that `leaf` is leaf number `index` of the tree of `size` leaves with root `root`.
pub fn verify_inclusion(leaf: Digest, index: u64, size: u64, proof: &[Digest], root: Digest) -> Result<(), ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong(proof.len()));
    }
    if index >= size {
        return Err(ProofError::BadRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let p: Vec<Hash> = proof.iter().map(|d| Hash(d.0)).collect();
    tlog_tiles::check_record(&p, size, Hash(root.0), index, Hash(leaf.0)).map_err(map_invalid)
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    old_root: Digest,
    new_size: u64,
    new_root: Digest,
    proof: &[Digest],
) -> Result<(), ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong(proof.len()));
    }
    if old_size > new_size {
        return Err(ProofError::BadRange(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Invalid)
        };
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Invalid)
        };
    }
    let p: Vec<Hash> = proof.iter().map(|d| Hash(d.0)).collect();
    tlog_tiles::check_tree(&p, new_size, Hash(new_root.0), old_size, Hash(old_root.0)).map_err(map_invalid)
}

fn map_invalid(e: tlog_tiles::Error) -> ProofError {
    match e {
        tlog_tiles::Error::InvalidInput(m) => ProofError::BadRange(m),
        _ => ProofError::Invalid,
    }
}

/// An in-memory log tree (the stored-hash sequence), for auditors, witnesses and tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    hashes: Vec<Digest>,
    size: u64,
}

impl NodeSource for MemoryTree {
    fn nodes(&self, indexes: &[u64]) -> Result<Vec<Digest>, String> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or_else(|| format!("no stored hash at index {i}"))
            })
            .collect()
    }
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stored-hash sequence (what a durable store keeps, index = storage index).
    pub fn stored_hashes(&self) -> &[Digest] {
        &self.hashes
    }

    /// Appends a leaf given its data (hashes it with [`leaf_hash`]).
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(leaf_hash(data));
    }

    /// Appends a leaf given its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: Digest) {
        // Reads only hashes already present, so it cannot fail.
        let new = stored_hashes_for_leaf(self.size, leaf, self)
            .expect("invariant: a memory tree holds every stored hash below its size");
        self.hashes.extend(new);
        self.size += 1;
    }

    /// Root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Digest, ProofError> {
        if size > self.size {
            return Err(ProofError::BadRange(format!(
                "size {size} exceeds the tree's {}",
                self.size
            )));
        }
        root(size, self)
    }

    /// Inclusion proof for `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, ProofError> {
        if size > self.size {
            return Err(ProofError::BadRange(format!(
                "size {size} exceeds the tree's {}",
                self.size
            )));
        }
        prove_inclusion(index, size, self)
    }

    /// Consistency proof between two sizes.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Digest>, ProofError> {
        if new > self.size {
            return Err(ProofError::BadRange(format!(
                "size {new} exceeds the tree's {}",
                self.size
            )));
        }
        prove_consistency(old, new, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6962 reference data as published by transparency-dev/merkle (testonly/constants.go:
    // LeafInputs, RootHashes; proof/verify_test.go: inclusionProofs, consistencyProofs — that file
    // numbers leaves from 1, converted to 0-based here). The same values appear in the
    // certificate-transparency-go merkle tests.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    // (leaf index 0-based, tree size, proof)
    const INCLUSION: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn d(s: &str) -> Digest {
        Digest::from_hex(s).expect("test vector is hex")
    }

    fn reference_tree() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in LEAVES {
            t.push(&hex::decode(l).expect("test vector is hex"));
        }
        t
    }

    #[test]
    fn roots_match_rfc6962_reference() {
        let t = reference_tree();
        for (size, want) in ROOTS.iter().enumerate() {
            assert_eq!(t.root(size as u64).expect("in range"), d(want), "size {size}");
        }
        assert_eq!(EMPTY_ROOT, d(ROOTS[0]));
        assert_eq!(leaf_hash(b""), d(ROOTS[1]));
    }

    #[test]
    fn inclusion_proofs_match_reference_and_verify() {
        let t = reference_tree();
        for (index, size, proof) in INCLUSION {
            let want: Vec<Digest> = proof.iter().map(|s| d(s)).collect();
            assert_eq!(
                t.inclusion_proof(index, size).expect("in range"),
                want,
                "leaf {index} size {size}"
            );
            let leaf = leaf_hash(&hex::decode(LEAVES[index as usize]).expect("hex"));
            let root = d(ROOTS[size as usize]);
            verify_inclusion(leaf, index, size, &want, root).expect("reference proof verifies");
            // Corruptions modelled on transparency-dev/merkle's corruptInclusionProof.
            if index > 0 {
                assert!(verify_inclusion(leaf, index - 1, size, &want, root).is_err());
            }
            assert!(verify_inclusion(leaf, index + 1, size, &want, root).is_err());
            assert!(verify_inclusion(leaf, index, size * 2, &want, root).is_err());
            assert!(verify_inclusion(leaf_hash(b"WrongLeaf"), index, size, &want, root).is_err());
            assert!(verify_inclusion(leaf, index, size, &want, EMPTY_ROOT).is_err());
            let mut longer = want.clone();
            longer.push(root);
            assert!(verify_inclusion(leaf, index, size, &longer, root).is_err());
            let mut front = vec![root];
            front.extend(want.iter().copied());
            assert!(verify_inclusion(leaf, index, size, &front, root).is_err());
            for i in 0..want.len() {
                let mut bad = want.clone();
                bad[i].0[0] ^= 8;
                assert!(
                    verify_inclusion(leaf, index, size, &bad, root).is_err(),
                    "bit flip in {i}"
                );
            }
            if !want.is_empty() {
                assert!(verify_inclusion(leaf, index, size, &want[..want.len() - 1], root).is_err());
            }
        }
    }

    #[test]
    fn consistency_proofs_match_reference_and_verify() {
        let t = reference_tree();
        for (old, new, proof) in CONSISTENCY {
            let want: Vec<Digest> = proof.iter().map(|s| d(s)).collect();
            assert_eq!(t.consistency_proof(old, new).expect("in range"), want, "{old}->{new}");
            let (r1, r2) = (d(ROOTS[old as usize]), d(ROOTS[new as usize]));
            verify_consistency(old, r1, new, r2, &want).expect("reference proof verifies");
            if want.is_empty() {
                continue;
            }
            assert!(verify_consistency(old - 1, r1, new, r2, &want).is_err());
            assert!(verify_consistency(old + 1, r1, new, r2, &want).is_err());
            assert!(verify_consistency(old, r1, new * 2, r2, &want).is_err());
            assert!(verify_consistency(old, r2, new, r1, &want).is_err(), "swapped roots");
            assert!(verify_consistency(old, r1, new, r2, &[]).is_err(), "empty proof");
            assert!(verify_consistency(old, r1, new, r2, &want[..want.len() - 1]).is_err());
            for i in 0..want.len() {
                let mut bad = want.clone();
                bad[i].0[0] ^= 16;
                assert!(verify_consistency(old, r1, new, r2, &bad).is_err(), "bit flip in {i}");
            }
        }
    }

    #[test]
    fn every_proof_of_a_larger_tree_verifies_and_bad_ranges_are_errors() {
        let mut t = MemoryTree::new();
        for i in 0u32..37 {
            t.push(&i.to_be_bytes());
        }
        for size in 1..=37u64 {
            let root = t.root(size).expect("in range");
            for index in 0..size {
                let p = t.inclusion_proof(index, size).expect("in range");
                verify_inclusion(leaf_hash(&(index as u32).to_be_bytes()), index, size, &p, root)
                    .expect("own proof verifies");
            }
            for old in 0..=size {
                let p = t.consistency_proof(old, size).expect("in range");
                verify_consistency(old, t.root(old).expect("in range"), size, root, &p).expect("own proof verifies");
            }
        }
        assert!(matches!(t.inclusion_proof(5, 5), Err(ProofError::BadRange(_))));
        assert!(matches!(t.consistency_proof(6, 5), Err(ProofError::BadRange(_))));
        assert!(matches!(t.root(38), Err(ProofError::BadRange(_))));
        assert!(matches!(
            verify_inclusion(EMPTY_ROOT, 0, 1, &[EMPTY_ROOT; 70], EMPTY_ROOT),
            Err(ProofError::TooLong(70))
        ));
        assert!(verify_consistency(5, EMPTY_ROOT, 4, EMPTY_ROOT, &[]).is_err());
    }
}
