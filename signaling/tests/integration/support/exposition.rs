//! Checking the server's `/metrics` as a strict Prometheus scraper would
//! (the lenient readers for single values are in [`super::metrics`]).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use anyhow::{ensure, Context as _, Result};

use super::admin::http;

/// A Prometheus/OpenMetrics text exposition, checked line by line: every
/// sample line is `name{labels} value` or `name value` with a float value,
/// and every sample belongs to a family with both `# HELP` and `# TYPE`.
/// Returns `series -> value` (series is the sample line without its value).
pub fn parse_exposition(text: &str) -> Result<BTreeMap<String, f64>> {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    /// Parses `{a="x",b="y"}` (with escapes); returns the rest of the line.
    fn labels(s: &str) -> Result<&str> {
        let mut rest = s.strip_prefix('{').context("labels start with {")?;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Ok(after);
            }
            let eq = rest.find('=').context("label without =")?;
            ensure!(valid_name(&rest[..eq]), "label name {:?}", &rest[..eq]);
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .context("label value quoted")?;
            let mut escaped = false;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map(|(i, _)| i)
                .context("unterminated label value")?;
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    let mut helped = HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut sample_names = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("HELP") => {
                    let name = words.next().context(line.to_owned())?;
                    ensure!(words.next().is_some(), "empty help: {line}");
                    helped.insert(name.to_owned());
                }
                Some("TYPE") => {
                    let name = words.next().context(line.to_owned())?;
                    let kind = words.next().context(line.to_owned())?;
                    typed.insert(name.to_owned(), kind.to_owned());
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        ensure!(valid_name(name), "metric name {name:?} in {line:?}");
        let rest = if line[name_end..].starts_with('{') {
            labels(&line[name_end..]).with_context(|| format!("labels in {line:?}"))?
        } else {
            &line[name_end..]
        };
        let value = rest
            .strip_prefix(' ')
            .with_context(|| format!("one space before the value in {line:?}"))?;
        ensure!(
            !value.contains(' '),
            "`series value`, nothing after: {line:?}"
        );
        let value: f64 = value
            .parse()
            .with_context(|| format!("float value in {line:?}"))?;
        let series = &line[..line.len() - rest.len()];
        ensure!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
        sample_names.push(name.to_owned());
    }
    ensure!(!samples.is_empty(), "no samples at all");
    for name in sample_names {
        // A sample belongs to the family it is named after, or to one whose
        // name it extends with a standard suffix (counter `_total`, ...).
        let family = [
            "", "_total", "_created", "_count", "_sum", "_bucket", "_info",
        ]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|f| typed.contains_key(*f))
        .with_context(|| format!("{name} has no # TYPE line"))?;
        ensure!(helped.contains(family), "{family} has no # HELP line");
        if typed[family] == "counter" {
            ensure!(
                name.ends_with("_total") || name.ends_with("_created"),
                "counter sample {name}"
            );
        }
    }
    Ok(samples)
}

/// The sum over label sets of metric `name`, or of the one series given in
/// full (`name{labels}`).
pub fn sum(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            *s == series || (!series.contains('{') && s.starts_with(&format!("{series}{{")))
        })
        .map(|(_, v)| v)
        .sum()
}

pub async fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let (status, body) = http(addr, "GET", "/metrics", None, None).await?;
    ensure!(status == 200, "/metrics: {status}");
    parse_exposition(&body).with_context(|| format!("/metrics is not Prometheus text:\n{body}"))
}
