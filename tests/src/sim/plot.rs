//! A plain SVG picture of a rollout: requests answered per second, failed requests per
//! second (on their own scale, so that one failure shows), requests in flight, each pod's
//! state over time and, under it, when the proxy routed new connections to it: the gap
//! between the two is the propagation lag the preStop delay must cover. Written by hand:
//! a few rectangles and lines need no plotting library.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{report::Report, timeline::Happening};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const BUCKET: f64 = 0.25;
const LANE: f64 = 22.0;
/// Height of a pod's state bar and of the strip under it that shows when it was routed.
const STATE_HEIGHT: f64 = 13.0;
const ROUTED_HEIGHT: f64 = 4.0;
const ROUTED_COLOUR: &str = "#283593";

/// A pod's states as the plot colours them: colour and legend.
const STARTING: (&str, &str) = ("#b0bec5", "starting");
const READY: (&str, &str) = ("#43a047", "ready");
const NOT_READY: (&str, &str) = ("#90a4ae", "not ready");
const DELETED: (&str, &str) = ("#fbc02d", "deleted, preStop");
const DRAINING: (&str, &str) = ("#ef6c00", "SIGTERM, draining");
const STATES: [(&str, &str); 5] = [STARTING, READY, NOT_READY, DELETED, DRAINING];

/// The colour a pod's lane takes from here on, `Some(None)` when it ends, `None` when the
/// event changes nothing.
fn lane_change(what: &Happening) -> Option<Option<&'static str>> {
    match what {
        Happening::ContainerStarted => Some(Some(STARTING.0)),
        Happening::Ready => Some(Some(READY.0)),
        Happening::NotReady => Some(Some(NOT_READY.0)),
        Happening::Deleted => Some(Some(DELETED.0)),
        Happening::Sigterm => Some(Some(DRAINING.0)),
        Happening::Exited { .. } | Happening::StoppedAtTheEnd => Some(None),
        _ => None,
    }
}

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

    let (rate_top, rate_height) = (50.0, 170.0);
    let (failed_top, failed_height) = (260.0, 70.0);
    let (flight_top, flight_height) = (370.0, 90.0);
    let lanes_top = 500.0;
    let height = lanes_top + LANE * lanes.len() as f64 + 70.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    use super::load::ClientKind;
    let (standard, strict, fresh) = (
        report.failed(ClientKind::Standard),
        report.failed(ClientKind::Strict),
        report.failed(ClientKind::Fresh),
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}: {} failed of {} requests (standard {standard}, strict {strict}, fresh connections {fresh}), {} SIGKILL</text>"#,
        escape(&report.scenario),
        report.failed_total(),
        report.outcomes.len(),
        report.sigkills()
    );

    let rate_max = answered.iter().fold(1.0_f64, |a, &b| a.max(b)) * 1.1;
    panel(
        &mut svg,
        rate_top,
        rate_height,
        rate_max,
        "answered / s",
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

    let failed_max = failed.iter().fold(1.0_f64, |a, &b| a.max(b)) * 1.1;
    panel(
        &mut svg,
        failed_top,
        failed_height,
        failed_max,
        "failed / s",
        end,
        &x,
    );
    bars(
        &mut svg,
        &failed,
        failed_top,
        failed_height,
        failed_max,
        "#e53935",
        &x,
    );
    if report.failed_total() == 0 {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#2e7d32">no failed request</text>"##,
            (LEFT + WIDTH - RIGHT) / 2.0,
            failed_top + failed_height / 2.0 + 4.0
        );
    }

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
    let labels = short_names(&lanes);
    for (row, (lane, label)) in lanes.iter().zip(&labels).enumerate() {
        let y = lanes_top + row as f64 * LANE;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="10">{}</text>"#,
            LEFT - 4.0,
            y + 11.0,
            escape(label)
        );
        for (from, to, colour) in &lane.states {
            rect(
                &mut svg,
                x(*from),
                y,
                x(*to) - x(*from),
                STATE_HEIGHT,
                colour,
            );
        }
        for (from, to) in &lane.routed {
            let strip = y + STATE_HEIGHT + 1.0;
            rect(
                &mut svg,
                x(*from),
                strip,
                x(*to) - x(*from),
                ROUTED_HEIGHT,
                ROUTED_COLOUR,
            );
        }
    }
    let legend_y = lanes_top + LANE * lanes.len() as f64 + 20.0;
    let mut states = STATES.to_vec();
    states.push((ROUTED_COLOUR, "proxy routes to it"));
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

/// One pod's row: its states, and when the proxy routed new connections to it.
struct Lane {
    pod: String,
    states: Vec<Segment>,
    routed: Vec<(f64, f64)>,
}

/// Each pod's row, from the timeline, in the order the pods started.
///
/// Once a pod is deleted it stays "deleted", then "SIGTERM, draining", until its process
/// exits: the readiness probe turning it "not ready" meanwhile is part of draining, not
/// the end of it.
fn pod_lanes(report: &Report, end: f64) -> Vec<Lane> {
    let mut changes: BTreeMap<&str, Vec<(f64, Option<&'static str>)>> = BTreeMap::new();
    let mut routed: BTreeMap<&str, Vec<(f64, bool)>> = BTreeMap::new();
    for event in &report.events {
        match &event.what {
            Happening::Routed { pod } => routed.entry(pod).or_default().push((event.at, true)),
            Happening::Unrouted { pod } => routed.entry(pod).or_default().push((event.at, false)),
            what => {
                let Some(colour) = lane_change(what) else {
                    continue;
                };
                let pod = changes.entry(event.source.as_str()).or_default();
                let terminating = pod.iter().any(|(_, colour)| *colour == Some(DELETED.0));
                let probe_result = matches!(what, Happening::Ready | Happening::NotReady);
                if !(terminating && probe_result) {
                    pod.push((event.at, colour));
                }
            }
        }
    }
    let mut lanes: Vec<Lane> = changes
        .into_iter()
        .map(|(pod, changes)| Lane {
            pod: pod.to_owned(),
            states: segments(&changes, end),
            routed: intervals(routed.get(pod).map_or(&[][..], Vec::as_slice), end),
        })
        .collect();
    lanes.sort_by(|a, b| {
        let start = |lane: &Lane| lane.states.first().map_or(f64::MAX, |segment| segment.0);
        start(a).total_cmp(&start(b))
    });
    lanes
}

/// Coloured segments between consecutive changes; a change without colour ends one.
fn segments(changes: &[(f64, Option<&'static str>)], end: f64) -> Vec<Segment> {
    let mut segments = Vec::new();
    for (index, (from, colour)) in changes.iter().enumerate() {
        let to = changes.get(index + 1).map_or(end, |(at, _)| *at);
        if let Some(colour) = colour {
            segments.push((*from, to, *colour));
        }
    }
    segments
}

/// The intervals during which a switch was on.
fn intervals(switches: &[(f64, bool)], end: f64) -> Vec<(f64, f64)> {
    let mut on_since = None;
    let mut intervals = Vec::new();
    for &(at, on) in switches {
        match (on, on_since) {
            (true, None) => on_since = Some(at),
            (false, Some(since)) => {
                intervals.push((since, at));
                on_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = on_since {
        intervals.push((since, end));
    }
    intervals
}

/// Labels that tell the pods apart: `r1-2`, not the full name.
fn short_names(lanes: &[Lane]) -> Vec<String> {
    let names: Vec<&str> = lanes.iter().map(|lane| lane.pod.as_str()).collect();
    let shared = names.first().map_or(0, |first| {
        let common = names
            .iter()
            .map(|name| common_prefix(first, name))
            .min()
            .unwrap_or(0);
        first[..common].rfind('-').map_or(0, |dash| dash + 1)
    });
    names.iter().map(|name| name[shared..].to_owned()).collect()
}

fn rect(svg: &mut String, x: f64, y: f64, width: f64, height: f64, colour: &str) {
    let _ = write!(
        svg,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height}" fill="{colour}"/>"#,
        width.max(0.5)
    );
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
        // Small scales (a few failures a second) need a decimal to tell the ticks apart.
        let decimals = if max < 4.0 { 1 } else { 0 };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="10">{value:.decimals$}</text>"#,
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
