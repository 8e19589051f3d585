//! Project tooling.
//!
//! ```text
//! cargo run -p xtask -- codegen [--check] [--spec-root DIR] [--out DIR]
//!                                [--from-url URL [--user U --password P]]
//! cargo run -p xtask -- conformance [--spec-root DIR]
//! ```
//!
//! `codegen` reads the ARI API description (Swagger 1.1 JSON as Asterisk ships it) of
//! `asterisk-master` and writes `ari-proto/src/generated/*.rs`, `ari-client/src/generated.rs`,
//! the conformance test's samples and `fuzz/src/ops_list.rs`; it also reads the older branches
//! (18, 20, 22, 23) to record the first branch that has each operation, model, event, field and
//! parameter. `--check` fails when the committed code differs from what would be generated.
//!
//! `--from-url URL` reads the API description from a running Asterisk instead of
//! `asterisk-master` (`GET URL/ari/api-docs/resources.json` and each API file it lists, as an
//! ARI user of `ari.conf` given by `--user`/`--password`; `ari-mock --api-docs DIR` serves the
//! same), so the code matches exactly that server; the older branches under `--spec-root` still
//! give the `since` data when they are there. `--out DIR` writes (or checks) the files under
//! `DIR` instead of the workspace, at the same relative paths.

mod codegen;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let mut spec_root = root.join("../shared/ari-spec");
    let mut check = false;
    let mut out_root = None;
    let mut from_url = None;
    let mut user = None;
    let mut password = None;
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--spec-root" => match it.next() {
                Some(v) => spec_root = PathBuf::from(v),
                None => return usage("--spec-root needs a directory"),
            },
            "--out" => match it.next() {
                Some(v) => out_root = Some(PathBuf::from(v)),
                None => return usage("--out needs a directory"),
            },
            "--from-url" => match it.next() {
                Some(v) => from_url = Some(v.clone()),
                None => return usage("--from-url needs a URL"),
            },
            "--user" => match it.next() {
                Some(v) => user = Some(v.clone()),
                None => return usage("--user needs a name"),
            },
            "--password" => match it.next() {
                Some(v) => password = Some(v.clone()),
                None => return usage("--password needs a value"),
            },
            "codegen" | "conformance" if cmd.is_none() => cmd = Some(a.clone()),
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    if from_url.is_none() && (user.is_some() || password.is_some()) {
        return usage("--user and --password go with --from-url");
    }
    let from_url = from_url.map(|url| codegen::FromUrl {
        url,
        user,
        password,
    });
    let result = match cmd.as_deref() {
        Some("codegen") => codegen::run(
            out_root.as_deref().unwrap_or(&root),
            &spec_root,
            from_url.as_ref(),
            check,
        ),
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
        "xtask: {msg}\nusage: cargo run -p xtask -- codegen [--check] [--spec-root DIR] [--out DIR] [--from-url URL [--user U --password P]]\n       cargo run -p xtask -- conformance [--spec-root DIR]"
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
