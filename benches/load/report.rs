//! One scenario's results: a table for people, then one JSON line for
//! scripts (`… | tail -n1`, or `grep '^{'` over a whole `--scenario all`).

use std::fmt::Write as _;

/// A value in a report.
pub enum Value {
    /// A count.
    Int(u64),
    /// A measurement, shown with this many decimals.
    Num(f64, usize),
    /// Text.
    Text(String),
    /// Not measured in this run (shown as `n/a`, `null` in JSON).
    None,
}

/// Rows of `(json key, label, value, unit)` under a title.
pub struct Report {
    scenario: &'static str,
    title: String,
    rows: Vec<(&'static str, String, Value, &'static str)>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &'static str, title: impl Into<String>) -> Report {
        Report {
            scenario,
            title: title.into(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, key: &'static str, label: &str, value: Value, unit: &'static str) {
        self.rows.push((key, label.to_string(), value, unit));
    }

    /// Adds a count.
    pub fn int(&mut self, key: &'static str, label: &str, value: u64) {
        self.row(key, label, Value::Int(value), "");
    }

    /// Adds a measurement with `decimals`, or `n/a` for `None`.
    pub fn num(
        &mut self,
        key: &'static str,
        label: &str,
        v: Option<f64>,
        decimals: usize,
        unit: &'static str,
    ) {
        let value = v
            .filter(|v| v.is_finite())
            .map_or(Value::None, |v| Value::Num(v, decimals));
        self.row(key, label, value, unit);
    }

    /// Adds text.
    pub fn text(&mut self, key: &'static str, label: &str, value: impl Into<String>) {
        self.row(key, label, Value::Text(value.into()), "");
    }

    /// Prints the table, then the JSON line.
    pub fn print(&self) {
        println!("\n== {}: {}", self.scenario, self.title);
        let width = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for (_, label, value, unit) in &self.rows {
            let shown = match value {
                Value::Int(n) => group(*n),
                Value::Num(v, 0) if v.abs() < 9e18 => group_signed(v.round() as i64),
                Value::Num(v, d) => format!("{v:.d$}", d = *d),
                Value::Text(t) => t.clone(),
                Value::None => "n/a".into(),
            };
            let unit = if matches!(value, Value::None) {
                ""
            } else {
                unit
            };
            println!(
                "  {label:<width$}  {}",
                format!("{shown} {unit}").trim_end()
            );
        }
        println!("{}", self.json());
    }

    fn json(&self) -> String {
        let mut out = format!("{{\"scenario\":\"{}\"", self.scenario);
        for (key, _, value, _) in &self.rows {
            let _ = write!(out, ",\"{key}\":");
            match value {
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Num(v, d) => {
                    let _ = write!(out, "{v:.d$}", d = (*d).max(1));
                }
                Value::Text(t) => out.push_str(&quote(t)),
                Value::None => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }
}

/// 1234567 → "1 234 567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn group_signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group(n.unsigned_abs()))
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `q` quantile (0..=1) of sorted `values`.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
