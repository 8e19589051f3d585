//! Generates `ari-proto/src/generated/` from the ARI API description.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Spec branches, oldest first; the last one is the one the code is generated from.
const BRANCHES: &[(&str, &str)] = &[
    ("asterisk-18", "Asterisk18"),
    ("asterisk-20", "Asterisk20"),
    ("asterisk-22", "Asterisk22"),
    ("asterisk-23", "Asterisk23"),
    ("asterisk-master", "Master"),
];

const RESOURCE_MODELS: &[(&str, &str)] = &[
    ("Channel", "channel"),
    ("Bridge", "bridge"),
    ("Playback", "playback"),
    ("LiveRecording", "recording"),
    ("Endpoint", "endpoint"),
    ("DeviceState", "device_state"),
];

/// Models with an instance object in ari-client (`Channel<R>`, …). In events they are held as
/// `Arc<Model>` so the instance objects built from an event share its snapshot (no clone).
const SHARED_SNAPSHOT_MODELS: &[&str] = &[
    "Channel",
    "Bridge",
    "Playback",
    "LiveRecording",
    "StoredRecording",
    "Endpoint",
    "DeviceState",
    "Application",
];

struct Op {
    resource: String,
    path: String,
    v: Map<String, Value>,
}

impl Op {
    fn nickname(&self) -> &str {
        self.v["nickname"].as_str().unwrap_or_default()
    }
    fn params(&self) -> Vec<&Map<String, Value>> {
        self.v
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default()
    }
}

struct Spec {
    /// model name → (file stem, model)
    models: Vec<(String, String, Map<String, Value>)>,
    ops: Vec<Op>,
}

impl Spec {
    fn model(&self, name: &str) -> Option<&Map<String, Value>> {
        self.models.iter().find(|m| m.0 == name).map(|m| &m.2)
    }
}

/// Event variants held in a `Box`: every move of an `Event` copies its largest variant, and
/// these two are larger than all the others (a transfer carries several channels and, for
/// `ChannelTransfer`, whole models by value); with resource snapshots held as `Arc`s every other
/// event is at most about 200 bytes.
const BOXED_EVENTS: &[&str] = &["BridgeAttendedTransfer", "ChannelTransfer"];

fn load(dir: &Path) -> Result<Spec, String> {
    load_with(&mut |name| read_json(&dir.join(name)))
}

/// Reads an API description through `read`, which gets `resources.json`, then
/// `api-docs/<name>.json` for each API it lists (paths relative to a spec directory, or to
/// `<server>/ari/` for [`Fetcher`]).
fn load_with(read: &mut dyn FnMut(&str) -> Result<Value, String>) -> Result<Spec, String> {
    let res: Value = read("resources.json")?;
    let mut models = Vec::new();
    let mut ops = Vec::new();
    let apis = res["apis"].as_array().ok_or("resources.json: no apis")?;
    for api in apis {
        let p = api["path"]
            .as_str()
            .ok_or("resources.json: api without path")?;
        let stem = p
            .trim_start_matches("/api-docs/")
            .trim_end_matches(".{format}")
            .to_string();
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("resources.json: unexpected API path `{p}`"));
        }
        let doc: Value = read(&format!("api-docs/{stem}.json"))?;
        if let Some(ms) = doc["models"].as_object() {
            for (name, m) in ms {
                if let Some(m) = m.as_object() {
                    models.push((name.clone(), stem.clone(), m.clone()));
                }
            }
        }
        for a in doc["apis"].as_array().into_iter().flatten() {
            let path = a["path"].as_str().unwrap_or_default().to_string();
            for o in a["operations"].as_array().into_iter().flatten() {
                if let Some(o) = o.as_object() {
                    ops.push(Op {
                        resource: stem.clone(),
                        path: path.clone(),
                        v: o.clone(),
                    });
                }
            }
        }
    }
    Ok(Spec { models, ops })
}

fn read_json(p: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// First branch that has each thing.
#[derive(Default)]
struct Since {
    ops: BTreeMap<String, usize>,
    params: BTreeMap<(String, String), usize>,
    models: BTreeMap<String, usize>,
    fields: BTreeMap<(String, String), usize>,
}

impl Since {
    fn op(&self, o: &Op) -> usize {
        self.ops
            .get(&op_key(o))
            .copied()
            .unwrap_or(BRANCHES.len() - 1)
    }
    fn param(&self, o: &Op, p: &str) -> usize {
        self.params
            .get(&(op_key(o), p.to_string()))
            .copied()
            .unwrap_or(BRANCHES.len() - 1)
    }
    fn model(&self, m: &str) -> usize {
        self.models.get(m).copied().unwrap_or(BRANCHES.len() - 1)
    }
    fn field(&self, m: &str, f: &str) -> usize {
        self.fields
            .get(&(m.to_string(), f.to_string()))
            .copied()
            .unwrap_or(BRANCHES.len() - 1)
    }
}

/// What the client does beyond sending the request, said on the operation's methods.
fn call_note(op_key: &str) -> Option<&'static str> {
    match op_key {
        "bridges.destroy" => Some(
            "Asterisk sends `BridgeDestroyed` only to applications subscribed to the bridge\n\
             (`applications/{app}/subscription` with `bridge:{id}`, or `subscribeAll`), not to\n\
             one that only followed it through its channels. So once this succeeds, the bridge\n\
             lingers as a channel does after `StasisEnd`\n\
             ([`ClientBuilder::stasis_end_linger`](crate::ClientBuilder::stasis_end_linger),\n\
             2 s by default): a `BridgeDestroyed` arriving meanwhile is delivered as usual;\n\
             otherwise, when the linger is over, the bridge counts as ended, its waits (`once`)\n\
             fail with [`Error::Ended`](crate::Error::Ended) and its streams end. No\n\
             `BridgeDestroyed` is made up.",
        ),
        _ => None,
    }
}

fn op_key(o: &Op) -> String {
    format!("{}.{}", o.resource, o.nickname())
}

/// A running Asterisk (or `ari-mock --api-docs`) to read the API description from.
pub(crate) struct FromUrl {
    /// The server's base URL (`http://pbx:8088`, with `/ari` or without).
    pub url: String,
    /// An ARI user of `ari.conf` (Asterisk answers `api-docs` only to one).
    pub user: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

/// Reads `resources.json` and the API files it lists from `<server>/ari/api-docs/`.
struct Fetcher {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

impl Fetcher {
    fn new(from: &FromUrl) -> Result<Fetcher, String> {
        let base = ari_base(&from.url)?;
        let authorization = match (&from.user, &from.password) {
            (Some(u), p) => {
                use base64::Engine as _;
                let p = p.as_deref().unwrap_or("");
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(format!("Basic {token}"))
            }
            (None, Some(_)) => return Err("--password needs --user".into()),
            (None, None) => None,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(Fetcher {
            agent,
            base,
            authorization,
        })
    }

    fn get(&self, name: &str) -> Result<Value, String> {
        let url = format!(
            "{}/api-docs/{}",
            self.base,
            name.trim_start_matches("api-docs/")
        );
        let mut req = self.agent.get(&url);
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().map_err(|e| match e {
            ureq::Error::StatusCode(401) => format!(
                "{url}: 401 Unauthorized (give an ARI user of ari.conf with --user/--password)"
            ),
            ureq::Error::StatusCode(404) => {
                format!("{url}: 404 Not Found (is this the address of Asterisk's HTTP server?)")
            }
            ureq::Error::StatusCode(s) => format!("{url}: HTTP status {s}"),
            e => format!("{url}: {e}"),
        })?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}

/// `<server>/ari` from what a user gives: `http://pbx:8088`, `http://pbx:8088/ari`, or the
/// URL of `resources.json` itself. Credentials in the URL are refused (never echoed back).
fn ari_base(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("--from-url: `{url}` is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "--from-url: credentials in the URL are not accepted; pass --user/--password".into(),
        );
    }
    if authority.is_empty() {
        return Err(format!("--from-url: `{url}` has no host"));
    }
    let u = url.trim_end_matches('/');
    let u = u.strip_suffix("/api-docs/resources.json").unwrap_or(u);
    let u = u.strip_suffix("/api-docs").unwrap_or(u);
    Ok(if u.ends_with("/ari") {
        u.to_string()
    } else {
        format!("{u}/ari")
    })
}

/// Generates the code into `out_root` (the workspace root, or another directory holding the
/// same relative paths). The API description is `spec_root/asterisk-master`, or the one a
/// running server answers with (`from_url`); the older branches under `spec_root` give the
/// `since` data (without them, with `from_url`, everything is marked as in the newest branch).
pub(crate) fn run(
    out_root: &Path,
    spec_root: &Path,
    from_url: Option<&FromUrl>,
    check: bool,
) -> Result<(), String> {
    let fetcher = from_url.map(Fetcher::new).transpose()?;
    let mut since = Since::default();
    let mut master = None;
    for (i, (dir, _)) in BRANCHES.iter().enumerate() {
        let last = i == BRANCHES.len() - 1;
        let spec = match &fetcher {
            Some(f) if last => {
                let spec = load_with(&mut |name| f.get(name))?;
                println!(
                    "read {} operations and {} models from {}",
                    spec.ops.len(),
                    spec.models.len(),
                    f.base
                );
                spec
            }
            Some(_) if !spec_root.join(dir).is_dir() => {
                eprintln!(
                    "xtask: {} not found: `since` tags leave out {}",
                    spec_root.join(dir).display(),
                    BRANCHES[i].1
                );
                continue;
            }
            _ => load(&spec_root.join(dir))?,
        };
        for o in &spec.ops {
            since.ops.entry(op_key(o)).or_insert(i);
            for p in o.params() {
                let name = p["name"].as_str().unwrap_or_default().to_string();
                since.params.entry((op_key(o), name)).or_insert(i);
            }
        }
        for (name, _, m) in &spec.models {
            since.models.entry(name.clone()).or_insert(i);
            for f in m["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                since.fields.entry((name.clone(), f.clone())).or_insert(i);
            }
        }
        if last {
            master = Some(spec);
        }
    }
    let spec = master.ok_or("no master spec")?;
    let g = Gen::new(&spec, &since);
    let files = vec![
        ("mod.rs", g.mod_rs()),
        ("models.rs", g.models_rs()?),
        ("events.rs", g.events_rs()?),
        ("ops.rs", g.ops_rs()?),
        ("catalog.rs", g.catalog_rs()),
    ];
    let root = out_root;
    let out_dir = root.join("ari-proto/src/generated");
    let samples_path = root.join("ari-proto/tests/conformance/generated_samples.rs");
    let mut outputs: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|(n, s)| (out_dir.join(n), s))
        .collect();
    outputs.push((samples_path, g.samples_rs()));
    outputs.push((root.join("ari-client/src/generated.rs"), g.client_rs()?));
    outputs.push((root.join("fuzz/src/ops_list.rs"), g.fuzz_ops_list_rs()));
    let mut stale = Vec::new();
    for (path, text) in &outputs {
        let formatted = rustfmt(text)?;
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current != formatted {
            if check {
                stale.push(path.display().to_string());
            } else {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
                }
                std::fs::write(path, formatted).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "generated code is stale (run `cargo run -p xtask -- codegen`): {}",
            stale.join(", ")
        ));
    }
    if check {
        println!("generated code is up to date");
    }
    Ok(())
}

fn rustfmt(src: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("rustfmt stdin")?
        .write_all(src.as_bytes())
        .map_err(|e| format!("rustfmt stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("rustfmt: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::write("/tmp/xtask-unformatted.rs", src);
        return Err("rustfmt failed on generated code (see /tmp/xtask-unformatted.rs)".into());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------

struct EnumDef {
    name: String,
    doc: String,
    values: Vec<String>,
}

struct Gen<'a> {
    spec: &'a Spec,
    since: &'a Since,
    event_names: Vec<String>,
    /// (model, field) → enum name
    field_enums: BTreeMap<(String, String), String>,
    /// (op key, param) → enum name
    param_enums: BTreeMap<(String, String), String>,
    enums: Vec<EnumDef>,
}

const HEADER: &str = "// @generated by `cargo run -p xtask -- codegen` from the ARI API description\n// (asterisk-master, with `since` data from the 18, 20, 22 and 23 branches). Do not edit.\n\n";

fn enum_name_for_field(model: &str, field: &str) -> String {
    match (model, field) {
        ("DeviceState", "state") => "DeviceStateValue".into(),
        ("ContactInfo", "contact_status") => "ContactStatus".into(),
        ("Bridge", "bridge_type") => "BridgeType".into(),
        _ => format!("{model}{}", pascal(field)),
    }
}

fn enum_name_for_param(nick: &str, param: &str) -> String {
    match (nick, param) {
        ("update", "deviceState") => "DeviceStateValue".into(),
        ("mute" | "unmute", "direction") => "MuteDirection".into(),
        ("snoopChannel" | "snoopChannelWithId", _) => "SnoopDirection".into(),
        ("record", "ifExists") => "IfExists".into(),
        ("record", "terminateOn") => "TerminateOn".into(),
        ("hangup", "reason") => "HangupReason".into(),
        ("control", "operation") => "PlaybackOperation".into(),
        ("getInfo", "only") => "InfoSection".into(),
        _ => format!("{}{}", pascal(nick), pascal(param)),
    }
}

impl<'a> Gen<'a> {
    fn new(spec: &'a Spec, since: &'a Since) -> Self {
        let event_names: Vec<String> = spec
            .model("Event")
            .and_then(|e| e["subTypes"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut g = Gen {
            spec,
            since,
            event_names,
            field_enums: BTreeMap::new(),
            param_enums: BTreeMap::new(),
            enums: Vec::new(),
        };
        for (mname, _, m) in &spec.models {
            for (f, p) in m["properties"].as_object().into_iter().flatten() {
                let Some(p) = p.as_object() else { continue };
                if let Some(vals) = list_values(p) {
                    let name = enum_name_for_field(mname, f);
                    g.add_enum(&name, format!("Values of `{mname}.{f}`."), vals);
                    g.field_enums.insert((mname.clone(), f.clone()), name);
                }
            }
        }
        for o in &spec.ops {
            for p in o.params() {
                if let Some(vals) = list_values(p) {
                    let pname = p["name"].as_str().unwrap_or_default();
                    let name = enum_name_for_param(o.nickname(), pname);
                    g.add_enum(
                        &name,
                        format!("Values of the `{pname}` parameter of `{}`.", op_key(o)),
                        vals,
                    );
                    g.param_enums.insert((op_key(o), pname.to_string()), name);
                }
            }
        }
        g
    }

    fn add_enum(&mut self, name: &str, doc: String, values: Vec<String>) {
        if let Some(e) = self.enums.iter_mut().find(|e| e.name == name) {
            for v in values {
                if !e.values.contains(&v) {
                    e.values.push(v);
                }
            }
            return;
        }
        self.enums.push(EnumDef {
            name: name.into(),
            doc,
            values,
        });
    }

    fn is_event(&self, name: &str) -> bool {
        self.event_names.iter().any(|e| e == name) || name == "MissingParams"
    }

    fn mod_rs(&self) -> String {
        let mut s = String::from(HEADER);
        s.push_str("pub(crate) mod catalog;\npub(crate) mod events;\npub(crate) mod models;\npub(crate) mod ops;\n");
        s
    }

    fn rust_type(&self, ty: &str, enum_name: Option<&String>) -> Result<String, String> {
        if let Some(e) = enum_name {
            return Ok(format!("crate::models::{e}"));
        }
        if let Some(inner) = ty.strip_prefix("List[").and_then(|t| t.strip_suffix(']')) {
            return Ok(format!("Vec<{}>", self.rust_type(inner, None)?));
        }
        Ok(match ty {
            // Decoded strings are nearly all short (ids, names, numbers, dialplan locations):
            // inline up to 24 bytes, so decoding an event allocates nothing for them.
            "string" => "crate::CompactString".into(),
            "boolean" => "bool".into(),
            "int" | "long" => "i64".into(),
            "double" => "f64".into(),
            "Date" => "crate::Timestamp".into(),
            "object" => "serde_json::Value".into(),
            other => {
                if self.spec.model(other).is_none() {
                    return Err(format!("unknown type `{other}`"));
                }
                if self.is_event(other) {
                    format!("crate::events::{other}")
                } else {
                    format!("crate::models::{other}")
                }
            }
        })
    }

    /// Fields of a model, with inheritance flattened (base fields first); `type` is left out.
    /// The `resources()` lines for the resource fields of the model field `f` (`p`) of an
    /// event: `r.channel(&e.refer_to.destination_channel)`, each optional one (or all, when
    /// `f` is optional) behind an `if let`. Empty when the field is not a model, or one
    /// without resource fields.
    fn nested_resources(&self, f: &str, p: &Map<String, Value>) -> String {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(model) = self.spec.model(ty) else {
            return String::new();
        };
        let outer_required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let outer = field_ident(f);
        let mut lines = String::new();
        for (g, q) in model["properties"].as_object().into_iter().flatten() {
            let gty = q["type"].as_str().unwrap_or("");
            let Some((_, method)) = RESOURCE_MODELS.iter().find(|(m, _)| *m == gty) else {
                continue;
            };
            let inner = field_ident(g);
            let base = if outer_required {
                format!("e.{outer}")
            } else {
                "o".to_string()
            };
            if q.get("required").and_then(Value::as_bool).unwrap_or(false) {
                let _ = writeln!(lines, "                r.{method}(&{base}.{inner});");
            } else {
                let _ = writeln!(
                    lines,
                    "                if let Some(x) = &{base}.{inner} {{ r.{method}(x); }}"
                );
            }
        }
        if lines.is_empty() || outer_required {
            return lines;
        }
        format!("                if let Some(o) = &e.{outer} {{\n{lines}                }}\n")
    }

    fn flat_fields(&self, name: &str) -> Vec<(String, Map<String, Value>)> {
        let mut chain = vec![name.to_string()];
        let mut cur = name.to_string();
        'outer: loop {
            for (n, _, m) in &self.spec.models {
                let subs = m.get("subTypes").and_then(Value::as_array);
                if subs.is_some_and(|s| s.iter().any(|x| x.as_str() == Some(&cur))) {
                    chain.push(n.clone());
                    cur = n.clone();
                    continue 'outer;
                }
            }
            break;
        }
        chain.reverse();
        let mut out: Vec<(String, Map<String, Value>)> = Vec::new();
        for m in chain {
            let model = self.spec.model(&m).cloned().unwrap_or_default();
            for (f, p) in model["properties"].as_object().into_iter().flatten() {
                if f == "type" && m == "Message" {
                    continue;
                }
                let mut p = p.as_object().cloned().unwrap_or_default();
                p.insert("__model".into(), Value::String(m.clone()));
                out.retain(|x| &x.0 != f);
                out.push((f.clone(), p));
            }
        }
        out
    }

    fn struct_def(&self, s: &mut String, name: &str, m: &Map<String, Value>) -> Result<(), String> {
        let msince = self.since.model(name);
        let mut doc = doc_text(m.get("description").and_then(Value::as_str).unwrap_or(name));
        let _ = write!(doc, "\n\nSince {}.", since_text(msince));
        if self.is_event(name) {
            let _ = write!(doc, " Wire `type`: `\"{name}\"`.");
        }
        write_doc(s, &doc, "");
        s.push_str("#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]\n#[non_exhaustive]\n");
        let _ = writeln!(s, "pub struct {name} {{");
        let fields = if self.is_event(name) {
            self.flat_fields(name)
        } else {
            m["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_object().cloned().unwrap_or_default()))
                .collect()
        };
        for (f, p) in &fields {
            let owner = p
                .get("__model")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string();
            let ty = p["type"].as_str().unwrap_or("string");
            let en = self.field_enums.get(&(owner.clone(), f.clone()));
            let mut rty = self.rust_type(ty, en)?;
            let shared =
                self.is_event(name) && en.is_none() && SHARED_SNAPSHOT_MODELS.contains(&ty);
            if shared {
                rty = format!("std::sync::Arc<{rty}>");
            }
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
            let mut fdoc = doc_text(p.get("description").and_then(Value::as_str).unwrap_or(""));
            if fdoc.is_empty() {
                fdoc = format!("`{f}`.");
            }
            let fs = self.since.field(&owner, f);
            if fs > msince.max(self.since.model(&owner)) {
                let _ = write!(fdoc, "\n\nSince {}.", since_text(fs));
            }
            write_doc(s, &fdoc, "    ");
            let rname = field_ident(f);
            let mut attrs: Vec<String> = Vec::new();
            if rname.trim_start_matches("r#") != f {
                attrs.push(format!("rename = \"{f}\""));
            }
            if shared {
                // Decoded in place (serde's own `Arc` decodes a `Box` and copies it into a new
                // allocation).
                let with = if required { "arc" } else { "option_arc" };
                attrs.push(format!(
                    "deserialize_with = \"crate::events::decode_{with}\""
                ));
            }
            let full_ty = if required {
                if lenient_default(&rty) {
                    attrs.push("default".into());
                }
                rty
            } else {
                attrs.push("default".into());
                attrs.push("skip_serializing_if = \"Option::is_none\"".into());
                format!("Option<{rty}>")
            };
            if !attrs.is_empty() {
                let _ = writeln!(s, "    #[serde({})]", attrs.join(", "));
            }
            let _ = writeln!(s, "    pub {rname}: {full_ty},");
        }
        s.push_str("}\n\n");
        Ok(())
    }

    fn models_rs(&self) -> Result<String, String> {
        let mut s = String::from(HEADER);
        s.push_str("#![allow(clippy::upper_case_acronyms)]\n\n");
        for (name, _, m) in &self.spec.models {
            if self.is_event(name) || name == "Message" || name == "Event" {
                continue;
            }
            self.struct_def(&mut s, name, m)?;
        }
        for e in &self.enums {
            s.push_str("crate::wire_enum! {\n");
            write_doc(&mut s, &e.doc, "    ");
            let _ = writeln!(s, "    {} {{", e.name);
            for v in &e.values {
                let _ = writeln!(s, "        /// `{}`", escape_str(v));
                let _ = writeln!(s, "        {} => \"{}\",", variant_ident(v), escape_str(v));
            }
            s.push_str("    }\n}\n\n");
        }
        Ok(s)
    }

    fn events_rs(&self) -> Result<String, String> {
        let mut s = String::from(HEADER);
        s.push_str("#![allow(clippy::upper_case_acronyms, clippy::result_large_err)]\n\nuse crate::events::{EventType, Resources, UnknownEvent};\n\n");
        let mut all: Vec<String> = self.event_names.clone();
        all.sort();
        for name in &all {
            let m = self.spec.model(name).ok_or(format!("no model {name}"))?;
            self.struct_def(&mut s, name, m)?;
        }
        if let Some(m) = self.spec.model("MissingParams") {
            self.struct_def(&mut s, "MissingParams", m)?;
        }
        // The enum.
        s.push_str("/// A message received on the events WebSocket: one variant per event type of the\n/// ARI API description, `MissingParams`, and [`Event::Unknown`] for types this version does not know.\n///\n/// Decode one with [`Event::decode`].\n#[derive(Debug, Clone, PartialEq)]\n#[non_exhaustive]\n#[allow(clippy::large_enum_variant)]\npub enum Event {\n");
        for name in &all {
            let m = self.spec.model(name).ok_or("model")?;
            let d = doc_text(m.get("description").and_then(Value::as_str).unwrap_or(name));
            write_doc(&mut s, &first_sentence(&d), "    ");
            if BOXED_EVENTS.contains(&name.as_str()) {
                let _ = writeln!(s, "    ///\n    /// Boxed: it is several times larger than the other events, and an `Event` is as\n    /// large as its largest variant.\n    {name}(Box<{name}>),");
            } else {
                let _ = writeln!(s, "    {name}({name}),");
            }
        }
        s.push_str("    /// Error message sent when required parameters are missing.\n    MissingParams(MissingParams),\n    /// An event type this version does not know; its type name and JSON are kept.\n    Unknown(UnknownEvent),\n}\n\n");
        // decode_known
        s.push_str("impl Event {\n    /// Decodes `input` as the event type `type_name`, or `None` when the type is not known.\n    pub(crate) fn decode_known<I: crate::events::JsonInput>(type_name: &str, input: I) -> Option<Result<Event, serde_json::Error>> {\n        Some(match type_name {\n");
        for name in &all {
            if BOXED_EVENTS.contains(&name.as_str()) {
                let _ = writeln!(
                    s,
                    "            \"{name}\" => input.parse().map(|e| Event::{name}(Box::new(e))),"
                );
            } else {
                let _ = writeln!(
                    s,
                    "            \"{name}\" => input.parse().map(Event::{name}),"
                );
            }
        }
        s.push_str("            \"MissingParams\" => input.parse().map(Event::MissingParams),\n            _ => return None,\n        })\n    }\n\n");
        // type_name
        s.push_str("    /// The event's `type` as sent on the wire.\n    pub fn type_name(&self) -> &str {\n        match self {\n");
        s.push_str(&arms(&all, |name| {
            format!("Event::{name}(_) => \"{name}\",")
        }));
        s.push_str("            Event::MissingParams(_) => \"MissingParams\",\n            Event::Unknown(u) => &u.type_name,\n        }\n    }\n\n");
        // application / timestamp / asterisk_id
        s.push_str("    /// The application the event was sent to (`None` for `MissingParams`).\n    pub fn application(&self) -> Option<&str> {\n        match self {\n");
        s.push_str(&arms(&all, |name| {
            format!("Event::{name}(e) => Some(&e.application),")
        }));
        s.push_str("            Event::MissingParams(_) => None,\n            Event::Unknown(u) => u.raw.get(\"application\").and_then(serde_json::Value::as_str),\n        }\n    }\n\n");
        s.push_str("    /// When Asterisk raised the event (`None` for `MissingParams` and unknown events).\n    pub fn timestamp(&self) -> Option<&crate::Timestamp> {\n        match self {\n");
        s.push_str(&arms(&all, |name| {
            format!("Event::{name}(e) => Some(&e.timestamp),")
        }));
        s.push_str("            Event::MissingParams(_) | Event::Unknown(_) => None,\n        }\n    }\n\n");
        s.push_str("    /// The id of the Asterisk instance that raised the event, when it says.\n    pub fn asterisk_id(&self) -> Option<&str> {\n        match self {\n");
        s.push_str(&arms(&all, |name| {
            format!("Event::{name}(e) => e.asterisk_id.as_deref(),")
        }));
        s.push_str("            Event::MissingParams(e) => e.asterisk_id.as_deref(),\n            Event::Unknown(u) => u.raw.get(\"asterisk_id\").and_then(serde_json::Value::as_str),\n        }\n    }\n\n");
        // resources
        s.push_str("    /// The resources this event concerns (channel, bridge, playback, recording, endpoint,\n    /// device state), in field order; a playback's or recording's target (`target_uri`) is\n    /// included too.\n    pub fn resources(&self) -> Resources<'_> {\n        let mut r = Resources::new();\n        match self {\n");
        for name in &all {
            let fields = self.flat_fields(name);
            let mut body = String::new();
            for (f, p) in &fields {
                let ty = p["type"].as_str().unwrap_or("");
                let Some((_, method)) = RESOURCE_MODELS.iter().find(|(m, _)| *m == ty) else {
                    // A model that names resources itself (`ChannelTransfer`'s `refer_to` and
                    // `referred_by`): its resource fields, one level down.
                    body.push_str(&self.nested_resources(f, p));
                    continue;
                };
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                let id = field_ident(f);
                if required {
                    let _ = writeln!(body, "                r.{method}(&e.{id});");
                } else {
                    let _ = writeln!(
                        body,
                        "                if let Some(x) = &e.{id} {{ r.{method}(x); }}"
                    );
                }
            }
            if body.is_empty() {
                let _ = writeln!(s, "            Event::{name}(_) => {{}}");
            } else {
                let _ = writeln!(
                    s,
                    "            Event::{name}(e) => {{\n{body}            }}"
                );
            }
        }
        s.push_str("            Event::MissingParams(_) => {}\n            Event::Unknown(u) => r.raw(&u.raw),\n        }\n        r\n    }\n\n");
        // serialize
        s.push_str("    pub(crate) fn serialize_tagged<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {\n        use crate::events::Tagged;\n        match self {\n");
        for name in &all {
            let _ = writeln!(
                s,
                "            Event::{name}(e) => serde::Serialize::serialize(&Tagged {{ ty: \"{name}\", inner: e }}, ser),"
            );
        }
        s.push_str("            Event::MissingParams(e) => serde::Serialize::serialize(&Tagged { ty: \"MissingParams\", inner: e }, ser),\n            Event::Unknown(u) => serde::Serialize::serialize(&u.raw, ser),\n        }\n    }\n}\n\n");
        // EventType impls
        for name in all
            .iter()
            .chain(std::iter::once(&"MissingParams".to_string()))
        {
            let boxed = BOXED_EVENTS.contains(&name.as_str());
            let (take, borrow, wrap) = if boxed {
                ("*e", "&**e", "Box::new(self)")
            } else {
                ("e", "e", "self")
            };
            let _ = writeln!(
                s,
                "impl EventType for {name} {{
    const TYPE: &'static str = \"{name}\";
    fn from_event(event: Event) -> Result<Self, Event> {{
        match event {{ Event::{name}(e) => Ok({take}), other => Err(other) }}
    }}
    fn from_ref(event: &Event) -> Option<&Self> {{
        match event {{ Event::{name}(e) => Some({borrow}), _ => None }}
    }}
    fn into_event(self) -> Event {{ Event::{name}({wrap}) }}
}}
"
            );
        }
        // event type names list
        s.push_str("/// Every event type this version knows, as sent in `type`.\npub const EVENT_TYPES: &[&str] = &[\n");
        for name in &all {
            let _ = writeln!(s, "    \"{name}\",");
        }
        s.push_str("];\n");
        Ok(s)
    }

    fn ops_rs(&self) -> Result<String, String> {
        let mut s = String::from(HEADER);
        s.push_str("#![allow(clippy::new_without_default, clippy::too_many_arguments)]\n\n");
        let mut resources: Vec<&str> = self.spec.ops.iter().map(|o| o.resource.as_str()).collect();
        resources.dedup();
        let resources: Vec<&str> = {
            let mut seen = BTreeSet::new();
            resources.into_iter().filter(|r| seen.insert(*r)).collect()
        };
        for res in resources {
            let _ = writeln!(
                s,
                "/// Operations of the `{res}` resource (`/{res}`).\npub mod {} {{\n",
                snake(res)
            );
            for o in self.spec.ops.iter().filter(|o| o.resource == res) {
                if o.v.get("upgrade").is_some() {
                    continue; // the events WebSocket is the session's business
                }
                self.op_def(&mut s, o)?;
            }
            s.push_str("}\n\n");
        }
        Ok(s)
    }

    fn param_rust_type(&self, o: &Op, p: &Map<String, Value>) -> Result<String, String> {
        let name = p["name"].as_str().unwrap_or_default();
        let dt = p["dataType"].as_str().unwrap_or("string");
        if p["paramType"] == "body" {
            return Ok(match name {
                "variables" => "std::collections::BTreeMap<String, String>".into(),
                "fields" => "Vec<(String, String)>".into(),
                _ => "serde_json::Value".into(),
            });
        }
        let base = match self.param_enums.get(&(op_key(o), name.to_string())) {
            Some(e) => format!("crate::models::{e}"),
            None => match dt {
                "string" => "String".into(),
                "int" | "long" => "i64".into(),
                "boolean" => "bool".into(),
                "double" => "f64".into(),
                other => return Err(format!("unsupported parameter type {other}")),
            },
        };
        if p.get("allowMultiple")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            Ok(format!("Vec<{base}>"))
        } else {
            Ok(base)
        }
    }

    fn op_def(&self, s: &mut String, o: &Op) -> Result<(), String> {
        let nick = o.nickname();
        let sname = pascal(nick);
        let method = o.v["httpMethod"].as_str().unwrap_or("GET");
        let osince = self.since.op(o);
        let summary = doc_text(o.v.get("summary").and_then(Value::as_str).unwrap_or(""));
        let notes = doc_text(o.v.get("notes").and_then(Value::as_str).unwrap_or(""));
        let resp = o.v["responseClass"].as_str().unwrap_or("void");
        let mut doc = format!(
            "{summary}\n\n`{method} /ari{}` · node-ari-client: `{}.{}` · since {}.",
            o.path,
            o.resource,
            nick,
            since_text(osince)
        );
        if !notes.is_empty() {
            let _ = write!(doc, "\n\n{notes}");
        }
        let params = o.params();
        if !params.is_empty() {
            doc.push_str("\n\n# Parameters\n");
            for p in &params {
                let pn = p["name"].as_str().unwrap_or_default();
                let req = if p.get("required").and_then(Value::as_bool).unwrap_or(false) {
                    "required"
                } else {
                    "optional"
                };
                let ps = self.since.param(o, pn);
                let mut extra = String::new();
                if ps > osince {
                    extra = format!(", since {}", since_text(ps));
                }
                let _ = write!(
                    doc,
                    "\n- `{pn}` ({}, {req}{extra}): {}",
                    p["paramType"].as_str().unwrap_or(""),
                    doc_text(p.get("description").and_then(Value::as_str).unwrap_or(""))
                        .replace('\n', " ")
                );
            }
        }
        if let Some(errs) = o.v.get("errorResponses").and_then(Value::as_array) {
            doc.push_str("\n\n# Errors\n");
            for e in errs {
                let _ = write!(
                    doc,
                    "\n- {}: {}",
                    e["code"],
                    doc_text(e["reason"].as_str().unwrap_or("")).replace('\n', " ")
                );
            }
        }
        write_doc(s, &doc, "");
        s.push_str("#[derive(Debug, Clone, PartialEq)]\n#[non_exhaustive]\n");
        let _ = writeln!(s, "pub struct {sname} {{");
        let mut ctor_args = Vec::new();
        let mut ctor_init = Vec::new();
        let mut setters = String::new();
        for p in &params {
            let pn = p["name"].as_str().unwrap_or_default();
            let id = param_ident(pn);
            let ty = self.param_rust_type(o, p)?;
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false)
                || p["paramType"] == "path";
            let pdoc = doc_text(p.get("description").and_then(Value::as_str).unwrap_or(pn));
            write_doc(
                s,
                &format!(
                    "{pdoc}\n\n`{pn}`, {} parameter.",
                    p["paramType"].as_str().unwrap_or("")
                ),
                "    ",
            );
            let (arg_ty, conv) = arg_conversion(&ty);
            if required {
                let _ = writeln!(s, "    pub {id}: {ty},");
                ctor_args.push(format!("{id}: {arg_ty}"));
                if conv == "VALUE" {
                    ctor_init.push(id.clone());
                } else {
                    ctor_init.push(format!("{id}: {}", conv.replace("VALUE", &id)));
                }
            } else {
                let _ = writeln!(s, "    pub {id}: Option<{ty}>,");
                ctor_init.push(format!("{id}: None"));
                let _ = writeln!(
                    setters,
                    "    /// Sets `{pn}`: {}\n    pub fn {}(mut self, value: {arg_ty}) -> Self {{ self.{id} = Some({}); self }}\n",
                    first_sentence(&pdoc).replace('\n', " "),
                    id,
                    conv.replace("VALUE", "value")
                );
            }
            if ty.starts_with("std::collections::BTreeMap") {
                let single = if id == "variables" {
                    "variable".to_string()
                } else {
                    format!("{id}_entry")
                };
                let target = if required {
                    format!("self.{id}.insert(name.into(), value.into());")
                } else {
                    format!("self.{id}.get_or_insert_with(Default::default).insert(name.into(), value.into());")
                };
                let _ = writeln!(
                    setters,
                    "    /// Adds one entry to `{pn}`.\n    pub fn {single}(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {{ {target} self }}\n"
                );
            }
        }
        s.push_str("}\n\n");
        let _ = writeln!(s, "impl {sname} {{");
        let _ = writeln!(
            s,
            "    /// Creates the request with its required parameters; optional ones are set with the\n    /// methods of the same name.\n    pub fn new({}) -> Self {{ Self {{ {} }} }}\n",
            ctor_args.join(", "),
            ctor_init.join(", ")
        );
        s.push_str(&setters);
        s.push_str("}\n\n");
        // Operation impl
        let output = match resp {
            "void" => "()".to_string(),
            "binary" => "bytes::Bytes".to_string(),
            "Variables" => "crate::models::Variables".to_string(),
            other => self.rust_type(other, None)?,
        };
        let parse = match resp {
            "void" => "let _ = body; Ok(())".to_string(),
            "binary" => "Ok(bytes::Bytes::copy_from_slice(body))".to_string(),
            _ => "serde_json::from_slice(body)".to_string(),
        };
        let mut path_code = String::new();
        for seg in o.path.trim_start_matches('/').split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                let _ = writeln!(
                    path_code,
                    "        path.param(&self.{});",
                    field_ident(&snake(name))
                );
            } else {
                let _ = writeln!(path_code, "        path.literal(\"{seg}\");");
            }
        }
        let mut query_code = String::new();
        let mut body_code = String::new();
        for p in &params {
            let pn = p["name"].as_str().unwrap_or_default();
            let id = param_ident(pn);
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
            match p["paramType"].as_str() {
                Some("query") => {
                    if required {
                        let _ = writeln!(query_code, "        query.push(\"{pn}\", &self.{id});");
                    } else {
                        let _ = writeln!(
                            query_code,
                            "        if let Some(v) = &self.{id} {{ query.push(\"{pn}\", v); }}"
                        );
                    }
                }
                Some("body") => {
                    let val = if pn == "fields" {
                        "serde_json::Value::Array(v.iter().map(|(a, b)| serde_json::json!({\"attribute\": a, \"value\": b})).collect())".to_string()
                    } else {
                        "serde_json::to_value(v).unwrap_or_default()".to_string()
                    };
                    if required {
                        let _ = writeln!(body_code, "        {{ let v = &self.{id}; body.insert(\"{pn}\".into(), {val}); }}");
                    } else {
                        let _ = writeln!(body_code, "        if let Some(v) = &self.{id} {{ body.insert(\"{pn}\".into(), {val}); }}");
                    }
                }
                _ => {}
            }
        }
        let body_fn = if body_code.is_empty() {
            "    fn body(&self) -> Option<serde_json::Value> { None }\n".to_string()
        } else {
            format!("    fn body(&self) -> Option<serde_json::Value> {{\n        let mut body = serde_json::Map::new();\n{body_code}        if body.is_empty() {{ None }} else {{ Some(serde_json::Value::Object(body)) }}\n    }}\n")
        };
        let query_fn = if query_code.is_empty() {
            "    fn write_query(&self, _query: &mut crate::rest::QueryWriter) {}\n".to_string()
        } else {
            format!("    fn write_query(&self, query: &mut crate::rest::QueryWriter) {{\n{query_code}    }}\n")
        };
        let _ = writeln!(
            s,
            "impl crate::rest::Operation for {sname} {{
    type Output = {output};
    const NAME: &'static str = \"{}.{}\";
    const METHOD: http::Method = http::Method::{method};
    const PATH: &'static str = \"{}\";
    const SINCE: crate::Since = crate::Since::{};{}
    fn write_path(&self, path: &mut crate::rest::PathWriter) {{
{path_code}    }}
{query_fn}{body_fn}    fn parse_output(body: &[u8]) -> Result<Self::Output, serde_json::Error> {{ {parse} }}
}}
",
            o.resource,
            nick,
            o.path,
            BRANCHES[osince].1,
            if resp == "binary" { "\n    const BINARY_OUTPUT: bool = true;" } else { "" }
        );
        Ok(())
    }

    fn catalog_rs(&self) -> String {
        let mut s = String::from(HEADER);
        s.push_str("use crate::catalog::{FieldInfo, ModelInfo, OperationInfo, ParamInfo};\nuse crate::Since;\n\n");
        s.push_str("/// Every REST operation of the API description.\npub static OPERATIONS: &[OperationInfo] = &[\n");
        for o in &self.spec.ops {
            if o.v.get("upgrade").is_some() {
                continue;
            }
            let _ = write!(
                s,
                "    OperationInfo {{ resource: \"{}\", nickname: \"{}\", method: \"{}\", path: \"{}\", response: \"{}\", since: Since::{}, params: &[",
                o.resource,
                o.nickname(),
                o.v["httpMethod"].as_str().unwrap_or(""),
                o.path,
                escape_str(o.v["responseClass"].as_str().unwrap_or("")),
                BRANCHES[self.since.op(o)].1
            );
            for p in o.params() {
                let pn = p["name"].as_str().unwrap_or_default();
                let _ = write!(
                    s,
                    "ParamInfo {{ name: \"{pn}\", location: \"{}\", data_type: \"{}\", required: {}, allow_multiple: {}, since: Since::{} }},",
                    p["paramType"].as_str().unwrap_or(""),
                    p["dataType"].as_str().unwrap_or(""),
                    p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    p.get("allowMultiple").and_then(Value::as_bool).unwrap_or(false),
                    BRANCHES[self.since.param(o, pn)].1
                );
            }
            s.push_str("] },\n");
        }
        s.push_str("];\n\n/// Every model of the API description (events included).\npub static MODELS: &[ModelInfo] = &[\n");
        for (name, file, m) in &self.spec.models {
            let _ = write!(
                s,
                "    ModelInfo {{ name: \"{name}\", file: \"{file}\", is_event: {}, since: Since::{}, fields: &[",
                self.event_names.contains(name),
                BRANCHES[self.since.model(name)].1
            );
            for (f, p) in m["properties"].as_object().into_iter().flatten() {
                let _ = write!(
                    s,
                    "FieldInfo {{ name: \"{f}\", data_type: \"{}\", required: {}, since: Since::{} }},",
                    escape_str(p["type"].as_str().unwrap_or("")),
                    p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    BRANCHES[self.since.field(name, f)].1
                );
            }
            s.push_str("] },\n");
        }
        s.push_str("];\n");
        s
    }

    /// `fuzz/src/ops_list.rs`: every operation of the `ops` module (in its order) with the kind
    /// of its output (`json`, `unit` for `void`, `bytes` for `binary`), for the dispatch of the
    /// `response_decode` fuzz target (`for_each_op!` in `fuzz/src/checks.rs`).
    fn fuzz_ops_list_rs(&self) -> String {
        let mut s = String::from(
            "// @generated by `cargo run -p xtask -- codegen` from the ARI API description. Do not edit.\n\
             // Every operation and the kind of its output, for `for_each_op!` in checks.rs.\n\
             for_each_op! {\n",
        );
        let mut resources: Vec<&str> = Vec::new();
        for o in &self.spec.ops {
            if !resources.contains(&o.resource.as_str()) {
                resources.push(&o.resource);
            }
        }
        for res in resources {
            for o in self.spec.ops.iter().filter(|o| o.resource == res) {
                if o.v.get("upgrade").is_some() {
                    continue;
                }
                let kind = match o.v["responseClass"].as_str().unwrap_or("void") {
                    "void" => "unit",
                    "binary" => "bytes",
                    _ => "json",
                };
                let _ = writeln!(s, "    {kind} {}::{},", snake(res), pascal(o.nickname()));
            }
        }
        s.push_str("}\n");
        s
    }

    /// A test helper that builds every operation with every parameter set from sample values.
    fn samples_rs(&self) -> String {
        let mut s = String::from(HEADER);
        s.push_str("#![allow(dead_code, unreachable_pub, clippy::all)]\n\nuse ari_proto::ops;\nuse ari_proto::rest::{build_request, BuildError, BaseUrl};\n\n/// Builds every operation with all of its parameters set: strings are `sample`, numbers 7,\n/// booleans true, lists two items, enums their first value, body maps one entry.\npub fn build_all(ep: &BaseUrl, sample: &str) -> Vec<(&'static str, Result<http::Request<Vec<u8>>, BuildError>)> {\n    let mut out = Vec::new();\n");
        for o in &self.spec.ops {
            if o.v.get("upgrade").is_some() {
                continue;
            }
            let params = o.params();
            let mut args = Vec::new();
            let mut setters = String::new();
            for p in &params {
                let pn = p["name"].as_str().unwrap_or_default();
                let id = param_ident(pn);
                let ty = self.param_rust_type(o, p).unwrap_or_default();
                let val = sample_value(&ty, &self.enums);
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false)
                    || p["paramType"] == "path";
                if required {
                    args.push(val);
                } else {
                    let _ = write!(setters, ".{id}({val})");
                }
            }
            let _ = writeln!(
                s,
                "    out.push((\"{}.{}\", build_request(ep, &ops::{}::{}::new({}){setters})));",
                o.resource,
                o.nickname(),
                snake(&o.resource),
                pascal(o.nickname()),
                args.join(", ")
            );
        }
        s.push_str("    out\n}\n");
        s
    }
}

/// An instance type of `ari-client` and the path prefix of the operations bound to it.
struct Instance {
    name: &'static str,
    resource: &'static str,
    /// Path prefix with the instance's own parameters.
    prefix: &'static str,
    /// Its own path parameters and how the instance supplies them.
    own: &'static [(&'static str, &'static str)],
    /// A query parameter of creating operations that takes the instance's id.
    id_query: Option<&'static str>,
}

const INSTANCES: &[Instance] = &[
    Instance {
        name: "Channel",
        resource: "channels",
        prefix: "/channels/{channelId}",
        own: &[("channelId", "self.id()")],
        id_query: Some("channelId"),
    },
    Instance {
        name: "Bridge",
        resource: "bridges",
        prefix: "/bridges/{bridgeId}",
        own: &[("bridgeId", "self.id()")],
        id_query: Some("bridgeId"),
    },
    Instance {
        name: "Playback",
        resource: "playbacks",
        prefix: "/playbacks/{playbackId}",
        own: &[("playbackId", "self.id()")],
        id_query: None,
    },
    Instance {
        name: "LiveRecording",
        resource: "recordings",
        prefix: "/recordings/live/{recordingName}",
        own: &[("recordingName", "self.id()")],
        id_query: None,
    },
    Instance {
        name: "StoredRecording",
        resource: "recordings",
        prefix: "/recordings/stored/{recordingName}",
        own: &[("recordingName", "self.id()")],
        id_query: None,
    },
    Instance {
        name: "Endpoint",
        resource: "endpoints",
        prefix: "/endpoints/{tech}/{resource}",
        own: &[
            ("tech", "self.technology()"),
            ("resource", "self.resource()"),
        ],
        id_query: None,
    },
    Instance {
        name: "DeviceState",
        resource: "deviceStates",
        prefix: "/deviceStates/{deviceName}",
        own: &[("deviceName", "self.id()")],
        id_query: None,
    },
    Instance {
        name: "Application",
        resource: "applications",
        prefix: "/applications/{applicationName}",
        own: &[("applicationName", "self.id()")],
        id_query: None,
    },
];

/// Resource accessors on the client named apart from their resource, because the plain name
/// would read as something else: `client.user_events()` would look like an event stream (as
/// `channel.events()` is), so the REST resource that sends user events is `client.user_events()`.
const ACCESSOR_RENAMES: &[(&str, &str)] = &[("events", "user_events")];

/// The type and method names of the client accessor of resource `res`.
fn accessor_names(res: &str) -> (String, String) {
    let name = ACCESSOR_RENAMES
        .iter()
        .find(|(r, _)| *r == res)
        .map_or(res, |(_, n)| n);
    (pascal(name), snake(name))
}

/// Instance methods written by hand in `ari-client` (richer than the plain operation).
const HAND_WRITTEN: &[(&str, &str)] = &[("Channel", "play"), ("Bridge", "play")];

impl Gen<'_> {
    fn client_rs(&self) -> Result<String, String> {
        let mut s = String::from(HEADER);
        s.push_str("//! The whole REST surface on the client and on instance objects.\n\n#![allow(clippy::too_many_arguments)]\n\nuse crate::{Call, Client, Runtime};\nuse ari_proto::{models, ops};\n\n");
        let mut resources: Vec<&str> = Vec::new();
        for o in &self.spec.ops {
            if !resources.contains(&o.resource.as_str()) {
                resources.push(&o.resource);
            }
        }
        // Resource accessors.
        for res in &resources {
            let (ty, method) = accessor_names(res);
            let _ = writeln!(
                s,
                "/// The operations of the `{res}` resource, as node-ari-client's `ari.{res}`: `client.{method}()`.\n#[derive(Debug, Clone)]\npub struct {ty}<R: Runtime> {{\n    client: Client<R>,\n}}\n\nimpl<R: Runtime> Client<R> {{\n    /// The operations of the `{res}` resource (`ari.{res}` in node-ari-client).\n    pub fn {method}(&self) -> {ty}<R> {{\n        {ty} {{ client: self.clone() }}\n    }}\n}}\n"
            );
            let _ = writeln!(s, "impl<R: Runtime> {ty}<R> {{");
            for o in self.spec.ops.iter().filter(|o| o.resource == *res) {
                if o.v.get("upgrade").is_some() {
                    continue;
                }
                let (args, init) = self.ctor_args(o, &[])?;
                let _ = writeln!(s, "{}", self.call_doc(o, "    "));
                let _ = writeln!(
                    s,
                    "    pub fn {}(&self{}) -> Call<R, ops::{}::{}> {{\n        Call::new(self.client.clone(), ops::{}::{}::new({}))\n    }}\n",
                    field_ident(&snake(o.nickname())),
                    args,
                    snake(&o.resource),
                    pascal(o.nickname()),
                    snake(&o.resource),
                    pascal(o.nickname()),
                    init
                );
            }
            s.push_str("}\n\n");
        }
        // Instance methods.
        for inst in INSTANCES {
            let _ = writeln!(s, "impl<R: Runtime> crate::{}<R> {{", inst.name);
            let mut names: Vec<String> = Vec::new();
            let bound: Vec<&Op> = self
                .spec
                .ops
                .iter()
                .filter(|o| {
                    o.resource == inst.resource
                        && (o.path == inst.prefix
                            || o.path.starts_with(&format!("{}/", inst.prefix)))
                })
                .collect();
            for o in &bound {
                let mut name = snake(o.nickname());
                if o.path == inst.prefix {
                    if let Some(base) = name.strip_suffix("_with_id") {
                        name = base.to_string();
                    }
                }
                if HAND_WRITTEN.contains(&(inst.name, name.as_str())) || names.contains(&name) {
                    continue;
                }
                names.push(name.clone());
                let own: Vec<(&str, String)> =
                    inst.own.iter().map(|(p, v)| (*p, v.to_string())).collect();
                let (args, init) = self.ctor_args(o, &own)?;
                let _ = writeln!(s, "{}", self.call_doc(o, "    "));
                let _ = writeln!(
                    s,
                    "    pub fn {}(&self{}) -> Call<R, ops::{}::{}> {{\n        Call::new(self.client().clone(), ops::{}::{}::new({}))\n    }}\n",
                    field_ident(&name),
                    args,
                    snake(&o.resource),
                    pascal(o.nickname()),
                    snake(&o.resource),
                    pascal(o.nickname()),
                    init
                );
            }
            // Creating operations that take the id as a query parameter (`channels.create`).
            if let Some(q) = inst.id_query {
                for o in self
                    .spec
                    .ops
                    .iter()
                    .filter(|o| o.resource == inst.resource && !o.path.contains('{'))
                {
                    if !o
                        .params()
                        .iter()
                        .any(|p| p["name"] == q && p["paramType"] == "query")
                    {
                        continue;
                    }
                    let name = snake(o.nickname());
                    if names.contains(&name) || HAND_WRITTEN.contains(&(inst.name, name.as_str())) {
                        continue;
                    }
                    names.push(name.clone());
                    let (args, init) = self.ctor_args(o, &[])?;
                    let _ = writeln!(s, "{}", self.call_doc(o, "    "));
                    let _ = writeln!(
                        s,
                        "    /// The instance's id is sent as `{q}`.\n    pub fn {}(&self{}) -> Call<R, ops::{}::{}> {{\n        Call::new(self.client().clone(), ops::{}::{}::new({}).{}(self.id()))\n    }}\n",
                        field_ident(&name),
                        args,
                        snake(&o.resource),
                        pascal(o.nickname()),
                        snake(&o.resource),
                        pascal(o.nickname()),
                        init,
                        field_ident(&snake(q))
                    );
                }
            }
            s.push_str("}\n\n");
        }
        // Forwarding setters on Call.
        for o in &self.spec.ops {
            if o.v.get("upgrade").is_some() {
                continue;
            }
            let mut body = String::new();
            for p in o.params() {
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false)
                    || p["paramType"] == "path";
                let pn = p["name"].as_str().unwrap_or_default();
                let id = param_ident(pn);
                let ty = self.param_rust_type(o, p)?;
                let (arg_ty, _) = arg_conversion(&ty);
                let pdoc = first_sentence(&doc_text(
                    p.get("description").and_then(Value::as_str).unwrap_or(pn),
                ));
                if !required {
                    let _ = writeln!(
                        body,
                        "    /// Sets `{pn}`: {pdoc}\n    pub fn {id}(self, value: {arg_ty}) -> Self {{\n        self.map(|op| op.{id}(value))\n    }}\n"
                    );
                }
                if ty.starts_with("std::collections::BTreeMap") && id == "variables" {
                    let _ = writeln!(
                        body,
                        "    /// Adds one entry to `{pn}`.\n    pub fn variable(self, name: impl Into<String>, value: impl Into<String>) -> Self {{\n        self.map(|op| op.variable(name, value))\n    }}\n"
                    );
                }
            }
            if !body.is_empty() {
                let _ = writeln!(
                    s,
                    "/// Optional parameters of `{}`.\nimpl<R: Runtime> Call<R, ops::{}::{}> {{\n{body}}}\n",
                    op_key(o),
                    snake(&o.resource),
                    pascal(o.nickname())
                );
            }
        }
        // Models returned as they are.
        let instance_names: Vec<&str> = INSTANCES.iter().map(|i| i.name).collect();
        s.push_str("crate::identity_wrap!(\n");
        for (name, _, _) in &self.spec.models {
            if self.is_event(name)
                || name == "Message"
                || name == "Event"
                || instance_names.contains(&name.as_str())
            {
                continue;
            }
            let _ = writeln!(s, "    models::{name},");
        }
        s.push_str(");\n");
        Ok(s)
    }

    fn call_doc(&self, o: &Op, indent: &str) -> String {
        let summary = doc_text(o.v.get("summary").and_then(Value::as_str).unwrap_or(""));
        let mut d = String::new();
        write_doc(
            &mut d,
            &format!(
                "{summary}\n\n`{} /ari{}` · since {} · see [`ari_proto::ops::{}::{}`] for the parameters.",
                o.v["httpMethod"].as_str().unwrap_or(""),
                o.path,
                since_text(self.since.op(o)),
                snake(&o.resource),
                pascal(o.nickname())
            ),
            indent,
        );
        if let Some(note) = call_note(&op_key(o)) {
            write_doc(&mut d, &format!("\n{note}"), indent);
        }
        d.trim_end().to_string()
    }

    /// Constructor arguments (after `&self`) and the `new(...)` argument list of an operation;
    /// `own` path parameters are supplied by the instance.
    fn ctor_args(&self, o: &Op, own: &[(&str, String)]) -> Result<(String, String), String> {
        let mut args = String::new();
        let mut init = Vec::new();
        for p in o.params() {
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false)
                || p["paramType"] == "path";
            if !required {
                continue;
            }
            let pn = p["name"].as_str().unwrap_or_default();
            if let Some((_, v)) = own.iter().find(|(n, _)| *n == pn) {
                init.push(v.clone());
                continue;
            }
            let id = param_ident(pn);
            let ty = self.param_rust_type(o, p)?;
            let (arg_ty, _) = arg_conversion(&ty);
            let _ = write!(args, ", {id}: {arg_ty}");
            init.push(id);
        }
        Ok((args, init.join(", ")))
    }
}

/// One match arm a line, for every event type.
fn arms(names: &[String], arm: impl Fn(&str) -> String) -> String {
    names
        .iter()
        .map(|name| format!("            {}\n", arm(name)))
        .collect()
}

fn sample_value(ty: &str, enums: &[EnumDef]) -> String {
    if let Some(e) = ty.strip_prefix("crate::models::") {
        let first = enums
            .iter()
            .find(|d| d.name == e)
            .and_then(|d| d.values.first())
            .map(|v| variant_ident(v))
            .unwrap_or_default();
        return format!("ari_proto::models::{e}::{first}");
    }
    match ty {
        "String" => "sample".into(),
        "i64" => "7".into(),
        "bool" => "true".into(),
        "f64" => "7.0".into(),
        "Vec<String>" => "[sample, sample]".into(),
        "std::collections::BTreeMap<String, String>" => "[(\"CALLERID(name)\", sample)]".into(),
        "Vec<(String, String)>" => "[(\"attr\", sample)]".into(),
        "serde_json::Value" => {
            "serde_json::json!({\"allowed\": [{\"type\": \"StasisStart\"}]})".into()
        }
        other if other.starts_with("Vec<crate::models::") => {
            let inner = &other[4..other.len() - 1];
            format!("[{}]", sample_value(inner, enums))
        }
        other => format!("todo_unsupported_{other}"),
    }
}

/// The argument type a constructor/setter takes for a field type, and how to convert it.
fn arg_conversion(ty: &str) -> (String, String) {
    match ty {
        "String" => ("impl Into<String>".into(), "VALUE.into()".into()),
        "Vec<String>" => (
            "impl IntoIterator<Item = impl Into<String>>".into(),
            "VALUE.into_iter().map(Into::into).collect()".into(),
        ),
        "std::collections::BTreeMap<String, String>" => (
            "impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>".into(),
            "VALUE.into_iter().map(|(k, v)| (k.into(), v.into())).collect()".into(),
        ),
        "Vec<(String, String)>" => (
            "impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>".into(),
            "VALUE.into_iter().map(|(k, v)| (k.into(), v.into())).collect()".into(),
        ),
        t if t.starts_with("Vec<") => (
            format!("impl IntoIterator<Item = {}>", &t[4..t.len() - 1]),
            "VALUE.into_iter().collect()".into(),
        ),
        other => (other.to_string(), "VALUE".into()),
    }
}

fn lenient_default(rty: &str) -> bool {
    matches!(
        rty,
        "crate::CompactString" | "bool" | "i64" | "f64" | "serde_json::Value"
    ) || rty.starts_with("Vec<")
}

fn list_values(p: &Map<String, Value>) -> Option<Vec<String>> {
    let av = p.get("allowableValues")?;
    if av.get("valueType")?.as_str()? != "LIST" {
        return None;
    }
    let ty = p
        .get("type")
        .or_else(|| p.get("dataType"))
        .and_then(Value::as_str)
        .unwrap_or("string");
    if ty != "string" {
        return None;
    }
    Some(
        av["values"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
    )
}

fn since_text(i: usize) -> String {
    match BRANCHES[i].0 {
        "asterisk-master" => "Asterisk master (unreleased)".into(),
        b => format!("Asterisk {}+", b.trim_start_matches("asterisk-")),
    }
}

fn first_sentence(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.to_string()
}

/// Makes spec text safe as a rustdoc comment.
fn doc_text(s: &str) -> String {
    let mut out = String::new();
    for (i, line) in s.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line = line.trim();
        let esc = line
            .replace('\\', "\\\\")
            .replace('[', "\\[")
            .replace(']', "\\]")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('`', "'")
            .replace('*', "\\*")
            .replace('_', "\\_");
        // Bare URLs become autolinks.
        let mut words = Vec::new();
        for w in esc.split(' ') {
            if w.starts_with("http://") || w.starts_with("https://") {
                words.push(format!("<{}>", w.replace("\\_", "_")));
            } else {
                words.push(w.to_string());
            }
        }
        out.push_str(&words.join(" "));
    }
    out.trim().to_string()
}

fn write_doc(s: &mut String, doc: &str, indent: &str) {
    for line in doc.lines() {
        if line.is_empty() {
            let _ = writeln!(s, "{indent}///");
        } else {
            let _ = writeln!(s, "{indent}/// {line}");
        }
    }
}

fn escape_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn pascal(s: &str) -> String {
    let mut out = String::new();
    let mut up = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if up {
                out.extend(c.to_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        } else {
            up = true;
        }
    }
    out
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// The Rust name of an operation parameter. `type` (the bridge type of `bridges.create`) is
/// `bridge_type`, not the raw identifier `r#type`.
fn param_ident(name: &str) -> String {
    match name {
        "type" => "bridge_type".to_string(),
        _ => field_ident(&snake(name)),
    }
}

fn field_ident(name: &str) -> String {
    let s = snake(name);
    if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

fn variant_ident(v: &str) -> String {
    match v {
        "*" => "Star".into(),
        "#" => "Hash".into(),
        _ => {
            let p = pascal(&v.to_ascii_lowercase().replace('_', " "));
            // Keep the spec's own camel humps for mixed-case values (`NotInuse` vs `OffHook`).
            let mixed = v.chars().any(|c| c.is_ascii_lowercase())
                && v.chars().any(|c| c.is_ascii_uppercase());
            let p = if mixed { pascal(v) } else { p };
            if p.is_empty() {
                "Empty".into()
            } else if p.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                format!("V{p}")
            } else {
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ari_base;

    #[test]
    fn the_server_url_is_taken_in_the_forms_users_write_it() {
        for url in [
            "http://pbx:8088",
            "http://pbx:8088/",
            "http://pbx:8088/ari",
            "http://pbx:8088/ari/",
            "http://pbx:8088/ari/api-docs/resources.json",
        ] {
            assert_eq!(ari_base(url).as_deref(), Ok("http://pbx:8088/ari"), "{url}");
        }
        assert_eq!(
            ari_base("https://pbx.example/asterisk").as_deref(),
            Ok("https://pbx.example/asterisk/ari")
        );
        assert!(ari_base("pbx:8088").unwrap_err().contains("not an http"));
        assert!(ari_base("http:///ari").unwrap_err().contains("no host"));
        let err = ari_base("http://u:secret@pbx:8088").unwrap_err();
        assert!(
            err.contains("--user/--password") && !err.contains("secret"),
            "{err}"
        );
    }
}
