//! The scrubbing of URL credentials (R-LOG-6): no password may reach a log line or an error
//! message. Used by the configuration (errors about callback URLs) and the log lines of
//! callbacks.

/// The replacement of a URL's userinfo when it holds a password (R-LOG-6).
const SCRUBBED_USERINFO: &str = "*****:*****@";

/// Returns `raw` with its userinfo replaced by `*****:*****@` when it holds a password
/// (`http://user:secret@host/p` → `http://*****:*****@host/p`, `http://:secret@host/` too; an
/// empty password `user:@` counts, as in the reference). A user without password, the port, the
/// path, the query and the fragment are kept, and the rest of the string is left as written.
///
/// Strings that are not valid URLs are returned unchanged unless something that looks like
/// `user:password@` is visible in them (e.g. `http://u:pa/ss@host/`, whose password holds a `/`),
/// in which case it is scrubbed too: no password may reach a log line, error messages included.
pub fn scrub_url(raw: &str) -> String {
    // 1. As the reference (Python's urlsplit): the authority follows `scheme://` (or a leading
    //    `//`) and ends at the first `/`, `?` or `#`; the userinfo ends at its last `@`; a `:` in
    //    the userinfo means a password.
    if let Some(start) = authority_start(raw) {
        let rest = &raw[start..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if authority[..at].contains(':') {
                return scrubbed(raw, start, start + at);
            }
        }
    }
    // 2. A valid URL without a password is kept as written (`mailto:a@b`, `user:x@host` whose
    //    scheme is `user`, `http://host/a:b@c`).
    if url::Url::parse(raw).is_ok_and(|u| u.password().is_none()) {
        return raw.to_string();
    }
    // 3. Not a valid URL (or a form step 1 does not see, such as `http:u:p@host`): scrub anything
    //    that looks like `user:password@` (with a non-empty password) before the first whitespace.
    let start = raw.find("//").map_or(0, |i| i + 2);
    let region = &raw[start..];
    let region = &region[..region.find(char::is_whitespace).unwrap_or(region.len())];
    let mut out = match region.rfind('@') {
        Some(at)
            if region[..at]
                .split_once(':')
                .is_some_and(|(_, p)| !p.is_empty()) =>
        {
            scrubbed(raw, start, start + at)
        }
        _ => raw.to_string(),
    };
    // 4. Last resort: whatever the URL parser still sees as a password goes, normalising the URL.
    if let Ok(mut u) = url::Url::parse(&out) {
        if u.password().is_some() {
            let _ = u.set_username("*****");
            let _ = u.set_password(Some("*****"));
            out = u.to_string();
        }
    }
    out
}

/// `raw[..start] + "*****:*****@" + raw[at + 1..]` (`raw[at]` is the userinfo's `@`).
fn scrubbed(raw: &str, start: usize, at: usize) -> String {
    let mut out = String::with_capacity(raw.len() + SCRUBBED_USERINFO.len());
    out.push_str(&raw[..start]);
    out.push_str(SCRUBBED_USERINFO);
    out.push_str(&raw[at + 1..]);
    out
}

/// Byte offset of the authority: after `scheme://`, or after a leading `//`.
fn authority_start(raw: &str) -> Option<usize> {
    let after_scheme = match raw.find(':') {
        Some(i) if is_scheme(&raw[..i]) => i + 1,
        _ => 0,
    };
    raw[after_scheme..]
        .starts_with("//")
        .then_some(after_scheme + 2)
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_keeps_urls_without_credentials() {
        for url in [
            "http://example.com/path?q=1",
            "http://example.com",
            "https://host:8443/a/b?x=1&y=2#frag",
            "http://host:8080/a@b",
            "redis://localhost:6379/0",
        ] {
            assert_eq!(scrub_url(url), url);
        }
    }

    #[test]
    fn scrub_keeps_a_user_without_password() {
        assert_eq!(
            scrub_url("http://user@example.com/path"),
            "http://user@example.com/path"
        );
        assert_eq!(
            scrub_url("http://user@host:81/p?q#f"),
            "http://user@host:81/p?q#f"
        );
    }

    #[test]
    fn scrub_replaces_user_and_password() {
        assert_eq!(
            scrub_url("http://user:secret@example.com/path"),
            "http://*****:*****@example.com/path"
        );
        assert_eq!(
            scrub_url("http://user:secret@host/p"),
            "http://*****:*****@host/p"
        );
    }

    #[test]
    fn scrub_replaces_a_password_without_user() {
        assert_eq!(
            scrub_url("http://:secret@example.com/path"),
            "http://*****:*****@example.com/path"
        );
        assert_eq!(
            scrub_url("http://:secret@host/"),
            "http://*****:*****@host/"
        );
    }

    #[test]
    fn scrub_treats_an_empty_password_as_a_password() {
        // Python's urlsplit gives password '' (not None) for `user:@`.
        assert_eq!(scrub_url("http://user:@host/"), "http://*****:*****@host/");
    }

    #[test]
    fn scrub_keeps_port_path_query_and_fragment() {
        assert_eq!(
            scrub_url("redis://user:secret@localhost:6379/0"),
            "redis://*****:*****@localhost:6379/0"
        );
        assert_eq!(
            scrub_url("http://u:p@host/path?q=1#frag"),
            "http://*****:*****@host/path?q=1#frag"
        );
        assert_eq!(
            scrub_url("http://user:s%40cret@host:8080/p?q=1#f"),
            "http://*****:*****@host:8080/p?q=1#f"
        );
        // The last `@` of the authority ends the userinfo.
        assert_eq!(scrub_url("http://u:p@x@host/"), "http://*****:*****@host/");
    }

    #[test]
    fn scrub_does_not_normalise() {
        assert_eq!(scrub_url("HTTP://Host/%7e?"), "HTTP://Host/%7e?");
        assert_eq!(
            scrub_url("HTTP://u:p@Host/%7e?"),
            "HTTP://*****:*****@Host/%7e?"
        );
        assert_eq!(scrub_url("//u:p@host/x"), "//*****:*****@host/x");
    }

    #[test]
    fn scrub_survives_strings_that_are_not_urls() {
        for s in [
            "",
            "not a url",
            "http://",
            "://",
            "//",
            ":",
            "@",
            ":@",
            "http://[::1",
            "🦈://🦈",
            "http://h\u{e9}llo/\u{1F988}",
            "mailto:someone@example.com",
            // Both parsers read the scheme `user` here, not credentials.
            "user:secret@host",
        ] {
            assert_eq!(scrub_url(s), s, "{s:?}");
        }
    }

    #[test]
    fn scrub_hides_passwords_of_invalid_urls() {
        // A `/` in the password: the URL does not parse, the password must not show.
        assert_eq!(
            scrub_url("http://u:pa/ss@host/"),
            "http://*****:*****@host/"
        );
        assert_eq!(scrub_url("http://u:p#w@host/"), "http://*****:*****@host/");
        assert_eq!(
            scrub_url("http://u:secr\u{e9}t@[bad/"),
            "http://*****:*****@[bad/"
        );
        for s in [
            "ht\ttp://u:secret@host/",
            "http:u:secret@host/",
            "http:\\\\u:secret@host",
        ] {
            assert!(
                !scrub_url(s).contains("secret"),
                "{s:?} -> {}",
                scrub_url(s)
            );
        }
    }
}
