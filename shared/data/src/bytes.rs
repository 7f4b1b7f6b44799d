//! Raw byte sources: reading a file whole and transparently inflating gzip (detected by its magic
//! bytes, not by the file name), with a size cap so that a hostile file cannot exhaust memory.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use crate::DataError;

/// The two bytes every gzip member starts with (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest decompressed size accepted (Fashion-MNIST's biggest file inflates to 47 MB).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// Returns `bytes` inflated if they start with the gzip magic, unchanged otherwise.
pub fn maybe_gunzip<'a>(bytes: &'a [u8], file: &str) -> Result<Cow<'a, [u8]>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(MAX_DECOMPRESSED + 1);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let detail = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    format!("truncated gzip stream (the file ends early): {e}")
                } else {
                    format!("corrupt gzip stream: {e}")
                };
                return Err(DataError::Gzip {
                    file: file.to_string(),
                    decompressed: out.len() as u64,
                    detail,
                });
            }
        }
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(DataError::Gzip {
            file: file.to_string(),
            decompressed: out.len() as u64,
            detail: format!("inflates past the {MAX_DECOMPRESSED}-byte cap"),
        });
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("write to Vec");
        enc.finish().expect("finish to Vec")
    }

    #[test]
    fn raw_bytes_pass_through_and_gzip_inflates() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        assert!(matches!(maybe_gunzip(&data, "raw"), Ok(Cow::Borrowed(_))));
        let z = gz(&data);
        assert_eq!(maybe_gunzip(&z, "z").expect("valid gzip").as_ref(), &data[..]);
    }

    #[test]
    fn truncated_gzip_is_a_clear_error() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let z = gz(&data);
        let cut = &z[..z.len() / 2];
        let err = maybe_gunzip(cut, "cut.gz").expect_err("bad input must be refused");
        let msg = err.to_string();
        assert!(msg.starts_with("cut.gz: gzip stream broken after"), "{msg}");
        assert!(msg.contains("truncated") || msg.contains("corrupt"), "{msg}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_file(Path::new("/nonexistent/dir/x.gz")).expect_err("bad input must be refused");
        assert!(
            err.to_string().starts_with("/nonexistent/dir/x.gz: cannot read"),
            "{err}"
        );
    }
}
