//! Reading a Prometheus text exposition (what `--metrics-listen` serves), for the load
//! benchmark's report.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

/// One sample line: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a scrape; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect();
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The sum of every sample of `name` whose labels include `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// The `q` quantile of histogram `name` (its `_bucket` series, added up over every
/// scrape in `samples` whose labels include `with`), interpolated linearly within its
/// bucket as Prometheus' `histogram_quantile` does. `None` without observations.
pub fn quantile(samples: &[Sample], name: &str, with: &[(&str, &str)], q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for s in samples
        .iter()
        .filter(|s| s.name == bucket && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
    {
        let le = match s.label("le")? {
            "+Inf" => f64::INFINITY,
            le => le.parse().ok()?,
        };
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += s.value,
            None => by_le.push((le, s.value)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = by_le.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in by_le {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

/// The mean of histogram `name`: its `_sum` over its `_count`.
pub fn mean(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let count = sum(samples, &format!("{name}_count"), with);
    (count > 0.0).then(|| sum(samples, &format!("{name}_sum"), with) / count)
}

/// Scrapes `http://addr/metrics`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Vec<Sample>> {
    let url = format!("http://{addr}/metrics");
    let reply = umi_tools::http::get(&url, Duration::from_secs(5))
        .await
        .with_context(|| format!("scraping {url}"))?;
    Ok(parse(&String::from_utf8_lossy(&reply.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_sums() {
        let text = "# TYPE x counter\nx_total{role=\"planner\",class=\"a\"} 3\nx_total{role=\"caller\"} 4\ny{quantile=\"0.5\"} 0.25\nz 7\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(sum(&s, "x_total", &[]), 7.0);
        assert_eq!(sum(&s, "x_total", &[("role", "planner")]), 3.0);
        assert_eq!(sum(&s, "y", &[("quantile", "0.5")]), 0.25);
        assert_eq!(sum(&s, "z", &[]), 7.0);
    }

    #[test]
    fn quantiles_interpolate_within_buckets_summed_over_scrapes() {
        let one = "h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 4\nh_bucket{le=\"+Inf\"} 4\nh_sum 5\nh_count 4\n";
        let mut s = parse(one);
        s.extend(parse(one));
        // 8 observations, 4 up to 1 and 4 in (1, 2]: the median is 1, p75 is 1.5.
        assert_eq!(quantile(&s, "h", &[], 0.5), Some(1.0));
        assert_eq!(quantile(&s, "h", &[], 0.75), Some(1.5));
        assert_eq!(mean(&s, "h", &[]), Some(1.25));
        assert_eq!(quantile(&s, "missing", &[], 0.5), None);
    }
}
