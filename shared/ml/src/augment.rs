//! Data augmentation for images: random translations (the classic MNIST augmentation), seeded; the
//! time-series augmentations of Um et al. (2017) (jitter, scaling, magnitude warping, time warping, window
//! slicing); and the public-set augmentation of a federation (`[augment]` in the task card), which every
//! participant applies identically to a round's public rows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use sha2::{Digest, Sha256};

use fedistill_data::{Augment, TaskCard};

/// Domain-separation prefix of a public row's augmentation seed.
pub const AUGMENT_SEED_TAG: &[u8] = b"fedistill/public-augment/v1\n";

/// The public-set augmentation of a federation: the card's `[augment]` with its image or sequence shape.
/// Every participant draws the same view of public row `id` in round `r` (the seed is SHA-256 over
/// [`AUGMENT_SEED_TAG`], the public set's digest, `r` and `id`), so the teachers label, and the students
/// learn from, the same values; a row revisited in a later round is a fresh view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PublicAugment {
    /// Shifts and flips of images (channel last).
    Image {
        /// Image rows.
        height: usize,
        /// Image columns.
        width: usize,
        /// Values per pixel (channel last).
        channels: usize,
        /// Largest translation in pixels per axis.
        shift: usize,
        /// Mirror left-right with probability 1/2.
        flip: bool,
    },
    /// Time-series augmentations (Um et al. 2017) of channel-major series.
    Sequence {
        /// Channels per series.
        channels: usize,
        /// Time steps per series.
        length: usize,
        /// The card's `[augment]` (its sequence fields).
        augment: Augment,
    },
}

impl PublicAugment {
    /// The card's augmentation, when it declares one (image and sequence cards can).
    pub fn from_card(card: &TaskCard) -> Option<Self> {
        let a = card.augment?;
        if let Some(shape) = card.image {
            return Some(PublicAugment::Image {
                height: shape.height,
                width: shape.width,
                channels: shape.channels,
                shift: a.shift,
                flip: a.flip,
            });
        }
        let shape = card.sequence.as_ref()?;
        Some(PublicAugment::Sequence {
            channels: shape.channels,
            length: shape.length,
            augment: a,
        })
    }

    /// Replaces each row of `x` (one per id of `ids`, row-major) by its view for `round`; `salt` is the
    /// public set's digest.
    pub fn apply(&self, salt: &[u8; 32], round: u64, ids: &[u64], x: &mut [f32]) {
        let len = match *self {
            PublicAugment::Image {
                height,
                width,
                channels,
                ..
            } => height * width * channels,
            PublicAugment::Sequence { channels, length, .. } => channels * length,
        };
        let mut src = vec![0f32; len];
        for (&id, row) in ids.iter().zip(x.chunks_exact_mut(len)) {
            let mut hasher = Sha256::new();
            hasher.update(AUGMENT_SEED_TAG);
            hasher.update(salt);
            hasher.update(round.to_le_bytes());
            hasher.update(id.to_le_bytes());
            let mut rng = ChaCha8Rng::from_seed(hasher.finalize().into());
            src.copy_from_slice(row);
            match *self {
                PublicAugment::Image {
                    height,
                    width,
                    channels,
                    shift,
                    flip,
                } => {
                    let m = shift as i64;
                    let dx = rng.random_range(-m..=m) as isize;
                    let dy = rng.random_range(-m..=m) as isize;
                    let flip = flip && rng.random_bool(0.5);
                    view(&src, height, width, channels, dx, dy, flip, row);
                }
                PublicAugment::Sequence {
                    channels,
                    length,
                    augment,
                } => series_view(&src, channels, length, &augment, &mut rng, row),
            }
        }
    }
}

/// Interior knots of the smooth random curves of magnitude and time warping (plus the two end points).
const WARP_KNOTS: usize = 4;

/// Writes into `out` a view of the channel-major series `src` (`channels x length`): a window slice
/// stretched back to the full length, a time warp, a magnitude warp, a per-channel scaling and jitter, in
/// that order, each only when its field is non-zero. Every random draw comes from `rng`, in a fixed order.
pub fn series_view<R: Rng>(src: &[f32], channels: usize, length: usize, a: &Augment, rng: &mut R, out: &mut [f32]) {
    let l = length;
    // Where each output step reads the source, in source steps: identity, then slice, then warp.
    let mut at: Vec<f64> = (0..l).map(|t| t as f64).collect();
    if a.slice > 0.0 {
        let w = ((a.slice * l as f64).round() as usize).clamp(2, l);
        let start = rng.random_range(0..=l - w) as f64;
        let scale = (w - 1) as f64 / (l - 1) as f64;
        for (t, p) in at.iter_mut().enumerate() {
            *p = start + t as f64 * scale;
        }
    }
    if a.time_warp > 0.0 {
        // A smooth positive speed curve; its running sum, rescaled to end where it starts and stops,
        // says how far along the (sliced) path each step reads.
        let speed = smooth_curve(l, a.time_warp, rng);
        let mut cum = vec![0f64; l];
        for t in 1..l {
            cum[t] = cum[t - 1] + speed[t].max(0.05);
        }
        let total = cum[l - 1].max(f64::MIN_POSITIVE);
        let path = at.clone();
        for (t, p) in at.iter_mut().enumerate() {
            *p = interpolate(&path, cum[t] / total * (l - 1) as f64);
        }
    }
    for c in 0..channels {
        let series: Vec<f64> = src[c * l..(c + 1) * l].iter().map(|&v| f64::from(v)).collect();
        let magnitude = (a.magnitude_warp > 0.0).then(|| smooth_curve(l, a.magnitude_warp, rng));
        let factor = if a.scaling > 0.0 {
            1.0 + a.scaling * rng.sample::<f64, _>(StandardNormal)
        } else {
            1.0
        };
        for t in 0..l {
            let mut v = interpolate(&series, at[t]);
            if let Some(m) = &magnitude {
                v *= m[t];
            }
            v *= factor;
            if a.jitter > 0.0 {
                v += a.jitter * rng.sample::<f64, _>(StandardNormal);
            }
            out[c * l + t] = v as f32;
        }
    }
}

/// `values` read at fractional position `p` by linear interpolation (clamped to the ends).
fn interpolate(values: &[f64], p: f64) -> f64 {
    let last = values.len() - 1;
    let p = p.clamp(0.0, last as f64);
    let i = (p.floor() as usize).min(last);
    let j = (i + 1).min(last);
    let f = p - i as f64;
    values[i] * (1.0 - f) + values[j] * f
}

/// A smooth random curve of `len` points around 1: `WARP_KNOTS + 2` evenly spaced knots drawn from
/// N(1, sigma^2), joined by Catmull-Rom cubic segments (C1, through every knot).
fn smooth_curve<R: Rng>(len: usize, sigma: f64, rng: &mut R) -> Vec<f64> {
    let k = WARP_KNOTS + 2;
    let knots: Vec<f64> = (0..k)
        .map(|_| 1.0 + sigma * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let at = |i: isize| knots[i.clamp(0, k as isize - 1) as usize];
    (0..len)
        .map(|t| {
            let x = if len > 1 {
                t as f64 / (len - 1) as f64 * (k - 1) as f64
            } else {
                0.0
            };
            let i = (x.floor() as isize).min(k as isize - 2);
            let u = x - i as f64;
            let (p0, p1, p2, p3) = (at(i - 1), at(i), at(i + 1), at(i + 2));
            0.5 * (2.0 * p1
                + (p2 - p0) * u
                + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u * u
                + (3.0 * p1 - p0 - 3.0 * p2 + p3) * u * u * u)
        })
        .collect()
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
        PublicAugment::Image {
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

    fn series_augment(a: Augment) -> PublicAugment {
        PublicAugment::Sequence {
            channels: 2,
            length: 24,
            augment: a,
        }
    }

    /// Two channels: a rising ramp and a sine.
    fn two_series(rows: usize) -> Vec<f32> {
        (0..rows)
            .flat_map(|r| {
                let ramp = (0..24).map(move |t| (t as f32 + r as f32) / 24.0);
                let sine = (0..24).map(|t| (t as f32 * 0.5).sin());
                ramp.chain(sine)
            })
            .collect()
    }

    /// Each sequence augmentation alone: the same view everywhere, a fresh one per round, and the property
    /// that defines it.
    #[test]
    fn series_views_are_shared_fresh_and_do_what_they_say() {
        let x = two_series(8);
        let ids: Vec<u64> = (0..8).collect();
        let view = |a: Augment, round: u64| {
            let mut v = x.clone();
            series_augment(a).apply(&[7; 32], round, &ids, &mut v);
            v
        };
        let on = |f: fn(&mut Augment)| {
            let mut a = Augment::default();
            f(&mut a);
            a
        };
        let all = [
            on(|a| a.jitter = 0.1),
            on(|a| a.scaling = 0.2),
            on(|a| a.magnitude_warp = 0.2),
            on(|a| a.time_warp = 0.2),
            on(|a| a.slice = 0.8),
        ];
        for a in all {
            let first = view(a, 1);
            assert_eq!(first, view(a, 1), "{a:?}: another node draws another view");
            assert_ne!(first, view(a, 2), "{a:?}: a new round reuses the view");
            assert_ne!(first, x, "{a:?}: changes nothing");
            assert!(first.iter().all(|v| v.is_finite()));
        }
        // Nothing on: the rows are unchanged.
        assert_eq!(view(Augment::default(), 1), x);
        // Scaling multiplies each channel by one factor.
        let scaled = view(all[1], 1);
        for (src, out) in x.chunks_exact(24).zip(scaled.chunks_exact(24)) {
            let f = out[5] / src[5];
            for (s, o) in src.iter().zip(out) {
                assert!((s * f - o).abs() < 1e-4, "{s} * {f} != {o}");
            }
        }
        // Time warping and slicing only re-read the series: the ramp stays non-decreasing, its first and
        // last values stay inside the original range, and warping keeps both end points.
        for a in [all[3], all[4]] {
            let v = view(a, 3);
            for (src, out) in x.chunks_exact(48).zip(v.chunks_exact(48)) {
                let ramp = &out[..24];
                assert!(ramp.windows(2).all(|w| w[1] >= w[0] - 1e-6), "{a:?}: {ramp:?}");
                assert!(ramp[0] >= src[0] - 1e-6 && ramp[23] <= src[23] + 1e-6);
                if a.slice == 0.0 {
                    assert!((ramp[0] - src[0]).abs() < 1e-6 && (ramp[23] - src[23]).abs() < 1e-5);
                }
            }
        }
        // Jitter is zero-mean noise of about the stated size.
        let j = view(all[0], 1);
        let d: Vec<f64> = j.iter().zip(&x).map(|(a, b)| f64::from(a - b)).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
        assert!(mean.abs() < 0.03 && (sd - 0.1).abs() < 0.03, "mean {mean} sd {sd}");
    }

    #[test]
    fn smooth_curves_pass_through_their_knots() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let c = smooth_curve(16, 0.0, &mut rng);
        assert!(c.iter().all(|v| (v - 1.0).abs() < 1e-12), "sigma 0 is flat: {c:?}");
        let c = smooth_curve(6, 0.3, &mut ChaCha8Rng::seed_from_u64(4));
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let knots: Vec<f64> = (0..WARP_KNOTS + 2)
            .map(|_| 1.0 + 0.3 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        for (a, b) in c.iter().zip(&knots) {
            assert!((a - b).abs() < 1e-12, "{c:?} vs {knots:?}");
        }
        assert_eq!(interpolate(&[0.0, 10.0], 0.25), 2.5);
        assert_eq!(interpolate(&[0.0, 10.0], 7.0), 10.0);
    }
}
