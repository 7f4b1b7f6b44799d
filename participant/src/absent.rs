//! The modality blocks a participant's own file lacks (issue 22, part 3: "a participant lacking a block takes
//! part, its teacher labelling with what it has"). A block is absent per file (docs/data.md, "Modality
//! blocks"): the reader writes the block's inputs 0 and its presence input 0 in every row of a file without
//! it, and lists it in `LoadReport::absent_modalities`. The node's teacher learned from such rows only, so
//! the public rows it labels and refreshes on are given the same form: the absent blocks' inputs 0 and their
//! presence inputs 0, exactly as the fused model treats an absent block (attention 0). The shared student
//! still distills from the public rows as they are, every block included.

use std::borrow::Cow;

use fedistill_shared::data::{Dataset, ModalityRange};

/// A presence input at or above this counts the block as present (the reader writes 1 or 0; the fused
/// model's threshold).
const PRESENT: f32 = 0.5;

/// The card's modality blocks a node's private rows lack; empty without `[[modalities]]` or when the node's
/// file holds every block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbsentBlocks {
    blocks: Vec<ModalityRange>,
}

impl AbsentBlocks {
    /// The blocks of `modalities` whose presence input is below 0.5 in every row of `private`: the blocks the
    /// node's file lacks, the same as the read's `LoadReport::absent_modalities` (a block is absent per file,
    /// so its presence input is 0 in every row or in none). Empty when `private` has no rows.
    pub fn of_rows(private: &Dataset, modalities: &[ModalityRange]) -> AbsentBlocks {
        if private.n == 0 || private.dim == 0 {
            return AbsentBlocks::default();
        }
        let blocks = modalities
            .iter()
            .filter(|b| {
                b.indicator < private.dim
                    && private
                        .features
                        .chunks_exact(private.dim)
                        .all(|row| row[b.indicator] < PRESENT)
            })
            .cloned()
            .collect();
        AbsentBlocks { blocks }
    }

    /// The absent blocks' names, in the card's order.
    pub fn names(&self) -> Vec<String> {
        self.blocks.iter().map(|b| b.name.clone()).collect()
    }

    /// Whether the node's file holds every block (nothing to mask).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Sets, in every row of `x` (row-major, `dim` inputs a row), each absent block's inputs and its presence
    /// input to 0: the rows as this node's own file would hold them. Inputs beyond `dim` are left alone.
    pub fn apply(&self, x: &mut [f32], dim: usize) {
        if self.blocks.is_empty() || dim == 0 {
            return;
        }
        for row in x.chunks_exact_mut(dim) {
            for b in &self.blocks {
                if let Some(inputs) = row.get_mut(b.inputs.clone()) {
                    inputs.fill(0.0);
                }
                if let Some(flag) = row.get_mut(b.indicator) {
                    *flag = 0.0;
                }
            }
        }
    }

    /// `x` with [`AbsentBlocks::apply`] done on a copy; `x` itself when no block is absent.
    pub fn masked<'a>(&self, x: &'a [f32], dim: usize) -> Cow<'a, [f32]> {
        if self.blocks.is_empty() {
            return Cow::Borrowed(x);
        }
        let mut out = x.to_vec();
        self.apply(&mut out, dim);
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::data::DataKind;

    /// Blocks `a` (inputs 0..3) and `b` (3..5), presence inputs 5 and 6.
    fn ranges() -> Vec<ModalityRange> {
        vec![
            ModalityRange {
                name: "a".into(),
                inputs: 0..3,
                indicator: 5,
            },
            ModalityRange {
                name: "b".into(),
                inputs: 3..5,
                indicator: 6,
            },
        ]
    }

    fn rows(features: Vec<f32>) -> Dataset {
        let n = features.len() / 7;
        Dataset {
            name: "t".into(),
            features,
            labels: vec![0; n],
            n,
            dim: 7,
            num_classes: 2,
            kind: DataKind::Tabular,
            class_names: vec!["x".into(), "y".into()],
            targets: Vec::new(),
        }
    }

    #[test]
    fn the_blocks_a_file_lacks_are_read_off_its_presence_inputs_and_masked_exactly() {
        let without_b = rows(vec![
            1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 0.0, //
            4.0, 5.0, 6.0, 0.0, 0.0, 1.0, 0.0,
        ]);
        let absent = AbsentBlocks::of_rows(&without_b, &ranges());
        assert_eq!(absent.names(), ["b"]);
        let both = rows(vec![1.0; 14]);
        assert!(AbsentBlocks::of_rows(&both, &ranges()).is_empty());
        assert!(
            AbsentBlocks::of_rows(&both, &[]).is_empty(),
            "no blocks, nothing absent"
        );
        assert!(AbsentBlocks::of_rows(&rows(Vec::new()), &ranges()).is_empty());

        let public = [
            0.5, 0.6, 0.7, 9.0, -9.0, 1.0, 1.0, //
            1.5, 1.6, 1.7, 8.0, -8.0, 1.0, 1.0,
        ];
        let masked = absent.masked(&public, 7);
        assert_eq!(
            &masked[..],
            &[
                0.5, 0.6, 0.7, 0.0, 0.0, 1.0, 0.0, //
                1.5, 1.6, 1.7, 0.0, 0.0, 1.0, 0.0,
            ]
        );
        assert!(matches!(AbsentBlocks::default().masked(&public, 7), Cow::Borrowed(_)));
    }
}
