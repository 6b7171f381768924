//! DNS name patterns: parsing what users write, and matching query names.

use crate::engine::model::NamePattern;

/// "db.example.com" exact, "*.example.com" under a domain, anything else with * or ? a glob.
pub fn parse(s: &str) -> Result<NamePattern, String> {
    let p = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if p.is_empty() || p.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    if let Some(bad) =
        p.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')))
    {
        return Err(format!("{bad:?} is not allowed in a name pattern"));
    }
    if p.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err("labels must be 1-63 characters (no empty label, no '..')".into());
    }
    if let Some(rest) = p.strip_prefix("*.")
        && !rest.contains(['*', '?'])
    {
        return Ok(NamePattern::Under(rest.to_string()));
    }
    if p.contains(['*', '?']) {
        return Ok(NamePattern::Glob(p));
    }
    Ok(NamePattern::Exact(p))
}

/// Whether a query name (any case, trailing dot or not) matches.
pub fn matches(p: &NamePattern, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match p {
        NamePattern::Exact(e) => name == *e,
        NamePattern::Under(d) => {
            name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.'
        }
        NamePattern::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last '*'.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_by_shape() {
        assert_eq!(parse("DB.Example.com."), Ok(NamePattern::Exact("db.example.com".into())));
        assert_eq!(parse("*.example.com"), Ok(NamePattern::Under("example.com".into())));
        assert_eq!(parse("redis-?.prod.*"), Ok(NamePattern::Glob("redis-?.prod.*".into())));
        assert!(parse("").is_err());
        assert!(parse("a..b").is_err());
        assert!(parse("bad name").is_err());
        assert!(parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn matching() {
        let exact = parse("db.example.com").unwrap();
        assert!(matches(&exact, "DB.example.com."));
        assert!(!matches(&exact, "x.db.example.com"));
        let under = parse("*.example.com").unwrap();
        assert!(matches(&under, "a.b.example.com"));
        assert!(!matches(&under, "example.com"));
        assert!(!matches(&under, "badexample.com"));
        let glob = parse("redis-?.prod.*").unwrap();
        assert!(matches(&glob, "redis-1.prod.internal"));
        assert!(matches(&glob, "redis-a.prod.x.y"));
        assert!(!matches(&glob, "redis-10.prod.internal"));
        assert!(matches(&parse("*cache*").unwrap(), "my.cache.local"));
    }
}
