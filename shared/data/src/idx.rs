//! IDX reader (the MNIST / Fashion-MNIST file format), gzip or raw, and the image+label pair
//! loader that turns two IDX files into a `Dataset` with pixels scaled to [0, 1].
//!
//! Layout (big-endian): bytes 0-1 zero, byte 2 the element type (only 0x08 = unsigned byte is
//! accepted), byte 3 the number of dimensions d, then d u32 sizes, then the elements row-major.

use crate::bytes::maybe_gunzip;
use crate::{DataError, DataKind, Dataset};

/// IDX element type code of unsigned bytes, the only one MNIST-style files use.
pub const IDX_TYPE_U8: u8 = 0x08;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// `dims.iter().product()` elements, row-major.
    pub data: Vec<u8>,
}

/// Decodes IDX bytes (gzip-compressed or raw), expecting `ndims` dimensions; `file` names the
/// source in errors.
pub fn read_idx(bytes: &[u8], file: &str, ndims: usize) -> Result<IdxArray, DataError> {
    let raw = maybe_gunzip(bytes, file)?;
    let raw = raw.as_ref();
    let err = |offset: usize, expected: String, found: String| DataError::Idx {
        file: file.to_string(),
        offset: offset as u64,
        expected,
        found,
    };
    if raw.len() < 4 {
        return Err(err(
            0,
            "a 4-byte IDX magic number".into(),
            format!("only {} bytes", raw.len()),
        ));
    }
    let want_magic = 0x0800 | ndims as u32;
    let magic = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if raw[0] != 0 || raw[1] != 0 || raw[2] != IDX_TYPE_U8 || raw[3] as usize != ndims {
        return Err(err(
            0,
            format!("IDX magic 0x{want_magic:08x} ({want_magic}: unsigned bytes, {ndims} dimensions)"),
            format!("0x{magic:08x} ({magic})"),
        ));
    }
    let header = 4 + 4 * ndims;
    if raw.len() < header {
        return Err(err(
            raw.len(),
            format!("{ndims} big-endian u32 dimension sizes (header of {header} bytes)"),
            format!("end of data after {} bytes", raw.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|k| {
            let o = 4 + 4 * k;
            u32::from_be_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]) as usize
        })
        .collect();
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let need = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let have = raw.len() - header;
    match need {
        Some(need) if need == have => {}
        Some(need) => {
            return Err(err(
                header,
                format!("{need} data bytes for dimensions {shape}"),
                format!("{have} bytes after the {header}-byte header"),
            ))
        }
        None => return Err(err(4, "dimension sizes whose product fits in memory".into(), shape)),
    }
    Ok(IdxArray {
        dims,
        data: raw[header..].to_vec(),
    })
}

/// Builds an image dataset from an IDX3 image file and an IDX1 label file (both gzip or raw),
/// checking that the counts agree and every label is `< class_names.len()`.
pub fn images_from_idx(
    name: &str,
    images: (&[u8], &str),
    labels: (&[u8], &str),
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let (img_bytes, img_file) = images;
    let (lab_bytes, lab_file) = labels;
    let img = read_idx(img_bytes, img_file, 3)?;
    let lab = read_idx(lab_bytes, lab_file, 1)?;
    let (n, height, width) = (img.dims[0], img.dims[1], img.dims[2]);
    if lab.dims[0] != n {
        return Err(DataError::Mismatch {
            file: lab_file.to_string(),
            detail: format!("{} labels, but {img_file} holds {n} images", lab.dims[0]),
        });
    }
    let num_classes = class_names.len();
    if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(DataError::Idx {
            file: lab_file.to_string(),
            offset: 8 + i as u64,
            expected: format!("a label in 0..{num_classes}"),
            found: l.to_string(),
        });
    }
    let features = img.data.iter().map(|&p| f32::from(p) / 255.0).collect();
    let labels = lab.data.iter().map(|&l| u32::from(l)).collect();
    Dataset::new(
        name,
        features,
        labels,
        height * width,
        DataKind::Image { height, width },
        class_names,
    )
}

/// Encodes an IDX array of unsigned bytes (the inverse of `read_idx` without gzip); used to write
/// test fixtures and subsets in the standard format.
pub fn write_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, IDX_TYPE_U8, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Vec<String> {
        (0..10).map(|d| d.to_string()).collect()
    }

    #[test]
    fn round_trip_and_pair() {
        let img = write_idx(&[2, 2, 3], &[0, 255, 51, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        let lab = write_idx(&[2], &[7, 1]);
        let a = read_idx(&img, "img", 3).expect("valid");
        assert_eq!(a.dims, vec![2, 2, 3]);
        let ds = images_from_idx("t", (&img, "img"), (&lab, "lab"), digits()).expect("valid pair");
        assert_eq!((ds.n, ds.dim), (2, 6));
        assert_eq!(ds.kind, DataKind::Image { height: 2, width: 3 });
        assert_eq!(ds.row(0)[1], 1.0);
        assert_eq!(ds.row(0)[2], 0.2);
        assert_eq!(ds.labels, vec![7, 1]);
    }

    #[test]
    fn bad_magic_is_reported_at_offset_0() {
        let mut img = write_idx(&[1, 1, 1], &[0]);
        img[2] = 0x0d; // float elements
        let msg = read_idx(&img, "f.idx", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "f.idx: IDX byte offset 0: expected IDX magic 0x00000803 (2051: unsigned bytes, 3 dimensions), found 0x00000d03 (3331)"
        );
        // A label file given where images are expected.
        let lab = write_idx(&[1], &[0]);
        let msg = read_idx(&lab, "l.idx", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(msg.contains("found 0x00000801"), "{msg}");
    }

    #[test]
    fn truncated_header_and_short_data_are_reported() {
        let img = write_idx(&[2, 2, 2], &[0; 8]);
        let msg = read_idx(&img[..10], "h.idx", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "h.idx: IDX byte offset 10: expected 3 big-endian u32 dimension sizes (header of 16 bytes), found end of data after 10 bytes"
        );
        let msg = read_idx(&img[..20], "d.idx", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(
            msg,
            "d.idx: IDX byte offset 16: expected 8 data bytes for dimensions 2x2x2, found 4 bytes after the 16-byte header"
        );
        let msg = read_idx(&img[..2], "m.idx", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.contains("offset 0: expected a 4-byte IDX magic number, found only 2 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn dims_larger_than_bytes_and_overflow() {
        let mut img = write_idx(&[3, 2, 2], &[0; 8]); // claims 12, holds 8
        let msg = read_idx(&img, "x", 3)
            .expect_err("bad input must be refused")
            .to_string();
        assert!(
            msg.contains("expected 12 data bytes for dimensions 3x2x2, found 8 bytes"),
            "{msg}"
        );
        img[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        img[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        img[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_idx(&img, "x", 3).is_err());
    }

    #[test]
    fn pair_mismatch_and_bad_label() {
        let img = write_idx(&[2, 1, 1], &[0, 0]);
        let lab = write_idx(&[3], &[0, 0, 0]);
        let msg = images_from_idx("t", (&img, "i"), (&lab, "l"), digits())
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(msg, "l: 3 labels, but i holds 2 images");
        let lab = write_idx(&[2], &[0, 10]);
        let msg = images_from_idx("t", (&img, "i"), (&lab, "l"), digits())
            .expect_err("bad input must be refused")
            .to_string();
        assert_eq!(msg, "l: IDX byte offset 9: expected a label in 0..10, found 10");
    }
}
