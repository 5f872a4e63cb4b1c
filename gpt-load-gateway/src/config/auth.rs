//! Secrets: the admin key and the encryption key.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `AUTH_KEY` | unset → generated | Admin key for the API and console; never stored in the database (the first global proxy key is generated instead). Printable ASCII. |
//! | `ENCRYPTION_KEY` | unset → no encryption | Passphrase from which the at-rest encryption key for upstream keys is derived. |
//!
//! Both are held as [`ApiKey`], whose `Debug`/`Display` never show the value, and neither
//! value ever appears in an error message. A key shorter than 16 characters or containing a
//! common word or sequence (`password`, `sk-123456`, `123456`, `admin`, `secret`, in any case)
//! gives a warning, as in gpt-load.
//!
//! Deviation from gpt-load, which refuses to start without `AUTH_KEY`: [`resolve_auth_key`]
//! reads the key from `<DATA_DIR>/auth_key`, or generates a strong one there (mode 0600) that
//! the caller prints once.

use std::{
    fmt, fs,
    io::{self, Write},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use chacha20poly1305::aead::Generate;
use gpt_load_tower::secret::ApiKey;

use super::env::Vars;

pub(crate) const AUTH_KEY: &str = "AUTH_KEY";
pub(crate) const ENCRYPTION_KEY: &str = "ENCRYPTION_KEY";

/// Name of the file, inside `DATA_DIR`, that holds the generated admin key.
pub(crate) const AUTH_KEY_FILE: &str = "auth_key";

/// Keys shorter than this are weak.
const MIN_STRONG_LEN: usize = 16;

/// Substrings that make a key weak (compared case-insensitively).
const WEAK_PATTERNS: &[&str] = &["password", "sk-123456", "123456", "admin", "secret"];

/// Random characters in a generated key, after its `sk-` prefix (about 286 bits).
const GENERATED_CHARS: usize = 48;

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The admin and encryption keys. `Debug` shows only whether each is set.
#[derive(Clone, Default)]
pub(crate) struct AuthConfig {
    /// `AUTH_KEY`; `None` → [`resolve_auth_key`] finds or generates one.
    pub(crate) auth_key: Option<ApiKey>,
    /// `ENCRYPTION_KEY`; `None` → upstream keys are stored unencrypted.
    pub(crate) encryption_key: Option<ApiKey>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |key: &Option<ApiKey>| if key.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AuthConfig")
            .field("auth_key", &format_args!("{}", shown(&self.auth_key)))
            .field("encryption_key", &format_args!("{}", shown(&self.encryption_key)))
            .finish()
    }
}

impl AuthConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>) -> Self {
        let auth_key = vars.get(AUTH_KEY);
        if auth_key
            .as_deref()
            .is_some_and(|key| !key.bytes().all(|b| (b' '..=b'~').contains(&b)))
        {
            vars.invalid(
                AUTH_KEY,
                "the value (not shown) contains control or non-ASCII characters, which cannot be \
                 sent in an HTTP header; use printable ASCII",
            );
        }
        let encryption_key = vars.get(ENCRYPTION_KEY);
        for (name, key) in [(AUTH_KEY, &auth_key), (ENCRYPTION_KEY, &encryption_key)] {
            if let Some(reason) = key.as_deref().and_then(weakness) {
                vars.warn(format!("{name} is weak ({reason}); use a long random value"));
            }
        }
        Self {
            auth_key: auth_key.map(ApiKey::from),
            encryption_key: encryption_key.map(ApiKey::from),
        }
    }
}

/// Why `key` is weak, if it is. The reason never quotes the key.
pub(crate) fn weakness(key: &str) -> Option<&'static str> {
    if key.chars().count() < MIN_STRONG_LEN {
        return Some("shorter than 16 characters");
    }
    let lower = key.to_lowercase();
    WEAK_PATTERNS
        .iter()
        .any(|pattern| lower.contains(pattern))
        .then_some("contains a common word or number sequence")
}

/// Where the admin key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthKeySource {
    /// `AUTH_KEY` (environment or `.env`).
    Environment,
    /// An existing key file.
    File(PathBuf),
    /// Generated now and saved to this file: print it once so the operator can log in.
    Generated(PathBuf),
}

/// The admin key: `configured` (from `AUTH_KEY`) when set; otherwise the trimmed content of
/// `<data_dir>/auth_key`; otherwise a new `sk-` + 48 alphanumeric characters from the OS random
/// generator, written to that file (created with mode 0600, never overwritten: when another
/// process wins the race, its key is read and used).
///
/// Errors: the directory or file cannot be created, read or written, the file is empty, or the
/// OS random generator fails.
pub(crate) fn resolve_auth_key(
    data_dir: &Path,
    configured: Option<ApiKey>,
) -> io::Result<(ApiKey, AuthKeySource)> {
    if let Some(key) = configured {
        return Ok((key, AuthKeySource::Environment));
    }
    let path = data_dir.join(AUTH_KEY_FILE);
    find_or_create(data_dir, path.clone()).map_err(|err| {
        if err.kind() == io::ErrorKind::InvalidData {
            err
        } else {
            io::Error::new(err.kind(), format!("admin key file {}: {err}", path.display()))
        }
    })
}

fn find_or_create(data_dir: &Path, path: PathBuf) -> io::Result<(ApiKey, AuthKeySource)> {
    match read_key_file(&path) {
        Ok(key) => return Ok((key, AuthKeySource::File(path))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    fs::create_dir_all(data_dir)?;
    let key = generate_key()?;
    match create_private(&path) {
        Ok(mut file) => {
            file.write_all(format!("{key}\n").as_bytes())?;
            file.sync_all()?;
            Ok((ApiKey::new(key), AuthKeySource::Generated(path)))
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            // Another process created the file first; wait briefly for it to write the key.
            let mut last = None;
            for _ in 0..50 {
                match read_key_file(&path) {
                    Ok(key) => return Ok((key, AuthKeySource::File(path))),
                    Err(err) if err.kind() == io::ErrorKind::InvalidData => last = Some(err),
                    Err(err) => return Err(err),
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(last.unwrap_or_else(|| io::Error::other("auth key file vanished")))
        }
        Err(err) => Err(err),
    }
}

/// The trimmed key in `path`; `InvalidData` when the file is empty.
fn read_key_file(path: &Path) -> io::Result<ApiKey> {
    let content = fs::read_to_string(path)?;
    let key = content.trim();
    if key.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is empty: delete it to generate a new key, or set AUTH_KEY",
                path.display()
            ),
        ));
    }
    Ok(ApiKey::new(key))
}

/// Creates `path`, failing when it exists; readable and writable by the owner only.
fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// `sk-` followed by [`GENERATED_CHARS`] uniformly random alphanumeric characters (the
/// generated admin key, and the first global proxy key).
pub(crate) fn generate_key() -> io::Result<String> {
    // 248 = 4 × 62: bytes below it map uniformly onto the alphabet; the rest are discarded.
    const ACCEPT_BELOW: u8 = 248;
    let mut key = String::with_capacity(3 + GENERATED_CHARS);
    key.push_str("sk-");
    let mut produced = 0;
    while produced < GENERATED_CHARS {
        let bytes = <[u8; 64]>::try_generate()
            .map_err(|err| io::Error::other(format!("OS random generator failed: {err}")))?;
        for byte in bytes
            .into_iter()
            .filter(|b| *b < ACCEPT_BELOW)
            .take(GENERATED_CHARS - produced)
        {
            key.push(char::from(ALPHANUMERIC[usize::from(byte % 62)]));
            produced += 1;
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, AuthConfig) {
        read_with(pairs, AuthConfig::from_vars)
    }

    #[test]
    fn unset_by_default() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert!(config.auth_key.is_none() && config.encryption_key.is_none());
    }

    #[test]
    fn strong_keys_are_taken_without_warnings() {
        let (result, config) = load(&[
            (AUTH_KEY, "  sk-Zq8vLr2mXt9pWc4n  "),
            (ENCRYPTION_KEY, "correct horse battery staple"),
        ]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.auth_key.unwrap().expose(), "sk-Zq8vLr2mXt9pWc4n");
        assert_eq!(
            config.encryption_key.unwrap().expose(),
            "correct horse battery staple"
        );
    }

    #[test]
    fn weak_keys_give_warnings_that_do_not_quote_them() {
        let (result, _) = load(&[
            (AUTH_KEY, "sk-123456"),
            (ENCRYPTION_KEY, "my-very-long-Password-phrase"),
        ]);
        let warnings = result.unwrap();
        assert_eq!(
            warnings,
            [
                "AUTH_KEY is weak (shorter than 16 characters); use a long random value",
                "ENCRYPTION_KEY is weak (contains a common word or number sequence); use a long random value",
            ]
        );
        for pattern in [
            "x-ADMIN-xxxxxxxxxxxx",
            "xxxxxxxxxxxx123456789",
            "the-SeCrEt-is-long-enough",
        ] {
            assert!(weakness(pattern).is_some(), "{pattern}");
        }
        assert_eq!(weakness("Zq8vLr2mXt9pWc4nB7"), None);
        assert!(weakness("ключключключключ").is_none(), "16 characters, not bytes");
    }

    #[test]
    fn unusable_auth_key_is_an_error_that_hides_the_value() {
        let (result, _) = load(&[(AUTH_KEY, "sk-Zq8vLr2m\u{7}Xt9pWc4n-ключ")]);
        let text = result.unwrap_err();
        assert!(text.starts_with("AUTH_KEY: "), "{text}");
        assert!(!text.contains("Zq8vLr2m") && !text.contains("ключ"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn debug_never_shows_keys() {
        let (_, config) = load(&[
            (AUTH_KEY, "sk-Zq8vLr2mXt9pWc4n"),
            (ENCRYPTION_KEY, "correct horse battery"),
        ]);
        let shown = format!("{config:?}");
        assert_eq!(shown, "AuthConfig { auth_key: <set>, encryption_key: <set> }");
    }

    #[test]
    fn generated_keys_are_strong() {
        let key = generate_key().unwrap();
        assert_eq!(key.len(), 3 + GENERATED_CHARS);
        assert!(key.starts_with("sk-"));
        assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(key, generate_key().unwrap());
        assert_eq!(weakness(&key), None);
    }

    #[test]
    fn generated_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let (key, source) = resolve_auth_key(&data_dir, None).unwrap();
        let path = data_dir.join(AUTH_KEY_FILE);
        assert_eq!(source, AuthKeySource::Generated(path.clone()));
        assert!(key.expose().starts_with("sk-"));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", key.expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, source) = resolve_auth_key(&data_dir, None).unwrap();
        assert_eq!(again, key);
        assert_eq!(source, AuthKeySource::File(path));
    }

    #[test]
    fn existing_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(AUTH_KEY_FILE), "  operator-chosen-key-0123 \n").unwrap();
        let (key, source) = resolve_auth_key(dir.path(), None).unwrap();
        assert_eq!(key.expose(), "operator-chosen-key-0123");
        assert_eq!(source, AuthKeySource::File(dir.path().join(AUTH_KEY_FILE)));
    }

    #[test]
    fn empty_or_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUTH_KEY_FILE);
        fs::write(&path, " \n").unwrap();
        let err = resolve_auth_key(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");

        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let err = resolve_auth_key(dir.path(), None).unwrap_err();
        assert!(err.to_string().starts_with("admin key file "), "{err}");
    }

    #[test]
    fn environment_wins_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(AUTH_KEY_FILE), "from-file-key-0123456\n").unwrap();
        let (key, source) = resolve_auth_key(dir.path(), Some(ApiKey::new("from-env-key-0123456"))).unwrap();
        assert_eq!(key.expose(), "from-env-key-0123456");
        assert_eq!(source, AuthKeySource::Environment);

        let empty = tempfile::tempdir().unwrap();
        resolve_auth_key(empty.path(), Some(ApiKey::new("from-env-key-0123456"))).unwrap();
        assert!(!empty.path().join(AUTH_KEY_FILE).exists());
    }
}
