//! The workspace's own binaries, for tests that run them as separate processes.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

/// The workspace root (the parent of this package).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package is inside the workspace")
}

/// The `gpt-load-gateway` executable: `GPT_LOAD_GATEWAY_BIN` when set, else built with the
/// cargo running the tests (a no-op when it is up to date) and located from cargo's JSON
/// messages. The binary belongs to another package, so `CARGO_BIN_EXE_*` cannot name it. Looked
/// up once per test process: tests that start many gateways run cargo once.
///
/// # Panics
///
/// When cargo cannot be run, the build fails or cargo reports no executable.
pub fn gateway_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_gateway_binary).clone()
}

fn locate_gateway_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GPT_LOAD_GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "gpt-load-gateway",
            "--bin",
            "gpt-load-gateway",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building the gateway failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "gpt-load-gateway")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the gateway executable")
}
