//! The few Python behaviours the preprocessing scripts lean on, over JSON values: a key
//! lookup that fails as `d['key']` does, string slices counted in code points, and
//! `str.strip(chars)`.

use serde_json::Value;

/// `value[key]` of a JSON object; the error names the key (the script raises there).
pub fn get<'v>(value: &'v Value, key: &str) -> Result<&'v Value, String> {
    match value {
        Value::Object(map) => map.get(key).ok_or_else(|| format!("no key {key:?}")),
        other => Err(format!(
            "{} where an object with {key:?} belongs",
            kind(other)
        )),
    }
}

/// `value[key]` that must be a string (the script concatenates or slices it).
pub fn get_str<'v>(value: &'v Value, key: &str) -> Result<&'v str, String> {
    get(value, key)?
        .as_str()
        .ok_or_else(|| format!("{key:?} is {}, not a string", kind(&value[key])))
}

/// What a JSON value is, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `s[:n]`: the first `n` code points.
pub fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// `s[-n:]`: the last `n` code points (all of `s` if it has fewer).
pub fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        // `s[-0:]` is all of `s` in Python.
        return s;
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((at, _)) => &s[at..],
        None => s,
    }
}

/// `s.strip(chars)` for one character.
pub fn strip_char(s: &str, c: char) -> &str {
    s.trim_matches(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_count_code_points_as_python_does() {
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("hé", 5), "hé");
        assert_eq!(last_chars("héllo", 4), "éllo");
        assert_eq!(last_chars("hé", 64), "hé");
        assert_eq!(last_chars("abc", 0), "abc");
        assert_eq!(last_chars("😀ab", 3), "😀ab");
    }

    #[test]
    fn lookups_name_what_is_missing() {
        let v = serde_json::json!({"a": 1, "s": "x"});
        assert_eq!(get_str(&v, "s"), Ok("x"));
        assert_eq!(get(&v, "b"), Err("no key \"b\"".into()));
        assert_eq!(
            get_str(&v, "a"),
            Err("\"a\" is a number, not a string".into())
        );
        assert!(get(&serde_json::json!([1]), "a")
            .unwrap_err()
            .contains("a list"));
    }
}
