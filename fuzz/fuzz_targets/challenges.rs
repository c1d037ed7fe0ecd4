//! `WWW-Authenticate` challenges (`upstream::challenge`), as upstream registries send them to
//! the pull-through client: whatever parses has at least one challenge, schemes are tokens,
//! parameter names are lowercase, and writing the challenges out again (quoting every value)
//! parses back to the same challenges.
#![no_main]

use aerugo::upstream::challenge::{Challenge, parse};
use libfuzzer_sys::fuzz_target;

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn written(challenges: &[Challenge]) -> String {
    let one = |c: &Challenge| {
        let mut text = c.scheme.clone();
        if let Some(token68) = &c.token68 {
            text.push(' ');
            text.push_str(token68);
        } else if !c.params.is_empty() {
            let params: Vec<String> = c
                .params
                .iter()
                .map(|(name, value)| format!("{name}={}", quoted(value)))
                .collect();
            text.push(' ');
            text.push_str(&params.join(", "));
        }
        text
    };
    challenges.iter().map(one).collect::<Vec<_>>().join(", ")
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(challenges) = parse(header) else {
        return;
    };
    assert!(!challenges.is_empty());
    for c in &challenges {
        assert!(
            !c.scheme.is_empty() && c.scheme.chars().all(is_tchar),
            "{c:?}"
        );
        assert!(c.token68.is_none() || c.params.is_empty(), "{c:?}");
        for (name, _) in &c.params {
            assert!(!name.is_empty() && name.chars().all(is_tchar), "{c:?}");
            assert_eq!(name, &name.to_ascii_lowercase(), "{c:?}");
        }
    }
    let again = written(&challenges);
    assert_eq!(
        parse(&again).as_ref(),
        Ok(&challenges),
        "{header:?} → {again:?}"
    );
});
