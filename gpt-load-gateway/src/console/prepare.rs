//! How a console file is prepared for serving: the file list of a directory, an ETag and a gzip
//! variant. Shared by `build.rs` (which embeds `web-console/dist` at compile time) and
//! [`Console::from_dir`](super::Console::from_dir), so both produce the same table.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// Files smaller than this are served as they are: gzip would save a few bytes at most.
const GZIP_MIN_SIZE: usize = 512;

/// Extensions of formats that are compressed already; gzip is not even tried on them.
const COMPRESSED: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "avif", "woff", "woff2", "gz", "br", "zip", "mp4", "webm",
];

/// The files of a console directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Every regular file (symbolic links followed): its `/`-separated path relative to the root
    /// and its location, sorted by path.
    pub(crate) files: Vec<(String, PathBuf)>,
    /// Entries left out because their names are not UTF-8.
    pub(crate) skipped: Vec<PathBuf>,
}

/// Lists every file below `root`.
pub(crate) fn list_files(root: &Path) -> io::Result<Listing> {
    let Listing {
        mut files,
        mut skipped,
    } = Listing::default();
    let mut dirs = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                skipped.push(entry.path());
                continue;
            };
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            let relative = format!("{prefix}{name}");
            if meta.is_dir() {
                dirs.push((format!("{relative}/"), path));
            } else if meta.is_file() {
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(Listing { files, skipped })
}

/// A strong ETag value (without quotes) for these contents: 80 bits of their SHA-256, in hex.
pub(crate) fn etag(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    // The precision caps the digest's own hex formatting at 20 digits.
    format!("{:.20x}", Sha256::digest(bytes))
}

/// The gzip variant of a file (best compression, no timestamp, so builds are reproducible), or
/// `None` when the file is small, already compressed, or gzip saves less than 10 %.
pub(crate) fn gzip(path: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let extension = path.rsplit_once('.').map_or("", |(_, ext)| ext);
    if bytes.len() < GZIP_MIN_SIZE || COMPRESSED.iter().any(|c| extension.eq_ignore_ascii_case(c)) {
        return None;
    }
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    let compressed = encoder.finish().ok()?;
    (compressed.len() * 10 <= bytes.len() * 9).then_some(compressed)
}
