//! Project tooling.
//!
//! ```text
//! cargo run -p xtask -- codegen [--check] [--spec-root DIR]
//! cargo run -p xtask -- conformance [--spec-root DIR]
//! ```
//!
//! `codegen` reads the ARI API description (Swagger 1.1 JSON as Asterisk ships it) of
//! `asterisk-master` and writes `ari-proto/src/generated/*.rs`, `ari-client/src/generated.rs`,
//! the conformance test's samples and `fuzz/src/ops_list.rs`; it also reads the older branches
//! (18, 20, 22, 23) to record the first branch that has each operation, model, event, field and
//! parameter. `--check` fails when the committed code differs from what would be generated.

mod codegen;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let mut spec_root = root.join("../shared/ari-spec");
    let mut check = false;
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--spec-root" => match it.next() {
                Some(v) => spec_root = PathBuf::from(v),
                None => return usage("--spec-root needs a directory"),
            },
            "codegen" | "conformance" if cmd.is_none() => cmd = Some(a.clone()),
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    let result = match cmd.as_deref() {
        Some("codegen") => codegen::run(&root, &spec_root, check),
        Some("conformance") => conformance(&root, &spec_root),
        _ => return usage("missing command"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "xtask: {msg}\nusage: cargo run -p xtask -- codegen [--check] [--spec-root DIR]\n       cargo run -p xtask -- conformance [--spec-root DIR]"
    );
    ExitCode::from(2)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs the spec conformance test of `ari-proto` against every branch of the spec.
fn conformance(root: &std::path::Path, spec_root: &std::path::Path) -> Result<(), String> {
    if !spec_root.is_dir() {
        return Err(format!("spec directory {} not found", spec_root.display()));
    }
    let spec_root = spec_root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", spec_root.display()))?;
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "test",
                "-p",
                "ari-proto",
                "--features",
                "conformance",
                "--test",
                "conformance",
                "--",
                "--nocapture",
            ])
            .env("ARI_SPEC_ROOT", &spec_root)
            .env("ARI_CONFORMANCE_REQUIRED", "1")
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("conformance test failed".into())
    }
}
