//! A plain SVG picture of a rollout: requests per second (answered and failed), requests in
//! flight, and each pod's state over time. Written by hand: no fonts or plotting library.

use std::{collections::BTreeMap, fmt::Write as _};

use super::report::Report;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const BUCKET: f64 = 0.25;
const LANE: f64 = 16.0;

/// Pod states as the plot colours them.
const STATES: [(&str, &str, &str); 5] = [
    ("container started", "#b0bec5", "starting"),
    ("ready", "#43a047", "ready"),
    ("not ready", "#90a4ae", "not ready"),
    ("deleted", "#fbc02d", "deleted, preStop"),
    ("SIGTERM", "#ef6c00", "SIGTERM, draining"),
];

pub fn svg(report: &Report) -> String {
    let end = report
        .outcomes
        .iter()
        .map(|outcome| outcome.done.as_secs_f64())
        .chain(report.events.iter().map(|event| event.at))
        .fold(1.0, f64::max);
    let buckets = (end / BUCKET).ceil() as usize + 1;
    let (mut answered, mut failed, mut in_flight) =
        (vec![0.0; buckets], vec![0.0; buckets], vec![0.0; buckets]);
    for outcome in &report.outcomes {
        let done = (outcome.done.as_secs_f64() / BUCKET) as usize;
        if outcome.failure.is_some() {
            failed[done] += 1.0 / BUCKET;
        } else {
            answered[done] += 1.0 / BUCKET;
        }
        let first = (outcome.sent.as_secs_f64() / BUCKET).ceil() as usize;
        for slot in in_flight.iter_mut().take(done + 1).skip(first) {
            *slot += 1.0;
        }
    }
    let lanes = pod_lanes(report, end);
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * t / end;

    let (rate_top, rate_height) = (50.0, 200.0);
    let (flight_top, flight_height) = (290.0, 110.0);
    let lanes_top = 440.0;
    let height = lanes_top + LANE * lanes.len() as f64 + 70.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let standard = report.failed(super::load::ClientKind::Standard);
    let strict = report.failed(super::load::ClientKind::Strict);
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}: {} failed of {} requests (standard client {standard}, strict client {strict}), {} SIGKILL</text>"#,
        escape(&report.scenario),
        standard + strict,
        report.outcomes.len(),
        report.sigkills()
    );

    let rate_max = answered
        .iter()
        .chain(&failed)
        .fold(1.0_f64, |a, &b| a.max(b))
        * 1.1;
    panel(
        &mut svg,
        rate_top,
        rate_height,
        rate_max,
        "requests / s",
        end,
        &x,
    );
    series(
        &mut svg,
        &answered,
        rate_top,
        rate_height,
        rate_max,
        "#1e88e5",
        &x,
    );
    bars(
        &mut svg,
        &failed,
        rate_top,
        rate_height,
        rate_max,
        "#e53935",
        &x,
    );
    legend(
        &mut svg,
        rate_top - 8.0,
        &[("#1e88e5", "answered"), ("#e53935", "failed")],
    );

    let flight_max = in_flight.iter().fold(1.0_f64, |a, &b| a.max(b)) * 1.1;
    panel(
        &mut svg,
        flight_top,
        flight_height,
        flight_max,
        "in flight",
        end,
        &x,
    );
    series(
        &mut svg,
        &in_flight,
        flight_top,
        flight_height,
        flight_max,
        "#6a1b9a",
        &x,
    );

    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">pods</text>"#,
        lanes_top - 8.0
    );
    for (row, (pod, segments)) in lanes.iter().enumerate() {
        let y = lanes_top + row as f64 * LANE;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="10">{}</text>"#,
            LEFT - 4.0,
            y + 11.0,
            escape(pod)
        );
        for (from, to, colour) in segments {
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{}" fill="{colour}"/>"#,
                x(*from),
                (x(*to) - x(*from)).max(0.5),
                LANE - 3.0
            );
        }
    }
    let legend_y = lanes_top + LANE * lanes.len() as f64 + 20.0;
    let states: Vec<(&str, &str)> = STATES
        .iter()
        .map(|(_, colour, label)| (*colour, *label))
        .collect();
    legend(&mut svg, legend_y, &states);
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">seconds</text>"#,
        WIDTH - RIGHT,
        legend_y + 25.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// From, to (seconds) and colour.
type Segment = (f64, f64, &'static str);

/// Each pod's coloured segments, from its events.
fn pod_lanes(report: &Report, end: f64) -> Vec<(String, Vec<Segment>)> {
    let mut states: BTreeMap<&str, Vec<(f64, Option<&'static str>)>> = BTreeMap::new();
    for event in &report.events {
        let colour = STATES
            .iter()
            .find(|(what, _, _)| event.what == *what)
            .map(|(_, colour, _)| *colour);
        let ends = event.what.starts_with("container exited");
        if colour.is_some() || ends {
            states
                .entry(event.source.as_str())
                .or_default()
                .push((event.at, colour));
        }
    }
    let mut lanes: Vec<(String, Vec<Segment>)> = states
        .into_iter()
        .map(|(pod, changes)| {
            let mut segments = Vec::new();
            for (index, (from, colour)) in changes.iter().enumerate() {
                let to = changes.get(index + 1).map_or(end, |(at, _)| *at);
                if let Some(colour) = colour {
                    segments.push((*from, to, *colour));
                }
            }
            (pod.to_owned(), segments)
        })
        .collect();
    lanes.sort_by(|a, b| {
        a.1.first()
            .map(|s| s.0)
            .partial_cmp(&b.1.first().map(|s| s.0))
            .unwrap()
    });
    // Label each lane by what tells the pods apart: `r1-2`, not the full name.
    let names: Vec<&str> = lanes.iter().map(|(pod, _)| pod.as_str()).collect();
    let shared = names.first().map_or(0, |first| {
        let common = names
            .iter()
            .map(|name| common_prefix(first, name))
            .min()
            .unwrap_or(0);
        first[..common].rfind('-').map_or(0, |dash| dash + 1)
    });
    for (pod, _) in &mut lanes {
        *pod = pod[shared..].to_owned();
    }
    lanes
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn panel(
    svg: &mut String,
    top: f64,
    height: f64,
    max: f64,
    label: &str,
    end: f64,
    x: &dyn Fn(f64) -> f64,
) {
    let bottom = top + height;
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{height}" fill="none" stroke="#90a4ae"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{label}</text>"#,
        top + height / 2.0,
        top + height / 2.0
    );
    for step in 0..=4 {
        let value = max * step as f64 / 4.0;
        let y = bottom - height * step as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="10">{value:.0}</text>"#,
            LEFT - 4.0,
            y + 4.0
        );
    }
    let tick = if end > 60.0 { 10.0 } else { 5.0 };
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{bottom}" stroke="#eceff1"/><text x="{0:.1}" y="{1}" text-anchor="middle" font-size="10">{t:.0}</text>"##,
            x(t),
            bottom + 13.0
        );
        t += tick;
    }
}

fn series(
    svg: &mut String,
    values: &[f64],
    top: f64,
    height: f64,
    max: f64,
    colour: &str,
    x: &dyn Fn(f64) -> f64,
) {
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            format!(
                "{:.1},{:.1}",
                x(index as f64 * BUCKET),
                top + height - height * value / max
            )
        })
        .collect();
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
        points.join(" ")
    );
}

fn bars(
    svg: &mut String,
    values: &[f64],
    top: f64,
    height: f64,
    max: f64,
    colour: &str,
    x: &dyn Fn(f64) -> f64,
) {
    for (index, value) in values.iter().enumerate().filter(|(_, value)| **value > 0.0) {
        let bar = (height * value / max).max(2.0);
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="{colour}"/>"#,
            x(index as f64 * BUCKET),
            top + height - bar,
            (x(BUCKET) - x(0.0)).max(2.0)
        );
    }
}

fn legend(svg: &mut String, y: f64, entries: &[(&str, &str)]) {
    let mut x = WIDTH - RIGHT - 150.0 * entries.len() as f64;
    for (colour, label) in entries {
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="10" fill="{colour}"/><text x="{}" y="{y}">{label}</text>"#,
            y - 9.0,
            x + 16.0
        );
        x += 150.0;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
