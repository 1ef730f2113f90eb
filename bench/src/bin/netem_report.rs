//! Tables and the chart of `bench/netem.sh run` results (bench/results/*.json, written by run.sh).
//!
//! ```text
//! netem_report table RESULT.json            # the markdown table run.sh prints (medians of the runs)
//! netem_report summary RESULT.json...       # one row per profile and method, for NETEM.md/README
//! netem_report plot RESULT.json... -o bench/results/netem.svg
//! ```
//! With several results of the same profile, the newest (by file name, which ends in its UTC time)
//! is used for `summary` and `plot`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use plotters::prelude::*;
use serde_json::Value;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The per-run-set table of one result file.
    Table { file: PathBuf },
    /// One line per profile and method over several result files.
    Summary { files: Vec<PathBuf> },
    /// SVG: share of the link's capacity and telemetry p99 per profile and method.
    Plot {
        files: Vec<PathBuf>,
        #[arg(short, long, default_value = "bench/results/netem.svg")]
        output: PathBuf,
    },
}

/// Medians over the successful runs of one method.
#[derive(Debug, Default, Clone)]
struct Row {
    label: String,
    runs_ok: usize,
    runs: usize,
    cc: String,
    seconds: Option<f64>,
    goodput: Option<f64>,
    share: Option<f64>,
    tele_p50: Option<f64>,
    tele_p99: Option<f64>,
    tele_where: String,
    tele_lost: usize,
    resent: Option<f64>,
    resent_note: String,
    wire: Option<f64>,
    reconnects: Option<f64>,
}

/// Median of the finite values (a run without a figure reports NaN).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    quicft_bench::stats::median(v)
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut x = v;
    for p in path {
        x = x.get(p)?;
    }
    x.as_f64()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut x = v;
    for p in path {
        x = x.get(p)?;
    }
    x.as_str()
}

struct Result_ {
    profile: String,
    size: String,
    bytes: f64,
    emulator: String,
    capacity: Option<f64>,
    rtt_ms: Option<f64>,
    runs: usize,
    server_cc: String,
    kernel_cc: String,
    rows: Vec<Row>,
}

fn load(path: &PathBuf) -> Result<Result_> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    let bytes = f(&v, &["bytes"]).unwrap_or(0.0);
    let server_cc = s(&v, &["server_cc"]).unwrap_or("-").to_owned();
    let kernel_cc = s(&v, &["kernel_cc"]).unwrap_or("-").to_owned();
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in runs {
        let m = s(&r, &["method"]).unwrap_or("?").to_owned();
        if !order.contains(&m) {
            order.push(m.clone());
        }
        by.entry(m).or_default().push(r);
    }
    let mut rows = Vec::new();
    for m in order {
        let list = &by[&m];
        let mut row = Row {
            runs: list.len(),
            ..Row::default()
        };
        let ok: Vec<&Value> = list
            .iter()
            .filter(|r| r.get("ok").and_then(Value::as_bool).unwrap_or(false))
            .collect();
        row.runs_ok = ok.len();
        let med = |p: &[&str]| median(ok.iter().filter_map(|r| f(r, p)).collect());
        row.seconds = med(&["seconds"]);
        row.goodput = med(&["goodput_mbit"]);
        row.share = med(&["share"]);
        row.tele_p50 = med(&["telemetry", "p50_ms"]);
        row.tele_p99 = med(&["telemetry", "p99_ms"]);
        row.tele_lost = ok
            .iter()
            .filter_map(|r| f(r, &["telemetry", "failed"]))
            .sum::<f64>() as usize;
        row.wire = med(&["link", "up_bytes_in"]).map(|b| b / bytes.max(1.0));
        row.reconnects = med(&["reconnects"]);
        let first = ok.first().copied().or(list.first());
        row.tele_where = first
            .and_then(|r| s(r, &["telemetry", "label"]))
            .unwrap_or("-")
            .to_owned();
        if m == "idle" {
            row.label = "no upload: telemetry alone (QUIC)".into();
            row.cc = "-".into();
            row.resent = None;
            row.resent_note = "-".into();
        } else if m.starts_with("https") {
            row.label = "HTTPS PUT (curl → nginx)".into();
            row.cc = format!(
                "{} (kernel TCP)",
                first.and_then(|r| s(r, &["cc"])).unwrap_or("-")
            );
            row.resent = None;
            row.resent_note = "n/a: a failed PUT restarts from 0".into();
        } else {
            let transport = first.and_then(|r| s(r, &["transport"])).unwrap_or("?");
            let dev_cc = first.and_then(|r| s(r, &["device_cc"])).unwrap_or("?");
            if m == "cli" {
                row.label = format!(
                    "quicft CLI over {} (no telemetry)",
                    transport.to_uppercase()
                );
                row.cc = format!("device {dev_cc} (quinn); server {server_cc}");
            } else if transport == "quic" {
                // Runs from before the mirror existed carry no mirror_ms at all: label them plainly.
                let unmirrored = first
                    .and_then(|r| r.get("telemetry"))
                    .and_then(|t| t.get("mirror_ms"))
                    .is_some_and(serde_json::Value::is_null);
                let mirror = if unmirrored { ", no mirror" } else { "" };
                // `quic@N` runs: the device's path-MTU search bound differs from the SDK's.
                let mtu = first
                    .and_then(|r| f(r, &["mtu_upper_bound"]))
                    .map_or(String::new(), |b| format!(", MTU bound {b}"));
                row.label = format!("quicft over QUIC ({dev_cc}{mirror}{mtu})");
                row.cc = format!("device {dev_cc} (quinn); server {server_cc}");
            } else {
                row.label = format!("quicft over {}/TCP", transport.to_uppercase());
                row.cc = format!("{kernel_cc} (kernel TCP)");
            }
            row.resent = med(&["bytes_resent"]).map(|b| b / bytes.max(1.0));
        }
        rows.push(row);
    }
    Ok(Result_ {
        profile: s(&v, &["profile"]).unwrap_or("?").to_owned(),
        size: s(&v, &["size"]).unwrap_or("?").to_owned(),
        bytes,
        emulator: s(&v, &["emulator"]).unwrap_or("?").to_owned(),
        capacity: f(&v, &["capacity_mbit"]),
        rtt_ms: f(&v, &["rtt_ms"]),
        runs: f(&v, &["runs_per_method"]).unwrap_or(0.0) as usize,
        server_cc,
        kernel_cc,
        rows,
    })
}

fn o(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{:.digits$}%", 100.0 * x))
}

fn table(r: &Result_) {
    println!(
        "### {}, {} upload ({} bytes), medians of {} runs, via {}, uplink {} Mbit/s, base RTT {} ms",
        r.profile,
        r.size,
        r.bytes,
        r.runs,
        r.emulator,
        o(r.capacity, 1),
        o(r.rtt_ms, 0)
    );
    println!();
    println!(
        "Congestion control: device QUIC as in the table, server QUIC `{}` (it sends only acknowledgements \
         here), kernel TCP `{}` in both namespaces.",
        r.server_cc, r.kernel_cc
    );
    println!();
    println!(
        "| method | congestion control | completion s | goodput Mbit/s | share of link | telemetry p50 / p99 ms | re-sent after reconnects (of file) | uplink wire bytes / file | ok runs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for w in &r.rows {
        let tele = match (w.tele_p50, w.tele_p99) {
            (None, None) => "-".to_string(),
            (a, b) => format!(
                "{} / {}{}",
                o(a, 0),
                o(b, 0),
                if w.tele_lost > 0 {
                    format!(" ({} unacked)", w.tele_lost)
                } else {
                    String::new()
                }
            ),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            w.label,
            w.cc,
            o(w.seconds, 2),
            o(w.goodput, 2),
            pct(w.share, 1),
            tele,
            if w.resent_note.is_empty() {
                pct(w.resent, 2)
            } else {
                w.resent_note.clone()
            },
            o(w.wire, 3),
            w.runs_ok,
            w.runs
        );
    }
    println!();
    println!(
        "Share of link: goodput over the uplink capacity during each run (a trace's delivery opportunities in that \
         window, cut time excluded). Telemetry: 100-byte QoS 1 PUBLISH every 100 ms, publish → PUBACK; quicft rows \
         on the upload's own connection, the HTTPS row on a separate quicft QUIC connection beside curl (device \
         controller as in the QUIC row). Wire bytes: IP bytes the device offered to the uplink (headers, \
         retransmissions and telemetry included) over the file size: transport-level re-sending (QUIC or TCP \
         retransmissions after losses and cuts) shows there, the SDK's re-sent column counts file bytes sent again \
         after a reconnect."
    );
}

fn newest_per_profile(files: &[PathBuf]) -> Result<Vec<Result_>> {
    let mut files = files.to_vec();
    files.sort();
    let mut by: BTreeMap<String, Result_> = BTreeMap::new();
    let mut order = Vec::new();
    for p in &files {
        // Other benches write to bench/results too (cc.json ...): only run.sh's files count.
        let is_run = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v.get("runs_per_method").is_some());
        if !is_run {
            continue;
        }
        let r = load(p)?;
        if !order.contains(&r.profile) {
            order.push(r.profile.clone());
        }
        by.insert(r.profile.clone(), r);
    }
    // The issue's order first (clean, trace, loss, cuts, slow links), then any others.
    const FIRST: [&str; 9] = [
        "lan",
        "lte",
        "verizon-lte-short",
        "lossy-lte",
        "lossy3-lte",
        "bursty-lte",
        "flaky",
        "3g",
        "satellite",
    ];
    order.sort_by_key(|p| FIRST.iter().position(|f| f == p).unwrap_or(FIRST.len()));
    Ok(order.into_iter().filter_map(|p| by.remove(&p)).collect())
}

fn summary(files: &[PathBuf]) -> Result<()> {
    let all = newest_per_profile(files)?;
    println!(
        "| profile (file) | method | completion s | goodput Mbit/s | share of link | telemetry p50 / p99 ms | re-sent | wire / file |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &all {
        for w in &r.rows {
            println!(
                "| {} ({}) | {} | {} | {} | {} | {} / {} | {} | {} |",
                r.profile,
                r.size,
                w.label,
                o(w.seconds, 2),
                o(w.goodput, 2),
                pct(w.share, 1),
                o(w.tele_p50, 0),
                o(w.tele_p99, 0),
                pct(w.resent, 2),
                o(w.wire, 3)
            );
        }
    }
    Ok(())
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn plot(files: &[PathBuf], output: &PathBuf) -> Result<()> {
    let all = newest_per_profile(files)?;
    anyhow::ensure!(!all.is_empty(), "no results");
    let mut methods: Vec<String> = Vec::new();
    for r in &all {
        for w in &r.rows {
            if !methods.contains(&w.label) {
                methods.push(w.label.clone());
            }
        }
    }
    let n = all.len();
    let k = methods.len().max(1);
    let width = (120 + n * (30 + 24 * k)).max(900) as u32;
    let root = SVGBackend::new(output, (width, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, charts) = root.split_vertically(60);
    let (top, bottom) = charts.split_vertically(380);

    // The legend once, in a strip across the top.
    legend.draw(&Text::new(
        "quicft weak-link benchmark (bench/netem.sh run): medians of the runs per profile and method",
        (12, 6),
        ("sans-serif", 16).into_font(),
    ))?;
    let mut x = 12;
    for (mi, m) in methods.iter().enumerate() {
        let c = COLORS[mi % COLORS.len()];
        legend.draw(&Rectangle::new([(x, 34), (x + 12, 46)], c.filled()))?;
        legend.draw(&Text::new(
            m.clone(),
            (x + 16, 33),
            ("sans-serif", 13).into_font(),
        ))?;
        x += 30 + 7 * m.chars().count() as i32;
    }

    let label = |x: &f64| {
        let r = x.round();
        if (x - r).abs() > 1e-6 || r < 0.0 {
            return String::new();
        }
        all.get(r as usize)
            .map_or(String::new(), |r| format!("{} ({})", r.profile, r.size))
    };
    let slot = 0.8 / k as f64;
    let bar_x = |i: usize, mi: usize| i as f64 - 0.4 + slot * mi as f64;

    // Goodput share, linear.
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Upload goodput, % of the uplink's capacity (line: the 90% target)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..105f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(2))
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("% of capacity")
        .draw()?;
    for (mi, m) in methods.iter().enumerate() {
        let color = COLORS[mi % COLORS.len()];
        chart.draw_series(all.iter().enumerate().filter_map(|(i, r)| {
            let y = 100.0 * r.rows.iter().find(|w| &w.label == m)?.share?;
            let x0 = bar_x(i, mi);
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + slot * 0.9, y.min(105.0))],
                color.filled(),
            ))
        }))?;
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 90.0), (n as f64 - 0.5, 90.0)],
        BLACK.stroke_width(1),
    )))?;

    // Telemetry p99, log scale (a link cut puts seconds next to tens of ms).
    let max_p99 = all
        .iter()
        .flat_map(|r| r.rows.iter().filter_map(|w| w.tele_p99))
        .fold(200.0f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "Telemetry p99 during the upload, QoS 1 publish → PUBACK, ms, log scale (mark: base RTT + 50 ms)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(
            -0.5f64..n as f64 - 0.5,
            (10f64..max_p99 * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(2))
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("ms")
        .draw()?;
    for (mi, m) in methods.iter().enumerate() {
        let color = COLORS[mi % COLORS.len()];
        chart.draw_series(all.iter().enumerate().filter_map(|(i, r)| {
            let y = r.rows.iter().find(|w| &w.label == m)?.tele_p99?;
            let x0 = bar_x(i, mi);
            Some(Rectangle::new(
                [(x0, 10.0), (x0 + slot * 0.9, y.max(10.0))],
                color.filled(),
            ))
        }))?;
    }
    chart.draw_series(all.iter().enumerate().filter_map(|(i, r)| {
        let y = r.rtt_ms? + 50.0;
        Some(PathElement::new(
            vec![(i as f64 - 0.45, y), (i as f64 + 0.45, y)],
            BLACK.stroke_width(2),
        ))
    }))?;
    root.present()?;
    eprintln!("netem_report: wrote {}", output.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Table { file } => {
            table(&load(&file)?);
            Ok(())
        }
        Cmd::Summary { files } => summary(&files),
        Cmd::Plot { files, output } => plot(&files, &output),
    }
}
