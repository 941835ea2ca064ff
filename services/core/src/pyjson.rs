//! `json.dumps` with Python's defaults, byte for byte: `", "` and `": "` separators, keys
//! in stored order, and `ensure_ascii=True` (everything outside printable ASCII escaped,
//! astral characters as surrogate pairs). The α-UMi checkpoints saw tool docs rendered
//! this way, so prompts must reproduce it exactly.

use serde_json::Value;

pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &JSON, &mut out);
    out
}

/// How the scalars of a value are spelled: as `json.dumps` writes them, or as Python's
/// `str()` does (`repr`).
struct Spelling {
    null: &'static str,
    yes: &'static str,
    no: &'static str,
    string: fn(&str, &mut String),
}

const JSON: Spelling = Spelling {
    null: "null",
    yes: "true",
    no: "false",
    string: write_str,
};

const PYTHON: Spelling = Spelling {
    null: "None",
    yes: "True",
    no: "False",
    string: write_str_repr,
};

/// Both layouts share Python's separators (`", "`, `": "`) and the stored key order.
fn write_value(value: &Value, spelling: &Spelling, out: &mut String) {
    match value {
        Value::Null => out.push_str(spelling.null),
        Value::Bool(true) => out.push_str(spelling.yes),
        Value::Bool(false) => out.push_str(spelling.no),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::String(s) => (spelling.string)(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, spelling, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                (spelling.string)(k, out);
                out.push_str(": ");
                write_value(v, spelling, out);
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

/// `json.dumps(value, indent=n)`: Python's indented layout (`,` at line ends, `": "`),
/// ASCII-escaped; empty lists and objects stay `[]`, `{}`.
pub fn dumps_indented(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    write_indented(value, indent, 0, &mut out);
    out
}

/// Appends `value` as `json.dump(..., indent=step)` writes it when the value sits `at`
/// spaces deep (an element of a list written piece by piece: `at` = `step`).
pub fn write_indented(value: &Value, step: usize, at: usize, out: &mut String) {
    let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, at + step);
                write_indented(item, step, at + step, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, at);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, item)) in map.iter().enumerate() {
                pad(out, at + step);
                write_str(k, out);
                out.push_str(": ");
                write_indented(item, step, at + step, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            pad(out, at);
            out.push('}');
        }
        other => write_value(other, &JSON, out),
    }
}

/// Python's `str()` of what `json.loads` made of a JSON value: `None`/`True`/`False`,
/// numbers as `repr`, strings quoted as Python does (`'…'`, or `"…"` when only that
/// avoids escaping a `'`), `[a, b]`, `{'k': v}` in the JSON's key order. StableToolBench
/// keys its response cache by this text.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &PYTHON, &mut out);
    out
}

/// `repr(str)`: `\\`, the quote, `\t \n \r` escaped; other control characters and
/// non-printable ones as `\xNN`, `\uNNNN`, `\UNNNNNNNN`; printable non-ASCII kept.
fn write_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_ascii() || py_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for a non-ASCII character: not a control, format,
/// separator (other than the ASCII space), private-use or noncharacter code point. (The
/// general-category table is approximated by its members that occur in text; unassigned
/// code points count as printable.)
fn py_printable(c: char) -> bool {
    let u = c as u32;
    let unprintable = matches!(u,
        0x80..=0xa0 | 0xad | 0x0600..=0x0605 | 0x061c | 0x06dd | 0x070f | 0x08e2 | 0x1680
        | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xe000..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0x110bd | 0x110cd
        | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f
        | 0xf0000..=0x10ffff)
        || (u & 0xfffe) == 0xfffe
        || (0xfdd0..=0xfdef).contains(&u);
    !unprintable
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Pins Python's `str(json.loads(text))` (values checked with CPython 3.11).
    #[test]
    fn repr_is_pythons_str_of_the_parsed_json() {
        let v: Value = serde_json::from_str(
            r#"{"q": "it's", "b": [true, false, null], "f": 1.5e-7, "n": 3, "x": 2.0, "s": "a\"b'c\\", "u": "caf\u00e9 \u4e2d\u00a0\n"}"#,
        )
        .unwrap();
        assert_eq!(
            repr(&v),
            r#"{'q': "it's", 'b': [True, False, None], 'f': 1.5e-07, 'n': 3, 'x': 2.0, 's': 'a"b\'c\\', 'u': 'café 中\xa0\n'}"#
        );
        assert_eq!(repr(&serde_json::json!({})), "{}");
    }

    #[test]
    fn indent2_matches_python() {
        let v = json!([{"name": "f", "arguments": "{}", "function_output": "é", "mento-carlo-action-value": 0.0}]);
        assert_eq!(
            dumps_indented(&v, 2),
            "[\n  {\n    \"name\": \"f\",\n    \"arguments\": \"{}\",\n    \"function_output\": \"\\u00e9\",\n    \"mento-carlo-action-value\": 0.0\n  }\n]"
        );
    }

    #[test]
    fn strip_is_pythons() {
        assert_eq!(strip("\u{1c} a b\t\u{3000}"), "a b");
    }

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
