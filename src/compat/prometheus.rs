//! The Prometheus text exposition of the original (Python `prometheus_client`), byte for byte
//! (R-MET-2..7): the 0.0.4 text format of `generate_latest` and the OpenMetrics 1.0 text of
//! `openmetrics.exposition.generate_latest`.
//!
//! [`encode`] renders the families gathered from a `prometheus` [`Registry`](prometheus::Registry)
//! the way the reference prints them, where the `prometheus` crate's own encoder differs:
//! - samples are floats, formatted like Python's `repr(float)` with the quirks of
//!   `floatToGoString` ([`float_to_go_string`]: `1.0`, `1e+06`, `+Inf`);
//! - families come in the order given (registration order), not sorted by name;
//! - the series of a labelled family come in first-use order ([`SeriesOrder`]), not sorted by
//!   label values; within a sample, labels are sorted by name (`le` among them);
//! - a labelled family without any series still prints its `# HELP` / `# TYPE` lines;
//! - in OpenMetrics, a counter family is named without `_total` (the samples keep it), the help
//!   text also escapes `"`, and the output ends with `# EOF`.
//!
//! Which families exist, their values and their first-use order are [`crate::metrics`]'s.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus::proto::{LabelPair, Metric, MetricFamily};

/// The type of a family, as printed on its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A counter; its name ends with `_total` (the OpenMetrics family name drops it).
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram (`_bucket`, `_count`, `_sum` samples).
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family as we print it: its place in the slice given to [`encode`] is its place in the
/// output.
pub struct Family {
    /// The family name (the name the `prometheus` collector was registered with).
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The family type.
    pub kind: Kind,
    /// First-use order of the series of a labelled family (`None`: the order of `gather`).
    pub order: Option<Arc<dyn SeriesOrder>>,
}

/// Where a series (given by its label pairs) sits in its family's first-use order.
pub trait SeriesOrder: Send + Sync {
    /// The series' position, `None` for a series it does not know (printed last).
    fn position(&self, labels: &[LabelPair]) -> Option<usize>;
}

/// Which exposition [`encode`] writes (the reference picks one from the `Accept` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`prometheus_client.generate_latest`).
    Text,
    /// OpenMetrics 1.0 text (`prometheus_client.openmetrics.exposition.generate_latest`).
    OpenMetrics,
}

/// Encodes the gathered families in the order of `defs`. Families not in `defs` are skipped;
/// defined families with no series (empty labelled families, which `gather` drops) still get
/// their `# HELP` / `# TYPE` lines, like the reference.
pub fn encode(defs: &[Family], gathered: &[MetricFamily], format: Format) -> String {
    let mut out = String::with_capacity(2048);
    for def in defs {
        let mut series: Vec<&Metric> = gathered
            .iter()
            .find(|mf| mf.name() == def.name)
            .map(|mf| mf.get_metric().iter().collect())
            .unwrap_or_default();
        if let Some(order) = &def.order {
            // Stable: a series we do not know (should not happen) keeps gather's order, last.
            series.sort_by_key(|m| order.position(m.get_label()).unwrap_or(usize::MAX));
        }
        let family_name = match (format, def.kind) {
            (Format::OpenMetrics, Kind::Counter) => {
                def.name.strip_suffix("_total").unwrap_or(def.name)
            }
            _ => def.name,
        };
        let help = match format {
            Format::Text => escape_help(def.help),
            Format::OpenMetrics => escape_label_value(def.help),
        };
        let _ = writeln!(out, "# HELP {family_name} {help}");
        let _ = writeln!(out, "# TYPE {family_name} {}", def.kind.as_str());
        for m in series {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|lp| (lp.name(), lp.value()))
                .collect();
            match def.kind {
                // Counter families are named `*_total`; in OpenMetrics only the family name
                // drops the suffix, the sample keeps it.
                Kind::Gauge | Kind::Counter => {
                    let value = if def.kind == Kind::Gauge {
                        m.get_gauge().get_value()
                    } else {
                        m.get_counter().get_value()
                    };
                    write_sample(&mut out, def.name, "", &labels, None, value);
                }
                Kind::Histogram => {
                    let h = m.get_histogram();
                    let mut has_inf = false;
                    for b in h.get_bucket() {
                        has_inf |= b.upper_bound() == f64::INFINITY;
                        let le = float_to_go_string(b.upper_bound());
                        write_sample(
                            &mut out,
                            def.name,
                            "_bucket",
                            &labels,
                            Some(&le),
                            b.cumulative_count() as f64,
                        );
                    }
                    let count = h.get_sample_count() as f64;
                    if !has_inf {
                        write_sample(&mut out, def.name, "_bucket", &labels, Some("+Inf"), count);
                    }
                    write_sample(&mut out, def.name, "_count", &labels, None, count);
                    write_sample(
                        &mut out,
                        def.name,
                        "_sum",
                        &labels,
                        None,
                        h.get_sample_sum(),
                    );
                }
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// One sample line: `name{a="x",b="y"} value`, labels sorted by name (like the reference),
/// `le` (histogram buckets) sorted in with the others.
fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    if let Some(le) = le {
        all.push(("le", le));
    }
    if !all.is_empty() {
        all.sort_by(|a, b| a.0.cmp(b.0));
        out.push('{');
        for (i, (k, v)) in all.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&float_to_go_string(value));
    out.push('\n');
}

/// Help text escaping of the 0.0.4 format: `\` and newline.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// Label value escaping (both formats) and OpenMetrics help escaping: `\`, newline, `"`.
fn escape_label_value(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('\n', r"\n")
        .replace('"', "\\\"")
}

/// `prometheus_client.utils.floatToGoString`: Python's `repr(float)`, except `+Inf`, `-Inf`,
/// `NaN`, and positive values with more than 6 digits before the point, which get an
/// exponent written as `e+0` followed by the exponent (`1e+06`, `1.23456789012e+011`): a quirk
/// of the original.
pub fn float_to_go_string(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_string();
    }
    if d == f64::INFINITY {
        return "+Inf".to_string();
    }
    if d == f64::NEG_INFINITY {
        return "-Inf".to_string();
    }
    let s = python_float_repr(d);
    let dot = s.find('.').unwrap_or(0);
    if d > 0.0 && dot > 6 {
        let mut mantissa = String::with_capacity(s.len() + 1);
        mantissa.push_str(&s[..1]);
        mantissa.push('.');
        mantissa.push_str(&s[1..dot]);
        mantissa.push_str(&s[dot + 1..]);
        let mantissa = mantissa.trim_end_matches(['0', '.']);
        return format!("{mantissa}e+0{}", dot - 1);
    }
    s
}

/// Python's `repr()` of a finite float: the shortest round-tripping digits; scientific
/// notation (`1e+16`, `1.5e-05`, exponent at least two digits) when the decimal exponent is
/// below -4 or at least 16, else positional with at least one fractional digit (`100.0`).
fn python_float_repr(d: f64) -> String {
    let sign = if d.is_sign_negative() { "-" } else { "" };
    let a = d.abs();
    if a == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` gives the shortest round-tripping digits ("1.2345e6", "5e-324"), but
    // breaks an exact tie between two shortest candidates upwards where Python picks the even
    // one (1267860061485775.25: Rust `…775.3`, Python `…775.2`). Formatting the exact value
    // to that many digits rounds half to even; keep it when it still round-trips.
    let shortest = format!("{a:e}");
    let n_digits = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let exact = format!("{a:.prec$e}", prec = n_digits.saturating_sub(1));
    let sci = if exact.parse::<f64>() == Ok(a) {
        exact
    } else {
        shortest
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    // Position of the decimal point relative to the digits: value = 0.DIGITS × 10^decpt.
    let decpt = exp + 1;
    let mut out = String::from(sign);
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', decpt - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Counter, GaugeVec, Histogram, HistogramOpts, Opts, Registry};

    /// First-use order given by the values of the label `k`.
    struct Fixed(Vec<&'static str>);

    impl SeriesOrder for Fixed {
        fn position(&self, labels: &[LabelPair]) -> Option<usize> {
            let v = labels.iter().find(|lp| lp.name() == "k")?.value();
            self.0.iter().position(|x| *x == v)
        }
    }

    fn family(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            order: None,
        }
    }

    #[test]
    fn families_in_given_order_series_in_first_use_order() {
        let r = Registry::new();
        let c = Counter::new("b_total", "B").unwrap();
        let g = GaugeVec::new(Opts::new("a", "A"), &["k"]).unwrap();
        let e = GaugeVec::new(Opts::new("empty", "E\\n"), &["k"]).unwrap();
        let h = Histogram::with_opts(HistogramOpts::new("h", "H").buckets(vec![0.5, 1.0])).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        r.register(Box::new(g.clone())).unwrap();
        r.register(Box::new(e.clone())).unwrap();
        r.register(Box::new(h.clone())).unwrap();
        c.inc_by(3.0);
        g.with_label_values(&["z"]).set(1.0);
        g.with_label_values(&["y\"\n"]).set(2.5);
        h.observe(0.7);
        let defs = [
            family("b_total", "B", Kind::Counter),
            Family {
                order: Some(Arc::new(Fixed(vec!["z", "y\"\n"]))),
                ..family("a", "A", Kind::Gauge)
            },
            family("empty", "E\\n", Kind::Gauge),
            family("h", "H", Kind::Histogram),
        ];
        let gathered = r.gather();
        assert_eq!(
            encode(&defs, &gathered, Format::Text),
            r#"# HELP b_total B
# TYPE b_total counter
b_total 3.0
# HELP a A
# TYPE a gauge
a{k="z"} 1.0
a{k="y\"\n"} 2.5
# HELP empty E\\n
# TYPE empty gauge
# HELP h H
# TYPE h histogram
h_bucket{le="0.5"} 0.0
h_bucket{le="1.0"} 1.0
h_bucket{le="+Inf"} 1.0
h_count 1.0
h_sum 0.7
"#
        );
        let om = encode(&defs, &gathered, Format::OpenMetrics);
        assert!(
            om.starts_with("# HELP b B\n# TYPE b counter\nb_total 3.0\n"),
            "{om}"
        );
        assert!(om.ends_with("h_sum 0.7\n# EOF\n"), "{om}");
    }

    #[test]
    fn escapes() {
        assert_eq!(escape_label_value("x\\\"\n"), "x\\\\\\\"\\n");
        assert_eq!(escape_help("a\\b\n\"c\""), "a\\\\b\\n\"c\"");
    }

    #[test]
    fn float_formatting_matches_python() {
        // Expected values from Python's prometheus_client.utils.floatToGoString.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (0.005, "0.005"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123.456, "123.456"),
            (100000.0, "100000.0"),
            (999999.0, "999999.0"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1234567.5, "1.2345675e+06"),
            (12345678.9, "1.23456789e+07"),
            (1e10, "1e+010"),
            (123456789012.0, "1.23456789012e+011"),
            (1e15, "1e+015"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e17, "1e+17"),
            (1e20, "1e+20"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-1e20, "-1e+20"),
            (-1234567.0, "-1234567.0"),
            (-0.00001, "-1e-05"),
            (1732600000.123456, "1.732600000123456e+09"),
            (3.0, "3.0"),
            (100.0, "100.0"),
            (0.3, "0.3"),
            (1.0 / 3.0, "0.3333333333333333"),
            (9007199254740992.0, "9.007199254740992e+015"),
            (9999999999999998.0, "9.999999999999998e+015"),
            (1.5e-7, "1.5e-07"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (-2.5e-10, "-2.5e-10"),
            // Ties between two shortest candidates go to the even digit, like Python.
            (5_071_440_245_943_101.0 / 4.0, "1.2678600614857752e+015"),
            (-5_071_440_245_943_101.0 / 4.0, "-1267860061485775.2"),
            (2_077_925_486_017_401.0 / 8.0, "2.5974068575217512e+014"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(float_to_go_string(*v), *want, "value {v:?}");
        }
    }
}
