//! Data augmentation for images: random translations (the classic MNIST augmentation), seeded.

use rand::Rng;

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
}
