//! Server-rendered SVG charts: deliveries per hour by outcome (stacked bars) and integration run outcomes over time.

use std::fmt::Write as _;

use super::json::escape;
use crate::integration::{RunOutcome, RunRecord};
use crate::store::HourBucket;

const SENT: &str = "#2e7d32";
const FAILED: &str = "#f9a825";
const DEAD: &str = "#c62828";
const PARKED: &str = "#78909c";

/// Stacked bars, one per hour (oldest left): sent, failed, dead, parked.
pub(crate) fn deliveries_chart(buckets: &[HourBucket]) -> String {
    let bar = 18u32;
    let gap = 4u32;
    let plot_h = 100u32;
    let left = 30u32;
    let n = u32::try_from(buckets.len()).unwrap_or(u32::MAX);
    let width = left + n.saturating_mul(bar + gap) + 10;
    let height = plot_h + 40;
    let max = buckets
        .iter()
        .map(HourBucket::total)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         aria-label=\"Deliveries per hour by outcome, last {n} hours\">"
    );
    let _ = write!(
        s,
        "<text x=\"0\" y=\"12\" font-size=\"10\">{max}</text>\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{w}\" y2=\"{y0}\" stroke=\"#999\"/>",
        y0 = plot_h + 10,
        w = width - 10
    );
    for (i, b) in buckets.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(0);
        let x = left + i * (bar + gap);
        let mut y = plot_h + 10;
        for (count, color, label) in [
            (b.sent, SENT, "sent"),
            (b.failed, FAILED, "failed"),
            (b.dead, DEAD, "dead"),
            (b.parked, PARKED, "parked"),
        ] {
            if count == 0 {
                continue;
            }
            let h = u32::try_from(count.saturating_mul(u64::from(plot_h)) / max)
                .unwrap_or(plot_h)
                .max(1);
            y = y.saturating_sub(h);
            let _ = write!(
                s,
                "<rect class=\"{label}\" x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"{color}\">\
                 <title>{hour}: {count} {label}</title></rect>",
                hour = escape(&b.hour.format("%Y-%m-%d %H:00 UTC").to_string()),
            );
        }
        if i % 6 == 0 {
            let _ = write!(
                s,
                "<text x=\"{x}\" y=\"{ty}\" font-size=\"10\">{label}</text>",
                ty = plot_h + 24,
                label = b.hour.format("%H:00")
            );
        }
    }
    let _ = write!(
        s,
        "<g font-size=\"10\" transform=\"translate({left},{})\">",
        plot_h + 36
    );
    for (k, (color, label)) in [
        (SENT, "sent"),
        (FAILED, "failed"),
        (DEAD, "dead"),
        (PARKED, "parked"),
    ]
    .iter()
    .enumerate()
    {
        let x = k * 70;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"-8\" width=\"8\" height=\"8\" fill=\"{color}\"/>\
             <text x=\"{tx}\" y=\"0\">{label}</text>",
            tx = x + 11
        );
    }
    s.push_str("</g></svg>");
    s
}

fn outcome_color(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Success | RunOutcome::NoNewFile => SENT,
        RunOutcome::Partial | RunOutcome::ImportedNotMoved => FAILED,
        RunOutcome::Failed => DEAD,
        RunOutcome::Running | RunOutcome::Abandoned => PARKED,
    }
}

/// One bar per run, oldest left, its height the rows read, its colour the outcome.
pub(crate) fn runs_chart(runs: &[RunRecord]) -> String {
    let bar = 14u32;
    let gap = 4u32;
    let plot_h = 60u32;
    let n = u32::try_from(runs.len()).unwrap_or(u32::MAX);
    let width = n.saturating_mul(bar + gap).max(60) + 10;
    let height = plot_h + 12;
    let max = runs.iter().map(|r| r.rows_read).max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart runs\" role=\"img\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         aria-label=\"Run outcomes over time\">"
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let i = u32::try_from(i).unwrap_or(0);
        let x = i * (bar + gap);
        let h = u32::try_from(r.rows_read.saturating_mul(u64::from(plot_h)) / max)
            .unwrap_or(plot_h)
            .max(4);
        let y = plot_h + 2 - h;
        let _ = write!(
            s,
            "<rect class=\"{o}\" x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"{c}\">\
             <title>{at}: {o}, {read} rows read, {imp} imported, {rej} rejected</title></rect>",
            o = r.outcome.as_str(),
            c = outcome_color(r.outcome),
            at = escape(&r.started_at.format("%Y-%m-%d %H:%M UTC").to_string()),
            read = r.rows_read,
            imp = r.rows_imported,
            rej = r.rows_rejected,
        );
    }
    s.push_str("</svg>");
    s
}
