//! Glob patterns with `*` (any run of characters) and `?` (one character), as used in `match`.

use std::fmt;

/// A compiled glob. Matching is linear in the input for typical patterns and never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Accepts a pattern; bracket expressions and escapes are refused so nobody expects them to
    /// work.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("a pattern must not be empty".to_owned());
        }
        if let Some(bad) = pattern
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(format!(
                "{pattern:?} uses {bad:?}; patterns support only * (any characters) and ? (one character)"
            ));
        }
        Ok(Self {
            pattern: pattern.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let pattern = self.pattern.as_bytes();
        let text = text.as_bytes();
        // Iterative wildcard matching with one backtrack point (the last `*`), over bytes:
        // `?` and a `*` that takes one more both step over a whole UTF-8 character, so the
        // text position is always at a character's start, where a literal byte of the pattern
        // (itself valid UTF-8) can only match the same character's bytes.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && pattern[p] == b'?' {
                p += 1;
                t += utf8_width(text[t]);
            } else if p < pattern.len() && pattern[p] == text[t] {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == b'*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((star_p, star_t)) = star {
                let next = star_t + utf8_width(text[star_t]);
                p = star_p + 1;
                t = next;
                star = Some((star_p, next));
            } else {
                return false;
            }
        }
        t == text.len() && pattern[p..].iter().all(|&c| c == b'*')
    }
}

/// The length of the UTF-8 character whose first byte is `first`.
fn utf8_width(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn star_and_question_mark_match_like_shell_globs() {
        assert!(g("etl-*").matches("etl-nightly"));
        assert!(g("etl-*").matches("etl-"));
        assert!(!g("etl-*").matches("etl"));
        assert!(g("a?c").matches("abc"));
        assert!(!g("a?c").matches("ac"));
        assert!(g("*-prod-*").matches("x-prod-y"));
        assert!(g("*").matches(""));
        assert!(g("analytics").matches("analytics"));
        assert!(!g("analytics").matches("analytics2"));
        assert!(g("a*b*c").matches("aXbYbZc"));
    }

    #[test]
    fn question_mark_is_one_character_not_one_byte() {
        assert!(g("caf?").matches("café"));
        assert!(!g("caf??").matches("café"));
        assert!(g("?").matches("日"));
        assert!(g("??").matches("日本"));
        assert!(!g("?").matches("日本"));
        assert!(g("*?").matches("日"));
        assert!(g("a*?b").matches("a🦀b"));
        assert!(!g("a*??b").matches("a🦀b"));
        assert!(g("*é").matches("xxé"));
        assert!(!g("*é").matches("xxe"));
    }

    #[test]
    fn brackets_are_refused_with_what_is_supported() {
        let err = Glob::new("etl-[ab]").expect_err("brackets");
        assert!(err.contains("only * (any characters) and ?"), "{err}");
        assert!(Glob::new("").is_err());
    }
}
