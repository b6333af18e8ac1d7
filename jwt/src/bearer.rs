//! The syntax of bearer credentials (RFC 6750 §2.1), shared by every place that reads or
//! configures one: auth-api's `Authorization` extractor, the filter's token extraction and the
//! bearer tokens in configurations. Finding the credentials in a request is the caller's
//! business.

/// Whether `s` is an RFC 7235 §2.1 `token68`, which is RFC 6750 §2.1's `b64token`, the only
/// bearer credentials a server has to accept: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+"
/// / "/" ) *"="`. Every compact JWT is one; empty, padding only, spaces, commas and non-ASCII
/// are not.
pub fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68_accepts_its_alphabet_then_padding() {
        for (input, reason) in [
            ("abc.def.ghi", "a compact jwt"),
            ("A-Z_a~z+0/9.", "every punctuation character allowed"),
            ("YWJj", "base64 without padding"),
            ("YWI=", "one padding character"),
            ("YQ==", "two padding characters"),
            ("x", "a single character"),
        ] {
            assert!(is_token68(input), "{reason}");
        }
    }

    #[test]
    fn token68_refuses_everything_else() {
        for (input, reason) in [
            ("", "empty"),
            ("=", "padding only"),
            ("==", "padding only, twice"),
            ("a=b", "padding in the middle"),
            ("=abc", "padding first"),
            ("abc def", "a space"),
            (" abc", "a leading space"),
            ("abc ", "a trailing space"),
            ("a,b", "a comma"),
            ("a;b", "a semicolon"),
            ("a\"b", "a quote"),
            ("a\tb", "a tab"),
            ("é", "non-ascii"),
            ("a%2Eb", "percent encoding"),
        ] {
            assert!(!is_token68(input), "{reason}");
        }
    }
}
