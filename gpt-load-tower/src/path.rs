//! Dot segments in forwarded paths, in every spelling an upstream might decode.
//!
//! The gateway forwards the client's path below a group's base URL
//! (`/proxy/{group}/v1/chat/completions` → `https://api.example/base/v1/chat/completions`) with
//! the group's upstream key attached. An upstream, or a proxy in front of it, that normalises
//! `..` would let a client leave the base path and spend that key on any endpoint of the host.
//! So a forwarded path with a `.` or `..` segment is refused, whether or not it would escape:
//! no API needs one.
//!
//! A segment counts as a dot segment after every decoding an upstream might apply:
//!
//! - percent-encoding, also of the dots themselves (`%2e`, `%2E`, `.%2e`) and nested up to
//!   [`MAX_DECODE_DEPTH`] times (`%252e`);
//! - `/`, `\` and their encodings (`%2f`, `%5c`) as separators;
//! - a `;` parameter after the name (`..;x`, which some servers read as `..`).
//!
//! Dots inside a segment (`gemini-1.5-pro:generateContent`, `file.v2`, `...`) are ordinary.
//! The check reads the path once, does not allocate, and returns at once for a path without `.`
//! or `%`.
//!
//! [`ProxyKeyAuth`](crate::auth::ProxyKeyAuth) rejects such requests with `400`
//! ([`ErrorKind::InvalidPath`](crate::error::ErrorKind)) before a key is looked at, and the
//! [upstream](crate::upstream) URL builder refuses to join one as well.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::path::{DotSegment, reject_dot_segments};
//!
//! assert!(reject_dot_segments("/v1beta/models/gemini-1.5-pro:generateContent").is_ok());
//! assert_eq!(reject_dot_segments("/v1/../../admin"), Err(DotSegment));
//! assert_eq!(reject_dot_segments("/v1/%2E%2e%2fadmin"), Err(DotSegment));
//! assert_eq!(reject_dot_segments("/v1/..%5cadmin"), Err(DotSegment));
//! ```

use std::fmt;

/// How many nested percent-encodings are undone (`%2e` is one, `%252e` two). Deeper nesting is
/// read as literal text; no upstream decodes that often.
pub const MAX_DECODE_DEPTH: u8 = 3;

/// A path has a `.` or `..` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotSegment;

impl fmt::Display for DotSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the path has a '.' or '..' segment")
    }
}

impl std::error::Error for DotSegment {}

/// `Ok` when no segment of `path` is `.` or `..` in any spelling the [module docs](self) list.
pub fn reject_dot_segments(path: &str) -> Result<(), DotSegment> {
    if has_dot_segment(path) {
        Err(DotSegment)
    } else {
        Ok(())
    }
}

/// Whether some segment of `path` is `.` or `..` in any spelling the [module docs](self) list.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    let mut at = 0;
    // The segment so far: how many dots it starts with, and whether anything else followed.
    let mut dots = 0usize;
    let mut other = false;
    loop {
        let byte = decode(bytes, &mut at, 0);
        match byte {
            None | Some(b'/' | b'\\' | b';') => {
                if !other && (dots == 1 || dots == 2) {
                    return true;
                }
                match byte {
                    None => return false,
                    // The rest of a segment after `;` is a parameter, not part of its name.
                    Some(b';') => other = true,
                    Some(_) => {
                        dots = 0;
                        other = false;
                    }
                }
            }
            Some(b'.') if !other => dots += 1,
            Some(_) => other = true,
        }
    }
}

/// The next byte of `bytes` from `at` with percent-encoding undone, `depth` levels deep.
fn decode(bytes: &[u8], at: &mut usize, depth: u8) -> Option<u8> {
    let byte = *bytes.get(*at)?;
    *at += 1;
    if byte == b'%' && depth < MAX_DECODE_DEPTH {
        Some(escape(bytes, at, depth + 1))
    } else {
        Some(byte)
    }
}

/// The byte an escape stands for, `at` just past its `%`. The two hex digits may themselves be
/// encoded, and a decoded `%` starts another escape; a `%` without two hex digits is itself.
fn escape(bytes: &[u8], at: &mut usize, depth: u8) -> u8 {
    let start = *at;
    let high = decode(bytes, at, depth).and_then(hex);
    let low = high.and_then(|_| decode(bytes, at, depth).and_then(hex));
    match (high, low) {
        (Some(high), Some(low)) => match high << 4 | low {
            b'%' if depth < MAX_DECODE_DEPTH => escape(bytes, at, depth + 1),
            value => value,
        },
        _ => {
            *at = start;
            b'%'
        }
    }
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_dot_segment_is_found() {
        for path in [
            "/..",
            "/.",
            "/./v1",
            "/v1/..",
            "/v1/../../api/groups",
            "/v1/./models",
            "../x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2e./x",
            "/%2E./x",
            "/%2e/x",
            "/v1/..%2fadmin",
            "/v1/..%2Fadmin",
            "/v1/%2e%2e%2fadmin",
            "/v1/..\\admin",
            "/v1\\..\\admin",
            "/v1/..%5cadmin",
            "/v1/..%5Cadmin",
            "/v1%2f..%2fadmin",
            "/v1%5c.%5cadmin",
            "/v1/..;/admin",
            "/v1/.;x/admin",
            "/v1/%252e%252e/admin",
            "/v1/%25%32%65%25%32%65/admin",
            "/v1/%2e%2e%252fadmin",
            "/v1/..%252fadmin",
            "/v1/%%32%65%%32%65/admin",
            "/v1/%25252e%25252e/admin",
        ] {
            assert!(has_dot_segment(path), "{path}");
            assert_eq!(reject_dot_segments(path), Err(DotSegment), "{path}");
        }
    }

    #[test]
    fn dots_inside_segments_are_ordinary() {
        for path in [
            "",
            "/",
            "/v1/chat/completions",
            "/v1beta/models/gemini-1.5-pro:generateContent",
            "/v1/files/file.v2",
            "/v1/files/.hidden",
            "/v1/files/..hidden",
            "/v1/files/hidden.",
            "/v1/.../x",
            "/v1/a..b",
            "/v1//models",
            "/v1/%2e%2e%2e/x",
            "/v1/%2ex",
            "/v1/100%/x",
            "/v1/%zz/x",
            "/v1/%2/x",
            "/v1/%",
            "/v1/name;v=1.2",
            "/v1/%2525252e%2525252e/x",
        ] {
            assert!(!has_dot_segment(path), "{path}");
            assert!(reject_dot_segments(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn deep_nesting_and_long_paths_are_read_safely() {
        let many_percents = "%".repeat(100_000);
        assert!(!has_dot_segment(&many_percents));
        let nested = format!("/{}2e", "%25".repeat(10_000));
        assert!(!has_dot_segment(&nested));
        let long = format!("{}/..", "/a.b".repeat(10_000));
        assert!(has_dot_segment(&long));
        assert_eq!(DotSegment.to_string(), "the path has a '.' or '..' segment");
    }
}
