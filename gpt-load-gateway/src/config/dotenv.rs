//! The `.env` file in the working directory.
//!
//! As in gpt-load, `.env` is loaded before anything is read, and a variable already set in the
//! real environment wins over the file. Its entries are exported to the process environment,
//! so variables read elsewhere (`TZ`, …) see them too.
//!
//! The whole file is parsed before anything is exported: a malformed line is an error naming
//! the file, the line number and the variable (never the value), and leaves the environment
//! untouched. A missing file is not an error.

use std::{fs, io, path::Path};

use super::error::ConfigError;

/// The entries of the `.env`-format file at `path`, in order; `None` when it does not exist.
pub(crate) fn read_dotenv(path: &Path) -> Result<Option<Vec<(String, String)>>, ConfigError> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(ConfigError::DotEnv(format!(
                "{}: cannot read: {err}",
                path.display()
            )));
        }
    };
    let text = content.strip_prefix('\u{feff}').unwrap_or(&content);
    let mut entries = Vec::new();
    for entry in dotenvy::from_read_iter(text.as_bytes()) {
        match entry {
            Ok(pair) => entries.push(pair),
            Err(dotenvy::Error::LineParse(line, _)) => {
                return Err(ConfigError::DotEnv(describe_bad_line(path, text, &line)));
            }
            Err(err) => return Err(ConfigError::DotEnv(format!("{}: {err}", path.display()))),
        }
    }
    Ok(Some(entries))
}

/// Checks the file at `path`, then exports its entries that are not already set. Returns
/// whether the file exists.
///
/// Changes the process environment: call it at start-up, before other threads run.
pub(crate) fn load_dotenv(path: &Path) -> Result<bool, ConfigError> {
    if read_dotenv(path)?.is_none() {
        return Ok(false);
    }
    dotenvy::from_path(path).map_err(|err| ConfigError::DotEnv(format!("{}: {err}", path.display())))?;
    Ok(true)
}

/// `.env line 3: cannot parse the entry for NAME (expected NAME=value; the value is not shown)`.
fn describe_bad_line(path: &Path, text: &str, line: &str) -> String {
    let number = line_start_offsets(text)
        .find(|offset| !line.is_empty() && text[*offset..].starts_with(line))
        .map(|offset| text[..offset].matches('\n').count() + 1);
    let location = match number {
        Some(number) => format!("{} line {number}", path.display()),
        None => path.display().to_string(),
    };
    let trimmed = line.trim_start();
    let trimmed = trimmed.strip_prefix("export ").map_or(trimmed, str::trim_start);
    let name: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() {
        format!("{location}: cannot parse the line (expected NAME=value)")
    } else {
        format!("{location}: cannot parse the entry for {name} (expected NAME=value; the value is not shown)")
    }
}

/// Byte offsets at which lines of `text` start.
fn line_start_offsets(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_dotenv(&dir.path().join(".env")).unwrap().is_none());
        assert!(!load_dotenv(&dir.path().join(".env")).unwrap());
    }

    #[test]
    fn reads_entries() {
        let (_dir, path) = write(
            "\u{feff}# comment\nPORT=3002\n\nexport HOST=127.0.0.1\nAUTH_KEY=\"quoted value\" # trailing\nEMPTY=\n",
        );
        let entries = read_dotenv(&path).unwrap().unwrap();
        let pairs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("PORT", "3002"),
                ("HOST", "127.0.0.1"),
                ("AUTH_KEY", "quoted value"),
                ("EMPTY", "")
            ]
        );
    }

    #[test]
    fn malformed_line_names_the_line_and_variable_but_not_the_value() {
        let (_dir, path) = write("PORT=3002\n# AUTH_KEY x\n\nAUTH_KEY sk-Sup3rS3cretValue\nHOST=x\n");
        let err = read_dotenv(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.ends_with(".env line 4: cannot parse the entry for AUTH_KEY (expected NAME=value; the value is not shown)"), "{text}");
        assert!(!text.contains("Sup3rS3cret"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let (_dir, path) = write("A=1\nENCRYPTION_KEY=\"Sup3rS3cret\nB=2\n");
        let text = read_dotenv(&path).unwrap_err().to_string();
        assert!(
            text.contains("line 2: cannot parse the entry for ENCRYPTION_KEY"),
            "{text}"
        );
        assert!(!text.contains("Sup3rS3cret"), "{text}");
    }

    #[test]
    fn line_without_a_name() {
        let (_dir, path) = write("A=1\n=oops\n");
        let text = read_dotenv(&path).unwrap_err().to_string();
        assert!(
            text.ends_with("line 2: cannot parse the line (expected NAME=value)"),
            "{text}"
        );
    }
}
