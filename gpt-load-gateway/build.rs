//! Build script: rebuilds on migration changes, and embeds the web console.
//!
//! The console (`web-console/dist`, or the directory `GPT_LOAD_CONSOLE_DIST` names) becomes a
//! table in `$OUT_DIR/console_files.rs` that `src/console/mod.rs` includes: per file its path,
//! its contents (`include_bytes!`), its gzip variant (compressed here, once) and its ETag. Without
//! a built console (`dist/index.html` missing) the table is empty and the gateway serves a page
//! that says how to build it. See the `console` module's documentation.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

#[path = "src/console/prepare.rs"]
mod prepare;

/// Names a built console directory to embed instead of `web-console/dist` (a relative path is
/// relative to the repository root).
const DIST_VAR: &str = "GPT_LOAD_CONSOLE_DIST";

fn main() {
    // Embedded migrations are read at compile time: rebuild when one is added or changed.
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-env-changed={DIST_VAR}");

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let explicit = env::var_os(DIST_VAR).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dist = match &explicit {
        Some(dir) => manifest_dir.join("..").join(dir),
        None => manifest_dir.join("../web-console/dist"),
    };

    // Watch only paths that exist: cargo reruns a build script on every build while a watched
    // path is missing. When `dist` is missing, watching `web-console` notices it being built.
    if dist.exists() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else if explicit.is_none() && manifest_dir.join("../web-console").is_dir() {
        println!("cargo:rerun-if-changed=../web-console");
    }

    let table = if dist.join("index.html").is_file() {
        embed(&dist, &out_dir)
    } else {
        if let Some(dir) = &explicit {
            panic!("{DIST_VAR}={}: no index.html there", dir.display());
        }
        if env::var("PROFILE").as_deref() == Ok("release") {
            println!(
                "cargo:warning=web-console/dist is not built: this binary serves a placeholder at / \
                 (build the console first: cd web-console && npm ci && npm run build)"
            );
        }
        "&[]\n".to_owned()
    };
    write_if_changed(&out_dir.join("console_files.rs"), table.as_bytes());
}

/// The table of every file under `dist`. The files and their gzip variants are copied to
/// `$OUT_DIR/console/`, each written only when its contents changed (`npm run build` rewrites
/// identical files), so the compiler sees unchanged inputs after a console rebuild that changed
/// nothing.
fn embed(dist: &Path, out_dir: &Path) -> String {
    let dist = dist.canonicalize().expect("the console directory");
    let prepare::Listing { files, skipped } =
        prepare::list_files(&dist).expect("listing the console directory");
    for path in skipped {
        println!(
            "cargo:warning=web console: {} is not embedded (its name is not UTF-8)",
            path.display()
        );
    }
    let copies = out_dir.join("console");
    fs::create_dir_all(&copies).expect("creating $OUT_DIR/console");
    let mut written = Vec::new();
    let mut table = String::from("&[\n");
    for (index, (path, location)) in files.iter().enumerate() {
        let bytes = fs::read(location).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (is `npm run build` rewriting the console right now? build again when it is done)",
                location.display()
            )
        });
        let body = copies.join(index.to_string());
        write_if_changed(&body, &bytes);
        written.push(body.clone());
        let gzip = match prepare::gzip(path, &bytes) {
            Some(compressed) => {
                let gz = copies.join(format!("{index}.gz"));
                write_if_changed(&gz, &compressed);
                written.push(gz.clone());
                format!("Some(include_bytes!({:?}))", gz.display().to_string())
            }
            None => "None".to_owned(),
        };
        writeln!(
            table,
            "    EmbeddedFile {{ path: {path:?}, body: include_bytes!({:?}), gzip: {gzip}, etag: {:?} }},",
            body.display().to_string(),
            prepare::etag(&bytes),
        )
        .expect("writing to a String");
    }
    table.push_str("]\n");
    // Copies of files the console no longer has.
    for entry in fs::read_dir(&copies).expect("listing $OUT_DIR/console").flatten() {
        if !written.contains(&entry.path()) {
            let _ = fs::remove_file(entry.path());
        }
    }
    table
}

/// Writes `contents` to `path` unless it holds them already (keeping its modification time).
fn write_if_changed(path: &Path, contents: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == contents) {
        return;
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
