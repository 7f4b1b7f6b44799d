//! Data augmentation for images: random translations (the classic MNIST augmentation), seeded; and the
//! public-set augmentation of a federation (`[augment]` in the task card), which every participant applies
//! identically to a round's public rows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use fedistill_data::TaskCard;

/// Domain-separation prefix of a public row's augmentation seed.
pub const AUGMENT_SEED_TAG: &[u8] = b"fedistill/public-augment/v1\n";

/// The public-set augmentation of an image task: the card's `[augment]` with its image shape. Every
/// participant draws the same view of public row `id` in round `r` (the seed is SHA-256 over
/// [`AUGMENT_SEED_TAG`], the public set's digest, `r` and `id`), so the teachers label, and the students
/// learn from, the same pixels; a row revisited in a later round is a fresh view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicAugment {
    /// Image rows.
    pub height: usize,
    /// Image columns.
    pub width: usize,
    /// Values per pixel (channel last).
    pub channels: usize,
    /// Largest translation in pixels per axis.
    pub shift: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl PublicAugment {
    /// The card's augmentation, when it declares one (only image cards can).
    pub fn from_card(card: &TaskCard) -> Option<Self> {
        let (a, shape) = (card.augment?, card.image?);
        Some(PublicAugment {
            height: shape.height,
            width: shape.width,
            channels: shape.channels,
            shift: a.shift,
            flip: a.flip,
        })
    }

    /// Replaces each row of `x` (one per id of `ids`, row-major) by its view for `round`; `salt` is the
    /// public set's digest.
    pub fn apply(&self, salt: &[u8; 32], round: u64, ids: &[u64], x: &mut [f32]) {
        let (h, w, c) = (self.height, self.width, self.channels);
        let len = h * w * c;
        let mut src = vec![0f32; len];
        let m = self.shift as i64;
        for (&id, row) in ids.iter().zip(x.chunks_exact_mut(len)) {
            let mut hasher = Sha256::new();
            hasher.update(AUGMENT_SEED_TAG);
            hasher.update(salt);
            hasher.update(round.to_le_bytes());
            hasher.update(id.to_le_bytes());
            let mut rng = ChaCha8Rng::from_seed(hasher.finalize().into());
            let dx = rng.random_range(-m..=m) as isize;
            let dy = rng.random_range(-m..=m) as isize;
            let flip = self.flip && rng.random_bool(0.5);
            src.copy_from_slice(row);
            view(&src, h, w, c, dx, dy, flip, row);
        }
    }
}

/// Writes into `out` the `h x w x c` image `src` mirrored left-right (when `flip`) and then shifted by
/// (`dx`, `dy`) pixels (positive = right/down), the uncovered border 0.
#[allow(clippy::too_many_arguments)]
fn view(src: &[f32], h: usize, w: usize, c: usize, dx: isize, dy: isize, flip: bool, out: &mut [f32]) {
    for y in 0..h {
        let sy = y as isize - dy;
        for x in 0..w {
            let sx = x as isize - dx;
            let dst = &mut out[(y * w + x) * c..(y * w + x + 1) * c];
            if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                dst.fill(0.0);
                continue;
            }
            let sx = if flip { w - 1 - sx as usize } else { sx as usize };
            let at = (sy as usize * w + sx) * c;
            dst.copy_from_slice(&src[at..at + c]);
        }
    }
}

/// Copies an `h x w` image shifted by (`dx`, `dy`) pixels (positive = right/down), filling the
/// uncovered border with `fill`.
pub fn shift_image(src: &[f32], h: usize, w: usize, dx: isize, dy: isize, fill: f32, out: &mut [f32]) {
    for y in 0..h {
        let sy = y as isize - dy;
        for x in 0..w {
            let sx = x as isize - dx;
            out[y * w + x] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                src[sy as usize * w + sx as usize]
            } else {
                fill
            };
        }
    }
}

/// Writes a randomly shifted copy (each axis uniform in [-max, max]) of every image of `x` into `out`.
pub fn random_shifts<R: Rng>(x: &[f32], h: usize, w: usize, max: usize, fill: f32, rng: &mut R, out: &mut [f32]) {
    let m = max.min(1 << 20) as i64;
    for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        let dx = rng.random_range(-m..=m) as isize;
        let dy = rng.random_range(-m..=m) as isize;
        shift_image(src, h, w, dx, dy, fill, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-worked: a 3x3 image shifted one pixel right and one down keeps its top-left 2x2 block.
    #[test]
    fn shift_moves_pixels_and_fills_border() {
        let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let mut out = [0f32; 9];
        shift_image(&img, 3, 3, 1, 1, -1.0, &mut out);
        assert_eq!(out, [-1.0, -1.0, -1.0, -1.0, 1.0, 2.0, -1.0, 4.0, 5.0]);
        shift_image(&img, 3, 3, 0, 0, -1.0, &mut out);
        assert_eq!(out, img);
    }

    /// Hand-worked: a 2x3 RGB-like image (2 channels) mirrored, then shifted one pixel down.
    #[test]
    fn view_mirrors_then_shifts_channel_last() {
        // Pixels (y, x) hold [10y + x, -(10y + x)].
        let img: Vec<f32> = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [(10 * y + x) as f32, -((10 * y + x) as f32)]))
            .collect();
        let mut out = vec![9f32; img.len()];
        view(&img, 2, 3, 2, 0, 1, true, &mut out);
        // Row 0 is the uncovered border; row 1 is row 0 mirrored: x = 2, 1, 0.
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 1.0, -1.0, 0.0, 0.0]);
        view(&img, 2, 3, 2, 0, 0, false, &mut out);
        assert_eq!(out, img);
    }

    fn augment(shift: usize, flip: bool) -> PublicAugment {
        PublicAugment {
            height: 8,
            width: 8,
            channels: 1,
            shift,
            flip,
        }
    }

    /// Same salt, round and id: the same view on every node; another round, id or salt: another view
    /// (for most rows), and the pixel values are only moved, never changed.
    #[test]
    fn views_are_the_same_everywhere_and_fresh_each_round() {
        let a = augment(2, true);
        let rows = 16;
        let x: Vec<f32> = (0..rows * 64).map(|i| ((i * 37) % 101) as f32 / 100.0 + 0.01).collect();
        let ids: Vec<u64> = (100..100 + rows as u64).collect();
        let view_of = |salt: [u8; 32], round: u64, ids: &[u64]| {
            let mut v = x.clone();
            a.apply(&salt, round, ids, &mut v);
            v
        };
        let first = view_of([1; 32], 3, &ids);
        assert_eq!(first, view_of([1; 32], 3, &ids), "another node draws another view");
        let differing = |other: &[f32]| {
            first
                .chunks_exact(64)
                .zip(other.chunks_exact(64))
                .filter(|(p, q)| p != q)
                .count()
        };
        assert!(
            differing(&view_of([1; 32], 4, &ids)) >= rows / 2,
            "a new round reuses the views"
        );
        assert!(differing(&view_of([2; 32], 3, &ids)) >= rows / 2, "the salt is ignored");
        let shifted: Vec<u64> = ids.iter().map(|i| i + 1).collect();
        assert!(
            differing(&view_of([1; 32], 3, &shifted)) >= rows / 2,
            "the id is ignored"
        );
        // Every output pixel is 0 (border) or a pixel of the same source row.
        for (src, out) in x.chunks_exact(64).zip(first.chunks_exact(64)) {
            assert!(out.iter().all(|v| *v == 0.0 || src.contains(v)));
            assert!(out.iter().any(|v| *v != 0.0));
        }
        assert_eq!(x.len(), first.len());
    }
}
