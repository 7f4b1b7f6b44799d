//! Partitioners that deal the private pool out to participants: IID, Dirichlet label skew,
//! k classes per node, and Dirichlet quantity skew. Every shard comes out non-empty.

use serde::{Deserialize, Serialize};

use crate::rng::{apportion, SplitRng};
use crate::DataError;

/// How the private pool is divided among participants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Partition {
    /// Equal-sized shards of the shuffled pool (sizes differ by at most one).
    Iid,
    /// Label skew: each class is split across participants by proportions drawn from
    /// Dirichlet(alpha); small alpha (0.1) gives each participant few classes, large alpha is near IID.
    Dirichlet {
        /// Concentration, > 0.
        alpha: f64,
    },
    /// Pathological label skew: each participant holds (at most) `k` classes; each class is split
    /// evenly among the participants holding it. Needs `k * participants >= classes present`.
    ClassesPerNode {
        /// Classes per participant, `1..=num_classes`.
        k: usize,
    },
    /// Quantity skew: shard sizes proportional to a Dirichlet(alpha) draw (each at least 1), labels IID.
    QuantitySkew {
        /// Concentration, > 0.
        alpha: f64,
    },
}

impl Default for Partition {
    fn default() -> Self {
        Partition::Dirichlet { alpha: 0.5 }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partition::Iid => write!(f, "iid"),
            Partition::Dirichlet { alpha } => write!(f, "dirichlet(alpha={alpha})"),
            Partition::ClassesPerNode { k } => write!(f, "classes-per-node(k={k})"),
            Partition::QuantitySkew { alpha } => write!(f, "quantity-skew(alpha={alpha})"),
        }
    }
}

impl Partition {
    /// Refuses parameters that can never be satisfied for a dataset with `num_classes` classes.
    pub fn validate(&self, num_classes: usize) -> Result<(), DataError> {
        match *self {
            Partition::Iid => Ok(()),
            Partition::Dirichlet { alpha } | Partition::QuantitySkew { alpha } => {
                if alpha.is_finite() && alpha > 0.0 {
                    Ok(())
                } else {
                    Err(DataError::InvalidSplit(format!(
                        "{self}: alpha must be a finite number > 0"
                    )))
                }
            }
            Partition::ClassesPerNode { k } => {
                if k == 0 || k > num_classes {
                    Err(DataError::InvalidSplit(format!(
                        "{self}: k must be in 1..={num_classes} (the dataset has {num_classes} classes)"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Deals the pool (whose labels are `labels`, in pool order) to `participants` shards; returns,
/// per shard, ascending positions into the pool. Every position lands in exactly one shard.
pub(crate) fn assign(
    labels: &[u32],
    num_classes: usize,
    participants: usize,
    partition: &Partition,
    rng: &mut SplitRng,
) -> Result<Vec<Vec<usize>>, DataError> {
    partition.validate(num_classes)?;
    if participants == 0 || labels.len() < participants {
        return Err(DataError::InvalidSplit(format!(
            "{participants} participants cannot each get a non-empty shard of {} private samples",
            labels.len()
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (pos, &l) in labels.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(pos);
        }
    }
    let mut shards: Vec<Vec<usize>> = vec![Vec::new(); participants];
    let deal_contiguous = |shards: &mut Vec<Vec<usize>>, sizes: &[usize]| {
        let mut at = 0;
        for (s, &size) in shards.iter_mut().zip(sizes) {
            s.extend(at..at + size);
            at += size;
        }
    };
    match *partition {
        Partition::Iid => {
            let sizes = apportion(labels.len(), &vec![1.0; participants]);
            deal_contiguous(&mut shards, &sizes);
        }
        Partition::QuantitySkew { alpha } => {
            let p = rng.dirichlet(alpha, participants);
            let mut sizes = apportion(labels.len() - participants, &p);
            for s in &mut sizes {
                *s += 1;
            }
            deal_contiguous(&mut shards, &sizes);
        }
        Partition::Dirichlet { alpha } => {
            for members in by_class.iter().filter(|m| !m.is_empty()) {
                let p = rng.dirichlet(alpha, participants);
                let counts = apportion(members.len(), &p);
                let mut at = 0;
                for (s, c) in shards.iter_mut().zip(counts) {
                    s.extend_from_slice(&members[at..at + c]);
                    at += c;
                }
            }
        }
        Partition::ClassesPerNode { k } => {
            let mut present: Vec<usize> = (0..num_classes).filter(|&c| !by_class[c].is_empty()).collect();
            let c_present = present.len();
            if k > c_present {
                return Err(DataError::InvalidSplit(format!(
                    "{partition}: the private pool holds only {c_present} classes"
                )));
            }
            if k * participants < c_present {
                return Err(DataError::InvalidSplit(format!(
                    "{partition} with {participants} participants covers at most {} of the {c_present} classes; \
                     need k * participants >= {c_present} so that every private sample has an owner",
                    k * participants
                )));
            }
            rng.shuffle(&mut present);
            let mut holders: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
            for i in 0..participants {
                for j in 0..k {
                    holders[present[(i * k + j) % c_present]].push(i);
                }
            }
            for (c, hs) in holders.iter().enumerate() {
                if hs.is_empty() {
                    continue;
                }
                let counts = apportion(by_class[c].len(), &vec![1.0; hs.len()]);
                let mut at = 0;
                for (&h, cnt) in hs.iter().zip(counts) {
                    shards[h].extend_from_slice(&by_class[c][at..at + cnt]);
                    at += cnt;
                }
            }
        }
    }
    // Repair: an empty shard takes the last sample of the currently largest shard. Terminates
    // because the pool holds at least `participants` samples.
    while let Some(empty) = shards.iter().position(Vec::is_empty) {
        let largest = (0..participants)
            .max_by(|&a, &b| shards[a].len().cmp(&shards[b].len()).then(b.cmp(&a)))
            .unwrap_or(0);
        match shards[largest].pop() {
            Some(pos) => shards[empty].push(pos),
            None => break,
        }
    }
    for s in &mut shards {
        s.sort_unstable();
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 classes x 100 samples, shuffled.
    fn pool(seed: u64) -> Vec<u32> {
        let mut v: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
        SplitRng::new(seed).shuffle(&mut v);
        v
    }

    fn check_cover(shards: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every sample in exactly one shard");
        assert!(shards.iter().all(|s| !s.is_empty()), "no empty shard");
    }

    #[test]
    fn every_partitioner_covers_the_pool_with_non_empty_shards() {
        let labels = pool(1);
        for p in [
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.01 },
            Partition::Dirichlet { alpha: 10.0 },
            Partition::ClassesPerNode { k: 1 },
            Partition::ClassesPerNode { k: 3 },
            Partition::QuantitySkew { alpha: 0.05 },
        ] {
            for parts in [10, 37] {
                let shards = assign(&labels, 10, parts, &p, &mut SplitRng::new(9)).expect("valid");
                assert_eq!(shards.len(), parts);
                check_cover(&shards, labels.len());
            }
        }
        // Extreme: as many participants as samples.
        let shards = assign(
            &labels[..20],
            10,
            20,
            &Partition::Dirichlet { alpha: 0.01 },
            &mut SplitRng::new(2),
        )
        .expect("valid");
        check_cover(&shards, 20);
        assert!(shards.iter().all(|s| s.len() == 1));
    }

    #[test]
    fn classes_per_node_limits_classes() {
        let labels = pool(4);
        let shards = assign(
            &labels,
            10,
            5,
            &Partition::ClassesPerNode { k: 2 },
            &mut SplitRng::new(3),
        )
        .expect("valid");
        for s in &shards {
            let mut cls: Vec<u32> = s.iter().map(|&p| labels[p]).collect();
            cls.sort_unstable();
            cls.dedup();
            assert_eq!(
                cls.len(),
                2,
                "each node holds exactly k=2 classes here (10 classes / 5 nodes)"
            );
        }
    }

    #[test]
    fn quantity_skew_skews_sizes_but_iid_does_not() {
        let labels = pool(5);
        let iid = assign(&labels, 10, 10, &Partition::Iid, &mut SplitRng::new(1)).expect("valid");
        assert!(iid.iter().all(|s| s.len() == 100));
        let q = assign(
            &labels,
            10,
            10,
            &Partition::QuantitySkew { alpha: 0.2 },
            &mut SplitRng::new(1),
        )
        .expect("valid");
        let max = q.iter().map(Vec::len).max().unwrap_or(0);
        let min = q.iter().map(Vec::len).min().unwrap_or(0);
        // Dir(0.2) over 10 shards: the largest share is typically > 0.4, the smallest near 0.
        assert!(
            max > 250 && min < 50,
            "sizes {:?}",
            q.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn impossible_arguments_are_refused() {
        let labels = pool(6);
        let mut r = SplitRng::new(0);
        let msg = |p: Partition, parts: usize, r: &mut SplitRng| {
            assign(&labels, 10, parts, &p, r)
                .expect_err("bad input must be refused")
                .to_string()
        };
        assert_eq!(
            msg(Partition::Dirichlet { alpha: 0.0 }, 3, &mut r),
            "invalid split: dirichlet(alpha=0): alpha must be a finite number > 0"
        );
        assert!(msg(Partition::QuantitySkew { alpha: -1.0 }, 3, &mut r).contains("alpha must be"));
        assert!(msg(Partition::Dirichlet { alpha: f64::NAN }, 3, &mut r).contains("alpha must be"));
        assert_eq!(
            msg(Partition::ClassesPerNode { k: 11 }, 3, &mut r),
            "invalid split: classes-per-node(k=11): k must be in 1..=10 (the dataset has 10 classes)"
        );
        assert!(msg(Partition::ClassesPerNode { k: 0 }, 3, &mut r).contains("k must be in 1..=10"));
        assert!(msg(Partition::ClassesPerNode { k: 2 }, 4, &mut r).contains("covers at most 8 of the 10 classes"));
        assert_eq!(
            msg(Partition::Iid, 1001, &mut r),
            "invalid split: 1001 participants cannot each get a non-empty shard of 1000 private samples"
        );
        assert!(msg(Partition::Iid, 0, &mut r).contains("0 participants"));
    }
}
