//! Spec conformance: for every operation of every branch of the ARI API description, the typed
//! request built from sample values has the method, path, query parameters and body shape the
//! description declares.
//!
//! Needs the spec (`../shared/ari-spec`, or `ARI_SPEC_ROOT`); run it with
//! `cargo run -p xtask -- conformance`.

#[path = "conformance/generated_samples.rs"]
mod generated_samples;

use ari_proto::rest::{BaseUrl, Credentials};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// An id with the characters that must never change a path: `/`, space, `(`, `:` (and `?#%`).
const SAMPLE: &str = "a/b c(d):e?f#g%h";

fn spec_root() -> PathBuf {
    std::env::var_os("ARI_SPEC_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/ari-spec"
            ))
        })
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The names of the query parameters a built request sends.
fn query_names(req: &http::Request<Vec<u8>>) -> BTreeSet<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split('=').next().unwrap_or("").to_string())
        .collect()
}

struct SpecOp {
    method: String,
    path: String,
    query: BTreeSet<String>,
    body: BTreeSet<String>,
}

fn load(branch: &str) -> BTreeMap<String, SpecOp> {
    let dir = spec_root().join(branch);
    let read = |p: PathBuf| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .expect("spec JSON")
    };
    let res = read(dir.join("resources.json"));
    let mut ops = BTreeMap::new();
    for api in res["apis"].as_array().expect("apis") {
        let stem = api["path"]
            .as_str()
            .expect("path")
            .trim_start_matches("/api-docs/")
            .trim_end_matches(".{format}");
        let doc = read(dir.join("api-docs").join(format!("{stem}.json")));
        for a in doc["apis"].as_array().expect("apis") {
            for o in a["operations"].as_array().expect("operations") {
                if o.get("upgrade").is_some() {
                    continue;
                }
                let mut query = BTreeSet::new();
                let mut body = BTreeSet::new();
                for p in o["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().expect("name").to_string();
                    match p["paramType"].as_str() {
                        Some("query") => {
                            query.insert(name);
                        }
                        Some("body") => {
                            body.insert(name);
                        }
                        _ => {}
                    }
                }
                ops.insert(
                    format!("{stem}.{}", o["nickname"].as_str().expect("nickname")),
                    SpecOp {
                        method: o["httpMethod"].as_str().expect("method").to_string(),
                        path: a["path"].as_str().expect("path").to_string(),
                        query,
                        body,
                    },
                );
            }
        }
    }
    ops
}

#[test]
fn every_operation_of_every_branch_builds_as_declared() {
    let root = spec_root();
    if !root.is_dir() {
        assert!(
            std::env::var_os("ARI_CONFORMANCE_REQUIRED").is_none(),
            "spec not found at {}",
            root.display()
        );
        eprintln!("spec not found at {}; set ARI_SPEC_ROOT", root.display());
        return;
    }
    let ep = BaseUrl::new(
        "http://pbx.invalid:8088",
        Credentials::new("u", "p").expect("creds"),
    )
    .expect("endpoint");
    let built: BTreeMap<&str, http::Request<Vec<u8>>> = generated_samples::build_all(&ep, SAMPLE)
        .into_iter()
        .map(|(name, r)| (name, r.unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect();
    let mut checked = 0;
    for branch in [
        "asterisk-18",
        "asterisk-20",
        "asterisk-22",
        "asterisk-23",
        "asterisk-master",
    ] {
        let ops = load(branch);
        for (name, op) in &ops {
            let req = built
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{branch}: {name} has no typed operation"));
            assert_eq!(req.method().as_str(), op.method, "{branch} {name}: method");
            // Path: the template with every parameter replaced by the encoded sample.
            let mut want = String::from("/ari");
            for seg in op.path.trim_start_matches('/').split('/') {
                want.push('/');
                if seg.starts_with('{') {
                    want.push_str(&encode(SAMPLE));
                } else {
                    want.push_str(seg);
                }
            }
            assert_eq!(req.uri().path(), want, "{branch} {name}: path");
            // Query: every parameter of this branch is sent, and nothing outside master's list.
            let sent = query_names(req);
            for q in &op.query {
                assert!(
                    sent.contains(q),
                    "{branch} {name}: query parameter {q} not sent ({sent:?})"
                );
            }
            // Body: one JSON object whose keys are the body parameters.
            if op.body.is_empty() {
                // Older branches: a body only when master declares body parameters.
                if branch == "asterisk-master" {
                    assert!(req.body().is_empty(), "{branch} {name}: unexpected body");
                }
            } else {
                let v: Value = serde_json::from_slice(req.body()).expect("JSON body");
                let keys: BTreeSet<String> = v
                    .as_object()
                    .expect("object body")
                    .keys()
                    .cloned()
                    .collect();
                for b in &op.body {
                    assert!(
                        keys.contains(b),
                        "{branch} {name}: body key {b} missing ({keys:?})"
                    );
                }
                assert_eq!(
                    req.headers()
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.as_bytes()),
                    Some(&b"application/json"[..]),
                    "{branch} {name}"
                );
            }
            checked += 1;
        }
        if branch == "asterisk-master" {
            // Master: exactly the query parameters it declares.
            for (name, op) in &ops {
                let req = &built[name.as_str()];
                assert_eq!(query_names(req), op.query, "master {name}: query names");
            }
            assert_eq!(
                ops.len(),
                built.len(),
                "every master operation is typed, and only those"
            );
        }
        println!("{branch}: {} operations conform", ops.len());
    }
    assert!(checked > 500);
}
