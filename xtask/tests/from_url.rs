//! `xtask codegen --from-url`: the code generated from a running server's API description is
//! the code generated from the same description on disk. The server is the simulated Asterisk
//! serving `../shared/ari-spec/asterisk-master` as `ari-mock --api-docs` does, on a free
//! loopback port.
//!
//! Needs the spec (`../shared/ari-spec`, or `ARI_SPEC_ROOT`), as `xtask conformance` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn spec_root() -> Option<PathBuf> {
    let root = std::env::var_os("ARI_SPEC_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ari-spec"));
    if root.join("asterisk-master/resources.json").is_file() {
        Some(root)
    } else {
        eprintln!("spec not found at {}; set ARI_SPEC_ROOT", root.display());
        None
    }
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base");
                let text = std::fs::read_to_string(&path).expect("text");
                out.insert(rel.to_string_lossy().into_owned(), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-from-url-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "xtask failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn codegen_from_a_running_server_equals_codegen_from_the_same_spec_on_disk() {
    let Some(spec) = spec_root() else { return };
    let server = ari_testkit::MockServer::builder()
        .api_docs(spec.join("asterisk-master"))
        .user("coder", "s3cret")
        .start();
    let (from_url, from_disk) = (temp_dir("url"), temp_dir("disk"));
    let spec_arg = spec.to_str().expect("utf-8 path");

    let url = server.base_url();
    let out = xtask(&[
        "codegen",
        "--from-url",
        &url,
        "--user",
        "coder",
        "--password",
        "s3cret",
        "--spec-root",
        spec_arg,
        "--out",
        from_url.to_str().expect("utf-8 path"),
    ]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("from {url}/ari")),
        "it says where it read from: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The server was asked for the index and for each API file it lists, with credentials.
    let asked: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked.contains(&"GET api-docs/resources.json".to_string()),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"GET api-docs/channels.json".to_string()),
        "{asked:?}"
    );

    ok(&xtask(&[
        "codegen",
        "--spec-root",
        spec_arg,
        "--out",
        from_disk.to_str().expect("utf-8 path"),
    ]));

    let (a, b) = (files(&from_url), files(&from_disk));
    let names: Vec<&str> = a.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ari-client/src/generated.rs",
            "ari-proto/src/generated/catalog.rs",
            "ari-proto/src/generated/events.rs",
            "ari-proto/src/generated/mod.rs",
            "ari-proto/src/generated/models.rs",
            "ari-proto/src/generated/ops.rs",
            "ari-proto/tests/conformance/generated_samples.rs",
            "fuzz/src/ops_list.rs",
        ]
    );
    for (name, text) in &a {
        assert!(text.len() > 100, "{name} is not empty");
        assert!(
            b[name] == *text,
            "{name} differs between --from-url and the spec on disk"
        );
    }
    assert_eq!(a.len(), b.len());

    // `--check` against the URL's output holds, and also from the URL a second time.
    ok(&xtask(&[
        "codegen",
        "--check",
        "--from-url",
        &format!("{url}/ari/api-docs/resources.json"),
        "--user",
        "coder",
        "--password",
        "s3cret",
        "--spec-root",
        spec_arg,
        "--out",
        from_url.to_str().expect("utf-8 path"),
    ]));
    let _ = std::fs::remove_dir_all(&from_url);
    let _ = std::fs::remove_dir_all(&from_disk);
}

#[test]
fn a_refused_password_is_a_clear_error_that_never_shows_the_password() {
    let Some(spec) = spec_root() else { return };
    let server = ari_testkit::MockServer::builder()
        .api_docs(spec.join("asterisk-master"))
        .start();
    let out_dir = temp_dir("refused");
    let out = xtask(&[
        "codegen",
        "--from-url",
        &server.base_url(),
        "--user",
        "asterisk",
        "--password",
        "not-the-password",
        "--spec-root",
        spec.to_str().expect("utf-8 path"),
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(stderr.contains("--user/--password"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(files(&out_dir).is_empty(), "nothing written");

    // Credentials in the URL are refused before any request, without echoing them.
    let with_creds = server
        .base_url()
        .replace("http://", "http://asterisk:hunter2@");
    let out = xtask(&["codegen", "--from-url", &with_creds]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials in the URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
