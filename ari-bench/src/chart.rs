//! The SVG chart: the client against its floors, CPU per event, CPU per REST op, RSS.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

const FLOOR: RGBColor = RGBColor(150, 150, 150);
const TOKIO: RGBColor = RGBColor(31, 119, 180);
const SMOL: RGBColor = RGBColor(255, 127, 14);

fn color(client: &str) -> RGBColor {
    if client.starts_with("tokio") {
        TOKIO
    } else if client.starts_with("smol") {
        SMOL
    } else {
        FLOOR
    }
}

/// One bar: group label, client, value.
type Bar = (String, String, f64);

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[Bar],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut groups: Vec<String> = Vec::new();
    for (g, _, _) in bars {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    let max = bars.iter().map(|b| b.2).fold(0.0f64, f64::max).max(1e-9);
    let per_group = bars.len().max(1) as f64 / groups.len().max(1) as f64;
    let width = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..width, 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .draw()?;
    let bar_w = 0.8 / per_group.ceil();
    for (gi, g) in groups.iter().enumerate() {
        let in_group: Vec<&Bar> = bars.iter().filter(|b| &b.0 == g).collect();
        for (bi, (_, client, v)) in in_group.iter().enumerate() {
            let x0 = gi as f64 + 0.1 + bi as f64 * bar_w;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x0 + bar_w * 0.9, *v)],
                color(client).filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{v:.1}"),
                (x0, *v + max * 0.02),
                ("sans-serif", 11),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            g.clone(),
            (gi as f64 + 0.1, -max * 0.06),
            ("sans-serif", 12),
        )))?;
    }
    Ok(())
}

/// Writes the chart.
pub(crate) fn write(path: &Path, r: &Value) -> Result<(), Box<dyn std::error::Error>> {
    let name = |v: &Value| v["client"].as_str().unwrap_or_default().to_owned();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let ev: Vec<Bar> = ["events_few_channels", "events"]
        .iter()
        .filter_map(|k| r[*k].as_array())
        .flatten()
        .map(|e| {
            (
                format!("{} channels", e["channels"]),
                name(e),
                f(e, "cpu_us_per_event"),
            )
        })
        .collect();
    let rest: Vec<Bar> = r["rest"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let op = e["op"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches("channels.");
                    (
                        format!("{op} x{}", e["in_flight"]),
                        name(e),
                        f(e, "cpu_us_per_op"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mem: Vec<Bar> = r["memory"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|e| {
                    let n = name(e);
                    e["checkpoints"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |c| {
                            (
                                format!("after {}", c["lifecycles"]),
                                n.clone(),
                                c["rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
                            )
                        })
                })
                .collect()
        })
        .unwrap_or_default();

    let root = SVGBackend::new(path, (1500, 470)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(440);
    let panels = top.split_evenly((1, 3));
    panel(
        &panels[0],
        "Events: client CPU per event",
        "CPU us / event",
        &ev,
    )?;
    panel(
        &panels[1],
        "REST: client CPU per operation",
        "CPU us / op",
        &rest,
    )?;
    panel(
        &panels[2],
        "Memory: RSS after call lifecycles",
        "RSS MiB",
        &mem,
    )?;
    let legend = [
        (FLOOR, "floor: bare tungstenite reader / bare hyper"),
        (TOKIO, "ari-tokio client"),
        (SMOL, "ari-smol client"),
    ];
    for (i, (c, label)) in legend.iter().enumerate() {
        let x = 20 + i as i32 * 420;
        bottom.draw(&Rectangle::new([(x, 8), (x + 14, 22)], c.filled()))?;
        bottom.draw(&Text::new(*label, (x + 20, 8), ("sans-serif", 14)))?;
    }
    root.present()?;
    Ok(())
}
