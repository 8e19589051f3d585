//! The machine, the ratios against the targets, and the printed table.

use std::fmt::Write as _;

use serde_json::{json, Value};

/// What this machine is.
pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": kernel,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// A REST row's p99 / p50 over its runs: `1.21 (1.16-1.69)`; `-` without them.
fn tail_runs(e: &Value) -> String {
    let tails: Vec<f64> = e["p99_over_p50_runs"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let (Some(lo), Some(hi)) = (
        tails.iter().copied().reduce(f64::min),
        tails.iter().copied().reduce(f64::max),
    ) else {
        return "-".to_owned();
    };
    format!("{:.2} ({lo:.2}-{hi:.2})", f(e, "p99_over_p50_median"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn target(what: String, client: &str, value: f64, limit: f64, unit: &str) -> Value {
    json!({
        "what": what,
        "client": client,
        "value": value,
        "target": limit,
        "unit": unit,
        "met": value <= limit,
    })
}

/// Ratios of each client against its floor, with the targets.
pub(crate) fn targets(r: &Value) -> Value {
    let mut out = Vec::new();
    if let Some(ev) = r["events"].as_array() {
        if let Some(floor) = ev
            .iter()
            .find(|e| e["client"].as_str().is_some_and(|c| c.starts_with("floor")))
        {
            for c in ev.iter().filter(|e| e != &floor) {
                out.push(target(
                    "CPU per event / bare reader".to_owned(),
                    c["client"].as_str().unwrap_or_default(),
                    f(c, "cpu_us_per_event") / f(floor, "cpu_us_per_event"),
                    0.9,
                    "x",
                ));
            }
        }
    }
    if let Some(rows) = r["routing"].as_array() {
        if let (Some(few), Some(many)) = (rows.first(), rows.last()) {
            if few["channels"] != many["channels"] {
                out.push(target(
                    format!(
                        "decode + route per event, {} / {} live channels",
                        many["channels"], few["channels"]
                    ),
                    "ari-proto session",
                    f(many, "decode_route_us_per_event") / f(few, "decode_route_us_per_event"),
                    1.1,
                    "x",
                ));
            }
        }
    }
    if let Some(rest) = r["rest"].as_array() {
        let is_base = |e: &Value| {
            e["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("baseline"))
        };
        let is_floor = |e: &Value| e["client"].as_str().is_some_and(|c| c.starts_with("floor"));
        for c in rest.iter().filter(|e| !is_base(e) && !is_floor(e)) {
            let base = rest
                .iter()
                .find(|b| is_base(b) && b["op"] == c["op"] && b["in_flight"] == c["in_flight"]);
            // What the same bare hyper loop costs on smol (the smol client's own floor), for
            // context: the target is against bare hyper on tokio.
            let smol_floor = rest.iter().find(|b| {
                b["client"].as_str() == Some("floor: smol, bare hyper")
                    && b["op"] == c["op"]
                    && b["in_flight"] == c["in_flight"]
            });
            if let Some(base) = base {
                let context = match smol_floor {
                    Some(fl) if s(c, "client").starts_with("smol") => format!(
                        " (smol's own bare hyper: {:.2}x)",
                        f(fl, "cpu_us_per_op") / f(base, "cpu_us_per_op")
                    ),
                    _ => String::new(),
                };
                out.push(target(
                    format!(
                        "CPU per {} ({} in flight) / bare hyper{context}",
                        c["op"].as_str().unwrap_or_default(),
                        c["in_flight"]
                    ),
                    c["client"].as_str().unwrap_or_default(),
                    f(c, "cpu_us_per_op") / f(base, "cpu_us_per_op"),
                    1.1,
                    "x",
                ));
            }
            if c["in_flight"].as_u64().is_some_and(|n| n > 1) {
                // Bare hyper's own tail in the same runs: what the host and the mock add.
                let context = base
                    .and_then(|b| b["p99_over_p50_median"].as_f64())
                    .map(|t| format!(" (bare hyper's: {t:.2}x)"))
                    .unwrap_or_default();
                out.push(target(
                    format!(
                        "p99 / p50 latency of {} ({} in flight), median of runs{context}",
                        c["op"].as_str().unwrap_or_default(),
                        c["in_flight"]
                    ),
                    c["client"].as_str().unwrap_or_default(),
                    // The median over the runs (see `tail_over_runs`); a single run's
                    // ratio for a report written before it existed.
                    c["p99_over_p50_median"]
                        .as_f64()
                        .unwrap_or_else(|| f(c, "p99_over_p50")),
                    1.5,
                    "x",
                ));
            }
        }
    }
    if let Some(mem) = r["memory"].as_array() {
        for m in mem {
            let cps = m["checkpoints"].as_array().cloned().unwrap_or_default();
            if let (Some(a), Some(b)) = (cps.first(), cps.last()) {
                out.push(target(
                    format!(
                        "RSS after {} lifecycles / after {}",
                        b["lifecycles"], a["lifecycles"]
                    ),
                    m["client"].as_str().unwrap_or_default(),
                    f(b, "rss_kb") / f(a, "rss_kb"),
                    1.1,
                    "x",
                ));
            }
        }
    }
    Value::Array(out)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The results as text tables.
pub(crate) fn table(r: &Value) -> String {
    let mut o = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        o,
        "\nari-bench ({} mode, {} build) on {} CPUs ({}), Linux {}; mock server in a child process",
        s(r, "mode"),
        s(m, "profile"),
        m["cpus"],
        s(m, "cpu"),
        s(m, "kernel")
    );
    if let Some(ev) = r["events"].as_array() {
        let _ = writeln!(
            o,
            "\nEVENTS: {} events over {} channels (flood, bulk), six per-instance handlers on every channel; best of {} interleaved runs by CPU",
            r["sizes"]["events"], r["sizes"]["channels"], r["sizes"]["repeat"]
        );
        let _ = writeln!(
            o,
            "{:<46} {:>11} {:>8} {:>10} {:>9} {:>10} {:>8}",
            "client", "events/s", "CPU s", "CPU us/ev", "vs floor", "peak RSS", "dropped"
        );
        let floor = ev.first().map_or(f64::NAN, |e| f(e, "cpu_us_per_event"));
        for e in ev {
            let _ = writeln!(
                o,
                "{:<46} {:>11.0} {:>8.3} {:>10.2} {:>8.2}x {:>7.1}MiB {:>8}",
                s(e, "client"),
                f(e, "events_per_sec"),
                f(e, "cpu_seconds"),
                f(e, "cpu_us_per_event"),
                f(e, "cpu_us_per_event") / floor,
                f(e, "peak_rss_kb") / 1024.0,
                e["dropped_events"]
                    .as_u64()
                    .map_or("-".to_owned(), |d| d.to_string()),
            );
        }
    }
    if let (Some(many), Some(few)) = (r["events"].as_array(), r["events_few_channels"].as_array()) {
        let _ = writeln!(
            o,
            "\nEVENTS vs LIVE CHANNELS: CPU us per event, same flood over {} and over {} channels \
             (end to end, the handlers' per-channel state included; the routing target is ROUTING below)",
            few.first().map_or(Value::Null, |e| e["channels"].clone()),
            r["sizes"]["channels"],
        );
        for (a, b) in few.iter().zip(many) {
            let _ = writeln!(
                o,
                "{:<46} {:>8.2} -> {:<8.2} ({:+.0}%)",
                s(a, "client"),
                f(a, "cpu_us_per_event"),
                f(b, "cpu_us_per_event"),
                (f(b, "cpu_us_per_event") / f(a, "cpu_us_per_event") - 1.0) * 100.0,
            );
        }
    }
    if let Some(rest) = r["rest"].as_array() {
        let _ = writeln!(
            o,
            "\nREST: {} operations per row on 64 simulated channels; best of {} interleaved runs by CPU. \
             conns: TCP connections the mock accepted during the warm-up / the measurement \
             (cap: connections allowed; the client's pool is capped at 32, and the capped hyper \
             floor shows what waiting behind that cap costs by itself). vs hyper: CPU per op / the \
             bare hyper baseline (on tokio; the targets); vs same rt: a client's CPU per op / bare \
             hyper on its own runtime (tokio: the baseline; smol: the `floor: smol, bare hyper` \
             row, hyper over the smol adapter's async-io streams), information only. p50, p99, \
             p99/50, max: that run's; runs: p99/50 of every run, median (the targets at 64 in \
             flight) and range",
            r["sizes"]["rest_ops"], r["sizes"]["repeat"]
        );
        let _ = writeln!(
            o,
            "{:<30} {:<16} {:>4} {:>4} {:>8} {:>9} {:>8} {:>8} {:>7} {:>16} {:>8} {:>9} {:>9} {:>11}",
            "client",
            "op",
            "in",
            "cap",
            "conns",
            "ops/s",
            "p50 us",
            "p99 us",
            "p99/50",
            "runs: med (range)",
            "max us",
            "CPU us/op",
            "vs hyper",
            "vs same rt"
        );
        for e in rest {
            let base = rest.iter().find(|b| {
                s(b, "client").starts_with("baseline")
                    && b["op"] == e["op"]
                    && b["in_flight"] == e["in_flight"]
            });
            let ratio = base.map_or(f64::NAN, |b| f(e, "cpu_us_per_op") / f(b, "cpu_us_per_op"));
            // The same runtime's bare hyper row, for the clients' rows.
            let same_rt = match s(e, "client").split(':').next() {
                Some("tokio") => Some("baseline: bare hyper"),
                Some("smol") => Some("floor: smol, bare hyper"),
                _ => None,
            }
            .and_then(|floor| {
                rest.iter().find(|b| {
                    s(b, "client") == floor
                        && b["op"] == e["op"]
                        && b["in_flight"] == e["in_flight"]
                })
            })
            .map_or_else(
                || "-".to_owned(),
                |b| format!("{:.2}x", f(e, "cpu_us_per_op") / f(b, "cpu_us_per_op")),
            );
            let _ = writeln!(
                o,
                "{:<30} {:<16} {:>4} {:>4} {:>8} {:>9.0} {:>8.0} {:>8.0} {:>6.2}x {:>16} {:>8.0} {:>9.1} {:>8.2}x {:>11}",
                s(e, "client"),
                s(e, "op"),
                e["in_flight"],
                e["connection_cap"],
                format!("{}/{}", e["connections_warm_up"], e["connections_measured"]),
                f(e, "ops_per_sec"),
                f(e, "p50_us"),
                f(e, "p99_us"),
                f(e, "p99_over_p50"),
                tail_runs(e),
                f(e, "max_us"),
                f(e, "cpu_us_per_op"),
                ratio,
                same_rt,
            );
        }
    }
    if let Some(mem) = r["memory"].as_array() {
        let _ = writeln!(
            o,
            "\nMEMORY: call lifecycles (originate -> StasisStart -> hangup -> ChannelDestroyed), three per-instance handlers + two awaited events each, 32 in flight"
        );
        let _ = writeln!(
            o,
            "{:<26} {:>22} {:>22} {:>8} {:>12} {:>12}",
            "client", "RSS after first", "RSS after all", "growth", "live subs", "lifecycles/s"
        );
        for e in mem {
            let cps = e["checkpoints"].as_array().cloned().unwrap_or_default();
            let (Some(a), Some(b)) = (cps.first(), cps.last()) else {
                continue;
            };
            let _ = writeln!(
                o,
                "{:<26} {:>13} {:>6.1}MiB {:>13} {:>6.1}MiB {:>7.1}% {:>5} -> {:<4} {:>12.0}",
                s(e, "client"),
                format!("{} calls:", a["lifecycles"]),
                f(a, "rss_kb") / 1024.0,
                format!("{} calls:", b["lifecycles"]),
                f(b, "rss_kb") / 1024.0,
                (f(b, "rss_kb") / f(a, "rss_kb") - 1.0) * 100.0,
                e["baseline_subscriptions"],
                b["live_subscriptions"],
                f(e, "lifecycles_per_sec"),
            );
        }
    }
    if let Some(rows) = r["routing"].as_array() {
        let _ = writeln!(
            o,
            "\nROUTING: the ari-proto session alone, ChannelDtmfReceived frames round-robin over the live channels, six typed subscriptions each; least CPU of {} runs",
            r["sizes"]["repeat"]
        );
        let _ = writeln!(
            o,
            "{:>9} {:>8} {:>14} {:>22} {:>16} {:>16}",
            "channels",
            "events",
            "subscriptions",
            "decode+route us/ev",
            "decode us/ev",
            "route us/ev"
        );
        for e in rows {
            let _ = writeln!(
                o,
                "{:>9} {:>8} {:>14} {:>22.3} {:>16.3} {:>16.3}",
                e["channels"].as_u64().unwrap_or_default(),
                e["events"].as_u64().unwrap_or_default(),
                e["subscriptions"].as_u64().unwrap_or_default(),
                f(e, "decode_route_us_per_event"),
                f(e, "decode_us_per_event"),
                f(e, "route_us_per_event"),
            );
        }
    }
    if let Some(t) = r["targets"].as_array() {
        let _ = writeln!(
            o,
            "\nTARGETS (ratios measured in this run){}",
            if r["mode"] == "quick" {
                "; quick mode: sizes too small for the ratios to mean anything (connection setup and warm-up dominate), run without --quick"
            } else {
                ""
            }
        );
        for e in t {
            let _ = writeln!(
                o,
                "  {:<4} {:<26} {:<50} {:>6.2}x (target <= {}x)",
                if e["met"] == true { "ok" } else { "MISS" },
                s(e, "client"),
                s(e, "what"),
                f(e, "value"),
                e["target"],
            );
        }
    }
    o
}
