//! Records the commit the binary is built from, for `gleaner_build_info{commit}` and
//! `--version`: `GLEANER_BUILD_COMMIT` if set (an image build has no `.git`), else `git
//! rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GLEANER_BUILD_COMMIT");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    // A new commit moves HEAD or the branch it points to.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        let path = format!("{root}/{path}");
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("GLEANER_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(root)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GLEANER_COMMIT={commit}");
}
