//! `WWW-Authenticate` parsing (RFC 7235 §4.1 with RFC 6750's `Bearer` parameters).
//!
//! A header value is a comma-separated list of challenges, and each challenge's parameters are
//! comma-separated too, so `Bearer realm="a", Basic realm="b"` is two challenges while
//! `Bearer realm="a", service="b"` is one: a name followed by `=` continues the current
//! challenge, anything else starts the next. Quoted strings may contain commas and `\"`.
//! Malformed input is an error, never a panic.

use std::fmt;

/// One challenge: a scheme with either auth-params or a token68.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme as sent; compare it with [`Challenge::is`] (schemes are case-insensitive).
    pub scheme: String,
    /// Parameters in order, names lowercased (they are case-insensitive), values unquoted.
    pub params: Vec<(String, String)>,
    /// The `token68` form (`Basic dXNlcg==`), rare in challenges but legal.
    pub token68: Option<String>,
}

impl Challenge {
    /// Whether this challenge uses `scheme`, ignoring case.
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The first value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ChallengeError {
    /// Byte offset in the header value where parsing gave up.
    pub at: usize,
    pub reason: &'static str,
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed WWW-Authenticate at byte {}: {}",
            self.at, self.reason
        )
    }
}

/// Parses one `WWW-Authenticate` header value into its challenges (at least one).
pub fn parse(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut cur = Cursor {
        s: header.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        cur.skip_list_separators();
        if cur.at_end() {
            break;
        }
        out.push(cur.challenge()?);
    }
    if out.is_empty() {
        return Err(cur.error("no challenge"));
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, reason: &'static str) -> ChallengeError {
        ChallengeError {
            at: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips optional whitespace; returns whether there was any.
    fn skip_ows(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Empty list elements are allowed (`a, , b`, RFC 7230 §7).
    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // tchars are ASCII, so the slice is valid UTF-8.
        (self.pos > start)
            .then(|| std::str::from_utf8(&self.s[start..self.pos]).ok())
            .flatten()
    }

    /// A quoted-string; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                            value.push(c);
                            self.pos += 1;
                        }
                        _ => return Err(self.error("bad escape in quoted string")),
                    }
                }
                Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    value.push(c);
                    self.pos += 1;
                }
                Some(_) => return Err(self.error("control character in quoted string")),
            }
        }
        String::from_utf8(value).map_err(|_| self.error("quoted string is not UTF-8"))
    }

    fn challenge(&mut self) -> Result<Challenge, ChallengeError> {
        let scheme = self
            .token()
            .ok_or_else(|| self.error("expected an auth scheme"))?;
        let mut challenge = Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: None,
        };
        let spaced = self.skip_ows();
        if self.at_end() || self.peek() == Some(b',') {
            return Ok(challenge);
        }
        if !spaced {
            return Err(self.error("expected a space after the auth scheme"));
        }
        let mut first = true;
        loop {
            let item_start = self.pos;
            let name = self.token68_or_token()?;
            self.skip_ows();
            if self.peek() != Some(b'=') {
                if !first || !is_token68(name) {
                    return Err(self.error("expected '=' after a parameter name"));
                }
                challenge.token68 = Some(name.to_owned());
                return self.end_of_challenge(challenge);
            }
            self.pos += 1;
            self.skip_ows();
            if first && matches!(self.peek(), None | Some(b',' | b'=')) && is_token68(name) {
                // `abc=`, `abc==`: a token68 with padding, not a parameter.
                while self.peek() == Some(b'=') {
                    self.pos += 1;
                }
                let raw = &self.s[item_start..self.pos];
                let token68: String = raw
                    .iter()
                    .filter(|c| !matches!(c, b' ' | b'\t'))
                    .map(|&c| c as char)
                    .collect();
                challenge.token68 = Some(token68);
                return self.end_of_challenge(challenge);
            }
            if !is_token(name) {
                return Err(self.error("invalid parameter name"));
            }
            let value = match self.peek() {
                Some(b'"') => self.quoted()?,
                _ => self
                    .token()
                    .ok_or_else(|| self.error("expected a token or quoted string"))?
                    .to_owned(),
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            first = false;
            self.skip_ows();
            if self.at_end() {
                return Ok(challenge);
            }
            if self.peek() != Some(b',') {
                return Err(self.error("expected ',' between parameters"));
            }
            // Lookahead: `, name =` continues this challenge; anything else starts the next.
            let after_comma = self.pos;
            self.skip_list_separators();
            let resume = self.pos;
            let continues = self.token().is_some() && {
                self.skip_ows();
                self.peek() == Some(b'=')
            };
            if continues {
                self.pos = resume;
            } else {
                self.pos = after_comma;
                return Ok(challenge);
            }
        }
    }

    /// A run of token68 characters (a superset of the token characters this parser allows
    /// in parameter names, minus `=`); the caller decides which one it was.
    fn token68_or_token(&mut self) -> Result<&'a str, ChallengeError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| is_tchar(c) || c == b'/') {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a parameter"));
        }
        std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.error("not UTF-8"))
    }

    fn end_of_challenge(&mut self, challenge: Challenge) -> Result<Challenge, ChallengeError> {
        self.skip_ows();
        match self.peek() {
            None | Some(b',') => Ok(challenge),
            Some(_) => Err(self.error("unexpected characters after token68")),
        }
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// RFC 7235 `token68` without its trailing `=` padding.
fn is_token68(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        let parsed = parse(header).unwrap();
        assert_eq!(parsed.len(), 1);
        let c = &parsed[0];
        assert!(c.is("bearer"));
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("SERVICE"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn parses_several_challenges_and_odd_spacing() {
        let header =
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#;
        let parsed = parse(header).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].scheme, "Newauth");
        assert_eq!(
            parsed[0].params,
            params(&[
                ("realm", "apps"),
                ("type", "1"),
                ("title", "Login to \"apps\"")
            ])
        );
        assert!(parsed[1].is("BASIC"));
        assert_eq!(parsed[1].param("realm"), Some("simple"));

        let spaced = parse("  bEaReR   Realm = \"r\" ,  ,Service=svc ,").unwrap();
        assert_eq!(spaced.len(), 1);
        assert!(spaced[0].is("Bearer"));
        assert_eq!(
            spaced[0].params,
            params(&[("realm", "r"), ("service", "svc")])
        );
    }

    #[test]
    fn parses_bare_schemes_and_token68() {
        let parsed = parse("Negotiate, Basic dXNlcjpwYXNz==, Bearer").unwrap();
        let schemes: Vec<_> = parsed.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Negotiate", "Basic", "Bearer"]);
        assert_eq!(parsed[1].token68.as_deref(), Some("dXNlcjpwYXNz=="));
        assert_eq!(
            parse("Basic abc/def").unwrap()[0].token68.as_deref(),
            Some("abc/def")
        );
        // A trailing bare word is the next challenge's scheme, not a parameter without a value.
        let two = parse(r#"Bearer realm="a", service"#).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].scheme, "service");
    }

    #[test]
    fn malformed_challenges_are_errors() {
        let cases = [
            "",
            "   ,  ",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"a\" service=\"b\"",
            "Bearer realm=\"a\", =x",
            "=Bearer",
            "Bearer realm=\"bad\\\u{1}\"",
            "Bearer realm=\"ctl\u{7f}\"",
            "Bearer\u{e9} realm=x",
            "Bearer realm=a=b",
            "\"Bearer\"",
        ];
        for case in cases {
            assert!(
                parse(case).is_err(),
                "{case:?} should be rejected: {:?}",
                parse(case)
            );
        }
    }

    #[test]
    fn never_panics_on_arbitrary_prefixes() {
        let header = r#"Bearer realm="https://a/token",service="s",scope="repository:a:pull", Basic realm="x\"y", Basic dGVzdA=="#;
        for end in 0..=header.len() {
            let _ = parse(&header[..end]);
        }
        for start in 0..header.len() {
            let _ = parse(&header[start..]);
        }
    }
}
