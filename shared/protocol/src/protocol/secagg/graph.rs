//! Who masks with whom and who holds whose shares: the complete graph of classic SecAgg (Bonawitz et al. 2017)
//! or the sparse k-regular Harary graph of SecAgg+ (Bell et al. 2020).
//!
//! Nodes are participant indices `0..n` in the round's sorted participant list; everyone derives the same graph
//! from `n`, `k` and `t` alone. A node's share holders are its neighbours plus itself, and the Shamir
//! x-coordinate of holder `i` is `i + 1`, so `n <= 255`.

use super::SecAggError;

/// Largest number of participants: GF(256) has 255 non-zero x-coordinates.
pub const MAX_PARTICIPANTS: usize = 255;

/// The masking and share-holding graph of a round, with the Shamir threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Per node, its neighbours in increasing order (never itself).
    neighbours: Vec<Vec<usize>>,
    /// Shares needed to reconstruct any participant's secret.
    threshold: usize,
}

impl Graph {
    /// Complete graph (classic SecAgg): everyone is everyone's neighbour; threshold `t` with `2 <= t <= n`.
    ///
    /// Each participant's secrets are shared among all `n` participants (itself included).
    pub fn complete(n: usize, t: usize) -> Result<Self, SecAggError> {
        check_size(n, 2)?;
        if t < 2 || t > n {
            return Err(SecAggError::BadThreshold { t, max: n });
        }
        let neighbours = (0..n).map(|i| (0..n).filter(|&j| j != i).collect()).collect();
        Ok(Graph {
            neighbours,
            threshold: t,
        })
    }

    /// SecAgg+: the k-regular Harary graph on `n` nodes, node `i` adjacent to `i ± 1, …, i ± k/2 (mod n)`.
    ///
    /// `k` must be even and at least 2, and `2 <= t <= k`. Each participant's secrets are shared among its `k`
    /// neighbours and itself (`k + 1` holders). If `k >= n - 1` every node would be everyone's neighbour, so
    /// the result is clamped to [`Graph::complete`]`(n, t)`.
    ///
    /// Caveat: Bell et al. place nodes on the cycle in a random order, so that colluding participants cannot
    /// choose to surround a target (`t` corrupt holders of one participant, together with the coordinator,
    /// learn its input). Here the order is the round's sorted participant list; if identities are cheap to
    /// grind, order the list by a hash of public round randomness before indexing. Keep `t` above half of
    /// `k + 1` (see [`Graph::majority_threshold`]) when the coordinator may be malicious.
    pub fn harary(n: usize, k: usize, t: usize) -> Result<Self, SecAggError> {
        check_size(n, 3)?;
        if k < 2 || !k.is_multiple_of(2) {
            return Err(SecAggError::BadDegree { k });
        }
        if t < 2 || t > k {
            return Err(SecAggError::BadThreshold { t, max: k });
        }
        if k >= n - 1 {
            return Graph::complete(n, t);
        }
        let half = k / 2;
        let neighbours = (0..n)
            .map(|i| {
                let mut adj: Vec<usize> = (1..=half).flat_map(|d| [(i + d) % n, (i + n - d) % n]).collect();
                adj.sort_unstable();
                adj
            })
            .collect();
        Ok(Graph {
            neighbours,
            threshold: t,
        })
    }

    /// Neighbours of node `i` in increasing order (empty for an index out of range).
    pub fn neighbours(&self, i: usize) -> &[usize] {
        self.neighbours.get(i).map_or(&[], Vec::as_slice)
    }

    /// Holders of node `i`'s shares: its neighbours and itself, in increasing order (empty out of range).
    pub fn holders(&self, i: usize) -> Vec<usize> {
        if i >= self.len() {
            return Vec::new();
        }
        let mut h = self.neighbours[i].clone();
        let at = h.partition_point(|&j| j < i);
        h.insert(at, i);
        h
    }

    /// Whether `i` and `j` are neighbours (a node is not its own neighbour).
    pub fn is_neighbour(&self, i: usize, j: usize) -> bool {
        self.neighbours(i).binary_search(&j).is_ok()
    }

    /// Shares needed to reconstruct any participant's secret.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    /// Whether the graph has no participants (never true for a constructed graph).
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// Whether every participant's threshold exceeds half its holders, so that two disjoint holder sets can
    /// never both reach it. Against a malicious coordinator that sends different holders different unmasking
    /// requests, this is what keeps it from getting both secrets of one participant.
    pub fn majority_threshold(&self) -> bool {
        (0..self.len()).all(|i| 2 * self.threshold > self.neighbours[i].len() + 1)
    }

    /// Returns `Err(IndexOutOfRange)` unless `i < len()`.
    pub(crate) fn check_index(&self, i: usize) -> Result<(), SecAggError> {
        if i < self.len() {
            Ok(())
        } else {
            Err(SecAggError::IndexOutOfRange {
                index: i,
                n: self.len(),
            })
        }
    }
}

/// What the coordinator asks one holder to reveal when unmasking: the self-seed shares of the survivors and
/// the mask-secret shares of the dropped participants, both restricted to owners whose shares it holds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RevealRequest {
    /// Survivors (in U3) whose self-seed share to reveal.
    pub survivors: Vec<usize>,
    /// Dropped participants (in U2 but not U3) whose mask-secret share to reveal.
    pub dropped: Vec<usize>,
}

/// The request for `holder`, given the confirmed share set `u2` and the survivors `u3` (those whose masked
/// input arrived). Indices outside `u2` are ignored; the lists come out sorted.
pub fn reveal_request(graph: &Graph, holder: usize, u2: &[usize], u3: &[usize]) -> RevealRequest {
    let mut req = RevealRequest::default();
    for owner in graph.holders(holder) {
        if !u2.contains(&owner) {
            continue;
        }
        if u3.contains(&owner) {
            req.survivors.push(owner);
        } else {
            req.dropped.push(owner);
        }
    }
    req
}

fn check_size(n: usize, min: usize) -> Result<(), SecAggError> {
    if n > MAX_PARTICIPANTS {
        return Err(SecAggError::TooManyParticipants {
            n,
            max: MAX_PARTICIPANTS,
        });
    }
    if n < min {
        return Err(SecAggError::TooFewParticipants { n, min });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_regular_and_symmetric(g: &Graph, degree: usize) {
        for i in 0..g.len() {
            let adj = g.neighbours(i);
            assert_eq!(adj.len(), degree, "node {i}: {adj:?}");
            assert!(adj.windows(2).all(|w| w[0] < w[1]), "node {i} not sorted: {adj:?}");
            assert!(!adj.contains(&i));
            for &j in adj {
                assert!(g.is_neighbour(j, i), "{i} -> {j} but not back");
            }
        }
    }

    #[test]
    fn complete_graph_connects_everyone_and_validates_its_parameters() {
        let g = Graph::complete(5, 3).unwrap();
        assert_eq!((g.len(), g.threshold()), (5, 3));
        assert_regular_and_symmetric(&g, 4);
        assert_eq!(g.neighbours(2), &[0, 1, 3, 4]);
        assert_eq!(g.holders(2), vec![0, 1, 2, 3, 4]);
        assert!(g.majority_threshold());
        assert!(!Graph::complete(5, 2).unwrap().majority_threshold());
        assert_eq!(g.neighbours(5), &[] as &[usize]);
        assert!(g.holders(9).is_empty());

        assert_eq!(Graph::complete(5, 1), Err(SecAggError::BadThreshold { t: 1, max: 5 }));
        assert_eq!(Graph::complete(5, 6), Err(SecAggError::BadThreshold { t: 6, max: 5 }));
        assert_eq!(
            Graph::complete(1, 2),
            Err(SecAggError::TooFewParticipants { n: 1, min: 2 })
        );
        assert_eq!(
            Graph::complete(256, 2),
            Err(SecAggError::TooManyParticipants { n: 256, max: 255 })
        );
        assert_eq!(Graph::complete(255, 200).unwrap().len(), 255);
    }

    #[test]
    fn harary_graph_is_k_regular_on_the_ring_and_deterministic() {
        let g = Graph::harary(10, 4, 3).unwrap();
        assert_regular_and_symmetric(&g, 4);
        assert_eq!(g.neighbours(0), &[1, 2, 8, 9]);
        assert_eq!(g.neighbours(5), &[3, 4, 6, 7]);
        assert_eq!(g.holders(0), vec![0, 1, 2, 8, 9]);
        assert!(g.majority_threshold(), "3 of 5 holders");
        assert_eq!(g, Graph::harary(10, 4, 3).unwrap());

        let g = Graph::harary(11, 6, 4).unwrap();
        assert_regular_and_symmetric(&g, 6);
        assert_eq!(g.neighbours(10), &[0, 1, 2, 7, 8, 9]);
    }

    #[test]
    fn harary_graph_validates_degree_and_threshold_and_clamps_to_complete() {
        assert_eq!(Graph::harary(10, 3, 2), Err(SecAggError::BadDegree { k: 3 }));
        assert_eq!(Graph::harary(10, 0, 2), Err(SecAggError::BadDegree { k: 0 }));
        assert_eq!(Graph::harary(10, 4, 5), Err(SecAggError::BadThreshold { t: 5, max: 4 }));
        assert_eq!(Graph::harary(10, 4, 1), Err(SecAggError::BadThreshold { t: 1, max: 4 }));
        assert_eq!(
            Graph::harary(2, 2, 2),
            Err(SecAggError::TooFewParticipants { n: 2, min: 3 })
        );
        assert_eq!(
            Graph::harary(300, 4, 3),
            Err(SecAggError::TooManyParticipants { n: 300, max: 255 })
        );
        // k >= n - 1: everyone is a neighbour anyway.
        assert_eq!(Graph::harary(5, 4, 3).unwrap(), Graph::complete(5, 3).unwrap());
        assert_eq!(Graph::harary(5, 8, 3).unwrap(), Graph::complete(5, 3).unwrap());
        assert_eq!(Graph::harary(5, 8, 7), Err(SecAggError::BadThreshold { t: 7, max: 5 }));
    }

    #[test]
    fn reveal_requests_split_a_holders_owners_by_survival() {
        let g = Graph::harary(10, 4, 3).unwrap();
        let u2: Vec<usize> = (0..10).filter(|&i| i != 7).collect();
        let u3: Vec<usize> = u2.iter().copied().filter(|&i| i != 1).collect();
        let req = reveal_request(&g, 0, &u2, &u3);
        assert_eq!(
            req,
            RevealRequest {
                survivors: vec![0, 2, 8, 9],
                dropped: vec![1]
            }
        );
        let req = reveal_request(&g, 8, &u2, &u3);
        assert_eq!(
            req,
            RevealRequest {
                survivors: vec![0, 6, 8, 9],
                dropped: vec![]
            }
        );
    }
}
