//! Python-`re.match`-style matching on top of the `regex` crate: the pattern is anchored
//! at the start of the text only. Used by `StasisBroadcast`'s application filter and by
//! the scenario replay in the tests.

use regex::Regex;

/// Whether `pattern` matches at the start of `text` (Python `re.match`). An invalid
/// pattern is compared as a literal prefix.
pub(crate) fn re_match(pattern: &str, text: &str) -> bool {
    match Regex::new(&format!("^(?:{pattern})")) {
        Ok(re) => re.is_match(text),
        Err(_) => text.starts_with(pattern),
    }
}

/// Escapes regex metacharacters, so the result matches `s` literally.
#[cfg(test)]
pub(crate) fn re_escape(s: &str) -> String {
    regex::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_python_re_match() {
        assert!(re_match("s@ts\\-continue:2$", "s@ts-continue:2"));
        assert!(!re_match("s@ts\\-continue:2$", "s@ts-continue:21"));
        assert!(re_match(
            "Local/one@x-[0-9a-f]{8};1$",
            "Local/one@x-0000001a;1"
        ));
        assert!(!re_match(
            "Local/one@x-[0-9a-f]{8};1$",
            "Local/one@x-0000001;1"
        ));
        assert!(re_match("[0-9]{10}\\.[0-9]+$", "1795691627.12"));
        assert!(re_match(
            ".*/messages\\.log$",
            "/var/log/asterisk/messages.log"
        ));
        assert!(re_match("\\s*VERBOSE\\s*$", "  VERBOSE "));
        assert!(re_match(
            " ?NOTICE WARNING ERROR ?$",
            "NOTICE WARNING ERROR "
        ));
        assert!(re_match("channel[12]$", "channel2"));
        assert!(re_match(
            "Channel(Entered|Left)Bridge$",
            "ChannelLeftBridge"
        ));
        assert!(re_match(".+", "x"));
        assert!(!re_match(".+", ""));
        assert!(re_match("abc", "abcdef"));
        assert!(!re_match("^b", "abc"));
        assert!(re_match(&re_escape("a.b(c)"), "a.b(c)"));
        assert!(!re_match(&re_escape("a.b"), "axb"));
        // An alternation is anchored as a whole.
        assert!(!re_match("x|b", "abc"));
        // Not a valid pattern: a literal prefix.
        assert!(re_match("a(b", "a(bc"));
    }
}
