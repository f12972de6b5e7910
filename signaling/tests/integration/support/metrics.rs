//! Reading the server's Prometheus text (`GET /metrics`).

/// The samples of metric `name` (any label set) in Prometheus text.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
}

/// The samples of metric `name` in Prometheus text, summed over label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text, name).sum()
}

/// The largest sample of metric `name` over its label sets.
pub fn metric_max(text: &str, name: &str) -> f64 {
    samples(text, name).fold(0.0, f64::max)
}
