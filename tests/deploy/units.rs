//! systemd unit files read as `Section.Key=Value` settings (comments and blank lines
//! skipped, a trailing backslash continues a line), enough for the checks on deploy/systemd.

pub struct Unit {
    /// (section, key, value), in file order; a key may repeat.
    settings: Vec<(String, String, String)>,
}

impl Unit {
    pub fn parse(text: &str) -> Self {
        let mut settings = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for line in text.lines() {
            let line = line.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            let line = std::mem::take(&mut pending) + line;
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if let Some((key, value)) = line.split_once('=') {
                settings.push((section.clone(), key.trim().into(), value.trim().into()));
            } else {
                panic!("not a unit file line: {line}");
            }
        }
        Unit { settings }
    }

    /// Every value `key` has in `[section]`.
    pub fn all(&self, section: &str, key: &str) -> Vec<&str> {
        let values = self
            .settings
            .iter()
            .filter(|(s, k, _)| s == section && k == key);
        values.map(|(_, _, v)| v.as_str()).collect()
    }

    /// The value that counts for `key` in `[section]`: the last.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }
}
