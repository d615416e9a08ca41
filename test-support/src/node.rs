//! The Node projects of the tests (`tests/ai-sdk`, `tests/upstash-sdk`, `tests/browser`): each
//! pins real client libraries in its lock file, installed on first use and run with `node`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::project_root;

/// `tests/<name>`.
pub fn node_project(name: &str) -> PathBuf {
    project_root().join("tests").join(name)
}

/// Runs `npm ci` in `dir` unless every one of `packages` is installed at the version its lock
/// file pins (a checkout that moved to a newer lock installs again); panics when npm fails.
pub fn npm_ci_unless_installed(dir: &Path, packages: &[&str]) {
    let lock = read_json(&dir.join("package-lock.json"));
    let installed = packages.iter().all(|p| {
        let pinned = &lock["packages"][format!("node_modules/{p}")]["version"];
        let found = read_json(&dir.join("node_modules").join(p).join("package.json"));
        !pinned.is_null() && found["version"] == *pinned
    });
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
}

/// Runs `node <args>` in `dir`; asserts it succeeded and returns the JSON it printed.
pub fn node_json(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new("node")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the script prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn read_json(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
