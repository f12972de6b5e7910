//! Tables (Markdown) and the chart (SVG, written here: no plotting tool) of
//! a results file: one JSON object per line, as `noom-load run` appends.

use std::fmt::Write as _;

use serde_json::Value;

/// Reads JSON lines. Repeated runs of one (target, scenario, shards) are
/// reduced to the run with the median packets per CPU-second (the upper
/// median for an even count), which gets a `runs` field.
pub fn load(text: &str) -> Vec<Value> {
    let mut groups: Vec<((String, String, u64), Vec<Value>)> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let key = (
            v["target"].as_str().unwrap_or("").to_owned(),
            v["scenario"].as_str().unwrap_or("").to_owned(),
            v["shards"].as_u64().unwrap_or(1),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(v),
            None => groups.push((key, vec![v])),
        }
    }
    groups
        .into_iter()
        .map(|(_, mut runs)| {
            let n = runs.len();
            runs.sort_by(|a, b| {
                f(a, "packets_per_cpu_s")
                    .unwrap_or(0.0)
                    .total_cmp(&f(b, "packets_per_cpu_s").unwrap_or(0.0))
            });
            let mut v = runs.swap_remove(n / 2);
            v["runs"] = Value::from(n);
            v
        })
        .collect()
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v[k].as_f64()
}

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) => format_thousands(x, digits),
        None => "–".to_owned(),
    }
}

fn format_thousands(x: f64, digits: usize) -> String {
    let s = format!("{x:.digits$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(a, b)| (a, b));
    let neg = int.starts_with('-');
    let digits_only = int.trim_start_matches('-');
    let mut out = String::new();
    for (i, c) in digits_only.chars().enumerate() {
        if i > 0 && (digits_only.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    let mut r = if neg { format!("-{out}") } else { out };
    if !frac.is_empty() {
        r.push('.');
        r.push_str(frac);
    }
    r
}

/// Every measured row.
pub fn rows_table(rows: &[Value]) -> String {
    let mut t = String::new();
    t.push_str(
        "| target | scenario | shards | runs | participants | offered pkt/s | received pkt/s | loss | server CPU (cores) | pkt per CPU-s | latency p50 / p99 (µs) | join → first packet p50 / max (ms) | RSS per participant (KiB) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for v in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} % | {:.3} | {} | {} / {} | {} / {} | {} |",
            v["target"].as_str().unwrap_or(""),
            v["scenario"].as_str().unwrap_or(""),
            v["shards"],
            v["runs"].as_u64().unwrap_or(1),
            v["participants"],
            num(f(v, "offered_pps"), 0),
            num(f(v, "received_pps"), 0),
            f(v, "loss").unwrap_or(0.0) * 100.0,
            f(v, "server_cpu_share").unwrap_or(0.0),
            num(f(v, "packets_per_cpu_s"), 0),
            num(f(v, "latency_p50_us"), 0),
            num(f(v, "latency_p99_us"), 0),
            num(f(v, "join_first_p50_ms"), 0),
            num(f(v, "join_first_max_ms"), 0),
            num(f(v, "rss_per_participant_kib"), 0),
        );
    }
    t
}

fn find<'a>(rows: &'a [Value], target: &str, scenario: &str, shards: u64) -> Option<&'a Value> {
    rows.iter().find(|v| {
        v["target"] == target && v["scenario"] == scenario && v["shards"].as_u64() == Some(shards)
    })
}

/// Noom against Janus and the limit, per scenario (packets per server
/// CPU-second).
pub fn ratio_table(rows: &[Value]) -> String {
    let mut t = String::new();
    t.push_str(
        "| scenario | Noom shards | Noom pkt/CPU-s | Janus pkt/CPU-s | limit pkt/CPU-s | Noom / Janus | Noom / limit |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut seen = Vec::new();
    for v in rows.iter().filter(|v| v["target"] == "noom") {
        let scenario = v["scenario"].as_str().unwrap_or("");
        let shards = v["shards"].as_u64().unwrap_or(1);
        if seen.contains(&(scenario, shards)) {
            continue;
        }
        seen.push((scenario, shards));
        let noom = f(v, "packets_per_cpu_s");
        let janus = find(rows, "janus", scenario, 1).and_then(|j| f(j, "packets_per_cpu_s"));
        let limit = find(rows, "limit", scenario, 1).and_then(|l| f(l, "packets_per_cpu_s"));
        let ratio = |other: Option<f64>| match (noom, other) {
            (Some(n), Some(o)) if o > 0.0 => Some(n / o),
            _ => None,
        };
        let _ = writeln!(
            t,
            "| {scenario} | {shards} | {} | {} | {} | {} | {} |",
            num(noom, 0),
            num(janus, 0),
            num(limit, 0),
            ratio(janus).map_or("–".to_owned(), |r| format!("{r:.2}x")),
            ratio(limit).map_or("–".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        );
    }
    t
}

/// (target, colour, (fan-out, packets per CPU-second) points).
type Series<'a> = (&'a str, &'a str, Vec<(u64, f64)>);

/// Packets per server CPU-second against fan-out (1 publisher -> N), one
/// line per target.
pub fn chart_svg(rows: &[Value]) -> String {
    let fanouts: Vec<u64> = {
        let mut f: Vec<u64> = rows
            .iter()
            .filter(|v| is_fanout(v))
            .filter_map(|v| v["subscribers"].as_u64())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    };
    let series: Vec<Series<'_>> = [
        ("noom", "#1f77b4"),
        ("janus", "#d62728"),
        ("limit", "#2ca02c"),
    ]
    .iter()
    .map(|&(target, color)| {
        let points = fanouts
            .iter()
            .filter_map(|&n| {
                rows.iter()
                    .find(|v| {
                        v["target"] == target
                            && is_fanout(v)
                            && v["subscribers"].as_u64() == Some(n)
                            && v["shards"].as_u64() == Some(1)
                    })
                    .and_then(|v| f(v, "packets_per_cpu_s"))
                    .map(|y| (n, y))
            })
            .collect();
        (target, color, points)
    })
    .collect();
    let max_y = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max);
    let top = nice_ceiling(max_y);
    let (w, h) = (780.0, 420.0);
    let (left, right, up, down) = (90.0, 200.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - up - down;
    let x_of = |i: usize| {
        if fanouts.len() <= 1 {
            left + pw / 2.0
        } else {
            left + pw * i as f64 / (fanouts.len() - 1) as f64
        }
    };
    let y_of = |y: f64| up + ph * (1.0 - y / top);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Forwarded packets per server CPU-second, 1 publisher → N subscribers</text>"#,
        w / 2.0
    );
    for k in 0..=5 {
        let y = top * k as f64 / 5.0;
        let py = y_of(y);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            py + 4.0,
            format_thousands(y, 0)
        );
    }
    for (i, n) in fanouts.iter().enumerate() {
        let px = x_of(i);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{n}</text>"##,
            up + ph,
            up + ph + 5.0,
            up + ph + 20.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">subscribers (fan-out)</text>"#,
        left + pw / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">packets / CPU-second</text>"#,
        up + ph / 2.0,
        up + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{up}" x2="{left}" y2="{:.1}" stroke="#333"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        up + ph,
        up + ph,
        left + pw,
        up + ph
    );
    for (k, (name, color, points)) in series.iter().enumerate() {
        let coords: Vec<String> = points
            .iter()
            .filter_map(|(n, y)| {
                let i = fanouts.iter().position(|f| f == n)?;
                Some(format!("{:.1},{:.1}", x_of(i), y_of(*y)))
            })
            .collect();
        if coords.len() > 1 {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                coords.join(" ")
            );
        }
        for c in &coords {
            let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
        }
        let ly = up + 20.0 + 22.0 * k as f64;
        let lx = left + pw + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            match *name {
                "noom" => "Noom",
                "janus" => "Janus 1.1.2",
                _ => "limit (UDP+SRTP)",
            }
        );
    }
    s.push_str("</svg>\n");
    s
}

fn is_fanout(v: &Value) -> bool {
    v["scenario"]
        .as_str()
        .is_some_and(|s| s.starts_with("fanout-"))
        && v["rooms"].as_u64() == Some(1)
        && v["publishers"].as_u64() == Some(1)
}

fn nice_ceiling(x: f64) -> f64 {
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(format_thousands(1234567.0, 0), "1,234,567");
        assert_eq!(format_thousands(999.0, 0), "999");
        assert_eq!(format_thousands(1000.5, 1), "1,000.5");
    }

    #[test]
    fn chart_and_tables_from_rows() {
        let text = r#"{"target":"noom","scenario":"fanout-2","rooms":1,"publishers":1,"subscribers":2,"shards":1,"packets_per_cpu_s":1000.0}
{"target":"janus","scenario":"fanout-2","rooms":1,"publishers":1,"subscribers":2,"shards":1,"packets_per_cpu_s":500.0}
{"target":"limit","scenario":"fanout-2","rooms":1,"publishers":1,"subscribers":2,"shards":1,"packets_per_cpu_s":4000.0}"#;
        let rows = load(text);
        assert_eq!(rows.len(), 3);
        let t = ratio_table(&rows);
        assert!(t.contains("2.00x"), "{t}");
        assert!(t.contains("25 %"), "{t}");
        let svg = chart_svg(&rows);
        assert!(svg.starts_with("<svg") && !svg.contains("polyline"));
        assert!(svg.contains("<circle"));
    }
}
