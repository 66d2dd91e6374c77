//! IDX reader (MNIST / Fashion-MNIST layout), plain or gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::Dataset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Finds `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads an IDX file, gunzipping it when it is gzip. Reads at most what its header (`rank`
/// dims) says plus one byte, so that a small file that inflates without end (a gzip bomb) or
/// claims a huge count cannot exhaust memory; `parse_header` then reports the mismatch.
fn read_maybe_gz(path: &Path, rank: usize) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let gzip_failed = |e: std::io::Error| Error::Data {
        path: path.display().to_string(),
        reason: format!("gzip decoding failed ({e})"),
    };
    let mut reader = flate2::read::GzDecoder::new(&raw[..]);
    let header = 4 + 4 * rank;
    let mut out = Vec::new();
    (&mut reader)
        .take(header as u64)
        .read_to_end(&mut out)
        .map_err(gzip_failed)?;
    let body: u64 = (0..rank)
        .filter_map(|i| out.get(4 + 4 * i..8 + 4 * i))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .fold(1u64, |n, d| n.saturating_mul(d));
    reader
        .take(body.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(gzip_failed)?;
    Ok(out)
}

/// Parses an IDX header: returns the dims, checking the magic (unsigned bytes, `rank` dims).
fn parse_header(bytes: &[u8], rank: usize, path: &Path) -> Result<Vec<usize>> {
    let bad = |reason: String| Error::Data {
        path: path.display().to_string(),
        reason,
    };
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(format!(
            "too short for an IDX file ({} bytes)",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != rank {
        return Err(bad(format!(
            "not an IDX file of unsigned bytes with {rank} dims (magic {:02x?})",
            &bytes[..4]
        )));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    // A corrupt header can claim more elements than a usize holds: that is a mismatch too.
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_add(header))
        .unwrap_or(usize::MAX);
    if bytes.len() != expected {
        return Err(bad(format!(
            "size {} does not match its header dims {dims:?} ({expected} bytes)",
            bytes.len()
        )));
    }
    Ok(dims)
}

/// Loads one split of an IDX dataset directory.
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    let p = split.prefix();
    let img_name = format!("{p}-images-idx3-ubyte");
    let lbl_name = format!("{p}-labels-idx1-ubyte");
    let (Some(img_path), Some(lbl_path)) = (find(dir, &img_name), find(dir, &lbl_name)) else {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: format!(
                "expected IDX files {img_name}[.gz] and {lbl_name}[.gz] (MNIST layout)"
            ),
        });
    };
    let img = read_maybe_gz(&img_path, 3)?;
    let lbl = read_maybe_gz(&lbl_path, 1)?;
    let idims = parse_header(&img, 3, &img_path)?;
    let ldims = parse_header(&lbl, 1, &lbl_path)?;
    if idims[0] != ldims[0] {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: format!("{} images but {} labels", idims[0], ldims[0]),
        });
    }
    // Kept as bytes (a quarter of f32): batches convert them to [0, 1] when read.
    let mut img = img;
    img.drain(..16);
    Dataset::from_u8(
        img,
        lbl[8..].iter().map(|&l| l as u32).collect(),
        (1, idims[1], idims[2]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn header_dims_must_match_the_file_size_even_when_they_overflow() {
        let p = Path::new("x-idx3-ubyte");
        let mut ok = header(&[2, 2, 3]);
        ok.extend([0; 12]);
        assert_eq!(parse_header(&ok, 3, p).unwrap(), vec![2, 2, 3]);
        let huge = header(&[u32::MAX, u32::MAX, u32::MAX]);
        let err = parse_header(&huge, 3, p).unwrap_err().to_string();
        assert!(err.contains("does not match its header dims"), "{err}");
        let err = parse_header(&huge[..6], 3, p).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }
}
