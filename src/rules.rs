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

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some(rest) => self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }
}

/// The requirement for `path` (the path only, no query string).
pub fn requirement_for<'a>(rules: &'a [Rule], path: &str) -> &'a Requirement {
    const PUBLIC: &Requirement = &Requirement::Public;
    rules.iter().find(|r| r.matches(path)).map(|r| &r.requirement).unwrap_or(PUBLIC)
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
    fn prefix_must_be_absolute() {
        assert!(Rule::new("admin".into(), Requirement::Session).is_err());
    }

    proptest! {
        /// A protected prefix protects every path below it, whatever follows.
        #[test]
        fn everything_below_a_prefix_is_covered(tail in "(/[a-z0-9%.]{0,8}){0,4}") {
            let r = rules();
            let path = format!("/dashboard{tail}");
            prop_assert_eq!(requirement_for(&r, &path), &Requirement::Session);
        }
    }
}
