//! `json.dumps` with Python's defaults, byte for byte: `", "` and `": "` separators, keys
//! in stored order, and `ensure_ascii=True` (everything outside printable ASCII escaped,
//! astral characters as surrogate pairs). The α-UMi checkpoints saw tool docs rendered
//! this way, so prompts must reproduce it exactly.

use serde_json::Value;

pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal as Python's `ensure_ascii` encoder writes it.
pub fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr` of a JSON number: integers as is; floats always with a `.` or an
/// exponent, exponents with a sign and at least two digits (`1e-05`).
fn python_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
        return format!("{f:.1}");
    }
    let abs = f.abs();
    if (1e-4..1e16).contains(&abs) {
        return format!("{f}");
    }
    // Scientific: Rust gives "1e-5"; Python gives "1e-05".
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_defaults() {
        // Expected strings are what CPython 3.11 json.dumps prints for the same values.
        let v = json!({"Name": "a/b", "input": {"q": "string, \"x\"\\"}, "n": [1, 2.5, true, null], "e": {}});
        assert_eq!(
            dumps(&v),
            r#"{"Name": "a/b", "input": {"q": "string, \"x\"\\"}, "n": [1, 2.5, true, null], "e": {}}"#
        );
    }

    #[test]
    fn escapes_everything_outside_printable_ascii() {
        let v = json!("L'état\u{7f}\u{1}\t😀");
        assert_eq!(dumps(&v), r#""L'\u00e9tat\u007f\u0001\t\ud83d\ude00""#);
    }

    #[test]
    fn floats_as_python_repr() {
        assert_eq!(dumps(&json!(1.0)), "1.0");
        assert_eq!(dumps(&json!(0.00001)), "1e-05");
        assert_eq!(dumps(&json!(-2.5e20)), "-2.5e+20");
        assert_eq!(dumps(&json!(0.1)), "0.1");
    }
}

/// Python's `str.isspace` for one character: Rust's whitespace plus the four
/// information separators `\x1c`-`\x1f`.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no arguments.
pub fn strip(s: &str) -> &str {
    s.trim_matches(py_space)
}
