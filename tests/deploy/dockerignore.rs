//! Which paths a `.dockerignore` keeps out of the build context, matched as Docker
//! (moby's patternmatcher) does: patterns in order, the last one that matches a path or
//! one of its parent folders decides, `!` marks an exception, `*` and `?` stay within a
//! path segment and `**` spans any number of segments.

pub struct DockerIgnore {
    /// (is an exception, the pattern's segments)
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let segments = pattern
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                (exception, segments)
            })
            .collect();
        DockerIgnore { patterns }
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (exception, pattern) in &self.patterns {
            if (1..=segments.len()).any(|n| matches(pattern, &segments[..n])) {
                excluded = !exception;
            }
        }
        excluded
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| matches(rest, &path[i..])),
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(s, tail)| glob(p.as_bytes(), s.as_bytes()) && matches(rest, tail)),
    }
}

/// `*` and `?` within one segment.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        (Some((b'?', rest)), Some((_, tail))) => glob(rest, tail),
        (Some((p, rest)), Some((n, tail))) => p == n && glob(rest, tail),
        _ => false,
    }
}

#[test]
fn matches_as_docker_does() {
    let ignore = DockerIgnore::parse("*\n!src\n**/*.key\n/runs/\n");
    assert!(ignore.excludes("target/release/umi"));
    assert!(!ignore.excludes("src/main.rs"));
    assert!(ignore.excludes("src/a/b.key"));
    assert!(ignore.excludes("runs/cluster/secrets/token"));
    assert!(!DockerIgnore::parse("target\n").excludes("src/target.rs"));
}
