//! Authorisation rules: ordered path-prefix rules, first match wins, no match = public.
//! Pure functions; no I/O.

/// What a route demands of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Public,
    /// Any authenticated user (a session with a user id, or a Kratos identity).
    Session,
    /// An authenticated user whose role is one of these.
    Role(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    prefix: String,
    requirement: Requirement,
}

impl Rule {
    /// A rule for paths starting with `prefix`. `/admin` matches `/admin` and `/admin/x`,
    /// not `/administrator`; a prefix ending in `/` matches by plain prefix.
    pub fn new(prefix: String, requirement: Requirement) -> Result<Rule, String> {
        if !prefix.starts_with('/') {
            return Err(format!("rule prefix {prefix:?} must start with '/'"));
        }
        Ok(Rule { prefix, requirement })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn requirement(&self) -> &Requirement {
        &self.requirement
    }

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some(rest) => self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }
}

/// The requirement for a path already passed through [`route_path`].
pub fn requirement_for<'a>(rules: &'a [Rule], path: &str) -> &'a Requirement {
    const PUBLIC: &Requirement = &Requirement::Public;
    rules.iter().find(|r| r.matches(path)).map(|r| &r.requirement).unwrap_or(PUBLIC)
}

/// The path the app will route, or `None` for a path the proxy refuses (400).
///
/// WSGI servers percent-decode `PATH_INFO` (`%2F` included) and Werkzeug merges repeated
/// slashes, so rules are matched on the decoded, merged path: `/%61dmin` and `//admin` meet the
/// `/admin` rule. Dot segments (`/x/../admin`, `%2e%2e`) are refused outright: Werkzeug does not
/// resolve them, so resolving them here would let `/admin/files/../../public` pass as public
/// while the app routes it under `/admin`. Browsers never send them.
pub fn route_path(path: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if !decoded.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return None;
        }
        out.push('/');
        out.push_str(seg);
    }
    // Keep a trailing slash: `/api/` rules match `/api/` itself.
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Some(out)
}

/// Outcome of checking a caller against a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No identity: log in first (302 for browsers, 401 for APIs).
    Unauthenticated,
    /// Identity present but the role is not allowed (403).
    Forbidden,
}

pub fn decide(req: &Requirement, role: Option<&str>, authenticated: bool) -> Decision {
    match req {
        Requirement::Public => Decision::Allow,
        _ if !authenticated => Decision::Unauthenticated,
        Requirement::Session => Decision::Allow,
        Requirement::Role(roles) => match role {
            Some(r) if roles.iter().any(|x| x == r) => Decision::Allow,
            _ => Decision::Forbidden,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> Vec<Rule> {
        vec![
            Rule::new("/admin".into(), Requirement::Role(vec!["admin".into()])).unwrap(),
            Rule::new("/dashboard".into(), Requirement::Session).unwrap(),
            Rule::new("/api/public/".into(), Requirement::Public).unwrap(),
            Rule::new("/api/".into(), Requirement::Session).unwrap(),
        ]
    }

    #[test]
    fn first_match_wins_and_default_is_public() {
        let r = rules();
        assert_eq!(requirement_for(&r, "/admin/panel"), &Requirement::Role(vec!["admin".into()]));
        assert_eq!(requirement_for(&r, "/admin"), &Requirement::Role(vec!["admin".into()]));
        assert_eq!(requirement_for(&r, "/administrator"), &Requirement::Public);
        assert_eq!(requirement_for(&r, "/api/public/x"), &Requirement::Public);
        assert_eq!(requirement_for(&r, "/api/data"), &Requirement::Session);
        assert_eq!(requirement_for(&r, "/"), &Requirement::Public);
    }

    #[test]
    fn decisions() {
        let admin = Requirement::Role(vec!["admin".into()]);
        assert_eq!(decide(&Requirement::Public, None, false), Decision::Allow);
        assert_eq!(decide(&Requirement::Session, None, false), Decision::Unauthenticated);
        assert_eq!(decide(&Requirement::Session, None, true), Decision::Allow);
        assert_eq!(decide(&admin, Some("user"), true), Decision::Forbidden);
        assert_eq!(decide(&admin, None, true), Decision::Forbidden);
        assert_eq!(decide(&admin, Some("admin"), true), Decision::Allow);
        assert_eq!(decide(&admin, Some("admin"), false), Decision::Unauthenticated);
    }

    #[test]
    fn encoded_paths_meet_their_rule_and_dot_segments_are_refused() {
        let r = rules();
        let admin = Requirement::Role(vec!["admin".into()]);
        for p in ["/%61dmin/panel", "//admin/panel", "/%2Fadmin", "/admin%2Fpanel", "/admin"] {
            assert_eq!(requirement_for(&r, &route_path(p).unwrap()), &admin, "{p}");
        }
        for p in ["/x/../admin/panel", "/./admin", "/admin/files/../../public", "/%2e%2e/admin", "admin", "%2Fadmin/../x", ""] {
            assert_eq!(route_path(p), None, "{p}");
        }
        assert_eq!(route_path("/api/").as_deref(), Some("/api/"));
        assert_eq!(route_path("/").as_deref(), Some("/"));
        assert_eq!(route_path("/a.b/c..d/").as_deref(), Some("/a.b/c..d/"));
    }

    #[test]
    fn prefix_must_be_absolute() {
        assert!(Rule::new("admin".into(), Requirement::Session).is_err());
    }

    proptest! {
        /// Accepted paths are absolute, without empty, `.` or `..` segments.
        #[test]
        fn routed_paths_are_canonical(p in "[/a-z.%0-9]{0,40}") {
            let Some(n) = route_path(&p) else { return Ok(()) };
            prop_assert!(n.starts_with('/'));
            let inner = n.trim_start_matches('/').trim_end_matches('/');
            prop_assert!(inner.is_empty() || inner.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
        }

        /// A protected prefix protects every path below it, whatever follows.
        #[test]
        fn everything_below_a_prefix_is_covered(tail in "(/[a-z0-9%.]{0,8}){0,4}") {
            let r = rules();
            let path = format!("/dashboard{tail}");
            prop_assert_eq!(requirement_for(&r, &path), &Requirement::Session);
        }
    }
}
