//! Java `.properties` text, read exactly as `java.util.Properties.load(Reader)` reads it, and
//! edited without disturbing anything the edit is not about.
//!
//! Spark writes `spark.properties` with `Properties.store(Writer, comment)`: a comment line, a
//! date line, then `key=value` lines with Java's escapes. A user's own file may use anything
//! `load` accepts: `=`, `:` or whitespace between key and value, `#` and `!` comments, blank
//! lines, lines continued by an odd number of trailing backslashes, leading whitespace, and
//! `\uXXXX` escapes. The reader here follows the JDK's `LineReader` and `loadConvert` step by
//! step, keeping the byte range of every definition so that [`Properties::set`] can replace one
//! value and leave every other byte of the file as it was.
//!
//! This module never reorders, re-escapes or drops a line it was not asked to change, and never
//! performs I/O.

use std::ops::Range;

use super::{Error, Result};

/// A parsed `.properties` text that can be edited in place.
///
/// ```
/// use spark_admission::sparkconf::Properties;
///
/// let mut conf = Properties::parse("#comment\nspark.executor.instances=10\n")?;
/// assert_eq!(conf.get("spark.executor.instances"), Some("10"));
/// conf.set("spark.executor.instances", "4");
/// conf.set("spark.app.name", "a b:c");
/// assert_eq!(
///     conf.text(),
///     "#comment\nspark.executor.instances=4\nspark.app.name=a b\\:c\n"
/// );
/// # Ok::<(), spark_admission::sparkconf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Properties {
    text: String,
    /// Every definition in file order; later ones win, as in Java.
    entries: Vec<Entry>,
    /// How the text ends, which decides what an appended definition must be preceded by.
    tail: Tail,
}

/// One definition (a logical line that is not blank or a comment).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    value: String,
    /// Bytes of the value as written, escapes and continuations included, up to the end of the
    /// logical line (a trailing continuation backslash included).
    value_span: Range<usize>,
    /// Bytes of the whole logical line, from its first non-blank character to the end of its
    /// last continuation line, line terminator excluded.
    line_span: Range<usize>,
    /// The line is a key alone, with no separator: a new value needs a `=` before it.
    bare_key: bool,
}

/// The state the text leaves `LineReader` in at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing pending: a new line starts a new definition.
    Closed,
    /// The text ends right after an odd number of backslashes: the next line break continues
    /// the last definition.
    Backslash,
    /// The text ends after a continuation's line break (and perhaps blanks): the next physical
    /// line still belongs to the last definition unless it is empty.
    Break,
}

impl Properties {
    /// Parses `text` as `Properties.load(Reader)` would.
    ///
    /// Fails where Java throws: a `\u` escape without four hex digits. Also fails on a `\u`
    /// escape that leaves half of a UTF-16 surrogate pair, which Java keeps in its string but
    /// which is not text (such a file is better left alone than rewritten with a guess).
    pub fn parse(text: &str) -> Result<Self> {
        let (entries, tail) = read(text)?;
        Ok(Self {
            text: text.to_owned(),
            entries,
            tail,
        })
    }

    /// The value of `key`, unescaped, from its last definition.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key)
            .map(|index| self.entries[index].value.as_str())
    }

    /// Every definition as (key, value), unescaped, in file order. A key defined twice appears
    /// twice; the later definition is the one [`Properties::get`] returns.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|entry| (entry.key.as_str(), entry.value.as_str()))
    }

    /// Sets `key` to `value`.
    ///
    /// An existing key keeps its last definition's key text, separator and position; only the
    /// value is replaced, escaped as `Properties.store` escapes a value. A value that spans
    /// continuation lines is replaced whole, by one line. An absent key is appended as
    /// `key=value` on a new line at the end, with the file's own line ending. Every other byte
    /// of the text is kept.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.last(key) {
            Some(index) => self.replace_value(index, value),
            None => self.append(key, value),
        }
    }

    /// The text, with every edit applied.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn last(&self, key: &str) -> Option<usize> {
        self.entries.iter().rposition(|entry| entry.key == key)
    }

    fn replace_value(&mut self, index: usize, value: &str) {
        let entry = &self.entries[index];
        let mut replacement = String::new();
        if entry.bare_key {
            replacement.push('=');
        }
        replacement.push_str(&escape(value, false));
        let span = entry.value_span.clone();
        if replacement.is_empty()
            && self.text[..span.start].ends_with('\r')
            && self.text[span.end..].starts_with('\n')
        {
            // The value sat alone on a line continued by `\` + CR, and its line ended with LF:
            // emptied, the CR and LF would meet as one CRLF break and the continuation would run
            // on into the next definition. A blank keeps them apart; Java skips blanks at the
            // start of a continuation line, so the value read back is still empty.
            replacement.push(' ');
        }
        self.text.replace_range(span, &replacement);
        self.reread();
    }

    /// Reads the edited text again, so that every span and the tail are exactly what the
    /// reader makes of it (a value emptied on a continuation line, for one, ends its line
    /// earlier than the value did). An edit only adds escapes that [`escape`] writes and keeps
    /// every other line as it was, so the text reads again; were it not to, the entries of
    /// the last good reading are kept rather than panicking.
    fn reread(&mut self) {
        if let Ok((entries, tail)) = read(&self.text) {
            self.entries = entries;
            self.tail = tail;
        }
    }

    fn append(&mut self, key: &str, value: &str) {
        let newline = line_ending(&self.text);
        if self.tail != Tail::Closed && self.ends_with_lone_continuation() {
            self.keep_lone_continuation(newline);
        }
        let ends_with_break = self.text.ends_with(['\n', '\r']);
        match self.tail {
            Tail::Closed if !self.text.is_empty() && !ends_with_break => {
                self.text.push_str(newline);
            }
            Tail::Closed => {}
            // An empty physical line is what ends a definition left open by a continuation; a
            // `\n` right after the continuation's `\r` would be read as part of it.
            Tail::Break => {
                if self.text.ends_with('\r') && newline.starts_with('\n') {
                    self.text.push_str(newline);
                }
                self.text.push_str(newline);
            }
            // The first line break continues the definition, the second (an empty line) ends it.
            Tail::Backslash => {
                self.text.push_str(newline);
                self.text.push_str(newline);
            }
        }
        self.text.push_str(&escape(key, true));
        self.text.push('=');
        self.text.push_str(&escape(value, false));
        self.text.push_str(newline);
        self.reread();
    }

    /// Whether the last definition is a line holding only a continuation backslash at the very
    /// end of the text. Java reads it as an empty key with an empty value only because the text
    /// ends there: anything appended would join it and make that definition disappear.
    ///
    /// Such a line is the only one whose value starts where the line starts: any other line
    /// keeps at least one character before its value, a key character or a separator.
    fn ends_with_lone_continuation(&self) -> bool {
        self.entries
            .last()
            .is_some_and(|last| last.value_span.start == last.line_span.start)
    }

    /// Writes `=` on the continuation of a lone trailing backslash, so that the definition it
    /// stands for (empty key, empty value) survives text appended after it, and closes it.
    fn keep_lone_continuation(&mut self, newline: &str) {
        if self.tail == Tail::Backslash {
            self.text.push_str(newline);
        }
        self.text.push('=');
        self.text.push_str(newline);
        self.tail = Tail::Closed;
    }
}

/// Every definition of `text` and the state its end leaves the reader in.
fn read(text: &str) -> Result<(Vec<Entry>, Tail)> {
    let (lines, tail) = logical_lines(text);
    let entries = lines
        .iter()
        .map(|line| split_entry(text, line))
        .collect::<Result<_>>()?;
    Ok((entries, tail))
}

/// The first line ending the text uses, so that an appended line matches the file.
fn line_ending(text: &str) -> &'static str {
    match text.find(['\n', '\r']) {
        Some(at) if text[at..].starts_with("\r\n") => "\r\n",
        Some(at) if text[at..].starts_with('\r') => "\r",
        _ => "\n",
    }
}

/// A logical line as `LineReader.readLine` assembles it: the characters it keeps, each with its
/// byte offset in the text.
struct LogicalLine {
    chars: Vec<(usize, char)>,
    /// Offset of the line's first kept character (or of a lone continuation backslash).
    start: usize,
    /// Offset just past the last character the line consumed before its terminator, including
    /// a continuation backslash that was dropped.
    end: usize,
}

/// Whitespace as `Properties` knows it: space, tab and form feed, nothing else.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Splits `text` into logical lines exactly as the JDK's `LineReader.readLine` does, and says
/// what state the end of the text leaves it in.
fn logical_lines(text: &str) -> (Vec<LogicalLine>, Tail) {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let mut chars: Vec<(usize, char)> = Vec::new();
        let mut start = pos;
        let mut end = pos;
        let mut skip_blanks = true;
        // Set after a continuation: a line break right there ends the logical line instead of
        // being skipped as a blank line.
        let mut continued = false;
        let mut odd_backslashes = false;
        loop {
            let Some(c) = text[pos..].chars().next() else {
                let tail = if skip_blanks && continued {
                    Tail::Break
                } else if odd_backslashes {
                    Tail::Backslash
                } else {
                    Tail::Closed
                };
                if !chars.is_empty() {
                    if odd_backslashes {
                        chars.pop();
                    }
                    lines.push(LogicalLine { chars, start, end });
                }
                return (lines, tail);
            };
            let at = pos;
            pos += c.len_utf8();
            if skip_blanks {
                if is_blank(c) || (!continued && (c == '\r' || c == '\n')) {
                    continue;
                }
                skip_blanks = false;
                continued = false;
            }
            if chars.is_empty() && (c == '#' || c == '!') {
                // A comment runs to the next line break; a backslash does not continue it.
                match text[pos..].find(['\r', '\n']) {
                    Some(offset) => pos += offset + 1,
                    None => return (lines, Tail::Closed),
                }
                skip_blanks = true;
                continue;
            }
            if c != '\n' && c != '\r' {
                if chars.is_empty() {
                    start = at;
                }
                chars.push((at, c));
                end = pos;
                odd_backslashes = c == '\\' && !odd_backslashes;
                continue;
            }
            if chars.is_empty() {
                skip_blanks = true;
                continue;
            }
            if pos >= text.len() {
                // A line break that ends the text ends the line, continued or not.
                let tail = if odd_backslashes {
                    chars.pop();
                    Tail::Break
                } else {
                    Tail::Closed
                };
                lines.push(LogicalLine { chars, start, end });
                return (lines, tail);
            }
            if odd_backslashes {
                // The backslash is not part of the line, nor are the next line's blanks.
                chars.pop();
                skip_blanks = true;
                continued = true;
                odd_backslashes = false;
                if c == '\r' && bytes.get(pos) == Some(&b'\n') {
                    pos += 1;
                }
            } else {
                lines.push(LogicalLine { chars, start, end });
                break;
            }
        }
    }
}

/// Splits a logical line into key and value as the JDK's `Properties.load0` does.
fn split_entry(text: &str, line: &LogicalLine) -> Result<Entry> {
    let chars = &line.chars;
    let limit = chars.len();
    let mut key_len = 0;
    let mut value_start = limit;
    let mut has_separator = false;
    let mut escaped = false;
    let mut bare_key = true;
    while key_len < limit {
        let c = chars[key_len].1;
        if (c == '=' || c == ':') && !escaped {
            value_start = key_len + 1;
            has_separator = true;
            bare_key = false;
            break;
        }
        if is_blank(c) && !escaped {
            value_start = key_len + 1;
            bare_key = false;
            break;
        }
        escaped = c == '\\' && !escaped;
        key_len += 1;
    }
    while value_start < limit {
        let c = chars[value_start].1;
        if !is_blank(c) {
            // Blanks around one `=` or `:` all belong to the separator.
            if !has_separator && (c == '=' || c == ':') {
                has_separator = true;
            } else {
                break;
            }
        }
        value_start += 1;
    }
    let value_offset = match chars.get(value_start) {
        Some(&(offset, _)) => offset,
        None => chars
            .last()
            .map_or(line.start, |&(offset, c)| offset + c.len_utf8()),
    };
    let key = unescape(text, &chars[..key_len], Part::Key, "")?;
    let value = unescape(text, &chars[value_start..], Part::Value, &key)?;
    Ok(Entry {
        key,
        value,
        value_span: value_offset..line.end,
        line_span: line.start..line.end,
        bare_key,
    })
}

#[derive(Clone, Copy)]
enum Part {
    Key,
    Value,
}

/// Undoes Java's escapes as `Properties.loadConvert` does: `\t \n \r \f`, `\uXXXX`, and a
/// backslash before any other character stands for that character.
fn unescape(text: &str, chars: &[(usize, char)], part: Part, key: &str) -> Result<String> {
    // Java builds the string from UTF-16 units, so a character may arrive as two escapes.
    let mut units: Vec<u16> = Vec::with_capacity(chars.len());
    let mut buffer = [0_u16; 2];
    let mut index = 0;
    while index < chars.len() {
        let (offset, c) = chars[index];
        index += 1;
        if c != '\\' {
            units.extend_from_slice(c.encode_utf16(&mut buffer));
            continue;
        }
        // `LineReader` never leaves a lone backslash at the end, so one always follows.
        let Some(&(_, next)) = chars.get(index) else {
            break;
        };
        index += 1;
        match next {
            'u' => {
                let digits: String = chars
                    .get(index..index + 4)
                    .map(|four| four.iter().map(|&(_, c)| c).collect())
                    .unwrap_or_default();
                let unit = (digits.len() == 4 && digits.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| u16::from_str_radix(&digits, 16).ok())
                    .flatten();
                let Some(unit) = unit else {
                    let written: String = chars[index - 2..(index + 4).min(chars.len())]
                        .iter()
                        .map(|&(_, c)| c)
                        .collect();
                    return Err(escape_error(
                        text,
                        offset,
                        part,
                        key,
                        format!(
                            "malformed \\uxxxx escape {written:?} (Java needs exactly four hex \
                             digits after \\u)"
                        ),
                    ));
                };
                units.push(unit);
                index += 4;
            }
            't' => units.push(u16::from(b'\t')),
            'n' => units.push(u16::from(b'\n')),
            'r' => units.push(u16::from(b'\r')),
            'f' => units.push(0x0c),
            other => units.extend_from_slice(other.encode_utf16(&mut buffer)),
        }
    }
    String::from_utf16(&units).map_err(|_| {
        let first = chars.first().map_or(0, |&(offset, _)| offset);
        escape_error(
            text,
            first,
            part,
            key,
            "a \\uXXXX escape leaves half of a UTF-16 surrogate pair (D800-DFFF) unpaired; Java \
             keeps it, but it is not text"
                .to_owned(),
        )
    })
}

fn escape_error(text: &str, offset: usize, part: Part, key: &str, problem: String) -> Error {
    let place = match part {
        Part::Key => "in a key".to_owned(),
        Part::Value => format!("in the value of {key:?}"),
    };
    Error::Escape {
        line: line_number(text, offset),
        problem: format!("{place}: {problem}"),
    }
}

/// The 1-based physical line holding `offset`; `\r\n`, `\n` and `\r` each end a line.
fn line_number(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let breaks = before
        .iter()
        .enumerate()
        .filter(|&(at, &b)| b == b'\n' || (b == b'\r' && before.get(at + 1) != Some(&b'\n')))
        .count();
    breaks + 1
}

/// Escapes a key (`key` true) or a value as `Properties.store(Writer, …)` does: `\` doubled,
/// `\t \n \r \f` spelled out, `= : # !` escaped, spaces escaped in a key and at the start of a
/// value, and everything else (non-ASCII included) written as is.
fn escape(text: &str, key: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (index, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if key || index == 0 => out.push_str("\\ "),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Properties {
        Properties::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn spark_written_file_reads_back() {
        let text = "#Java properties built from Kubernetes config map with name: \
                    spark-drv-1-conf-map\n#Mon Feb 06 21:26:11 KST 2023\n\
                    spark.master=k8s\\://https\\://10.0.0.1\\:443\n\
                    spark.executor.memory=2g\n";
        let conf = parse(text);
        assert_eq!(conf.get("spark.master"), Some("k8s://https://10.0.0.1:443"));
        assert_eq!(conf.get("spark.executor.memory"), Some("2g"));
        assert_eq!(conf.iter().count(), 2);
    }

    #[test]
    fn each_escape_is_undone() {
        let text = "a=x\\:y\nb=x\\=y\nc=\\ lead\nd=back\\\\slash\ne=\\t\\n\\r\\f\n\
                    f=\\u00e9\\u00C9\ng=\\q\\#\\!\nh=\\uD83D\\uDE00\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("a", "x:y"),
                pair("b", "x=y"),
                pair("c", " lead"),
                pair("d", "back\\slash"),
                pair("e", "\t\n\r\x0c"),
                pair("f", "éÉ"),
                pair("g", "q#!"),
                pair("h", "😀"),
            ]
        );
    }

    #[test]
    fn escapes_in_keys_are_undone_and_escaped_separators_stay_in_the_key() {
        assert_eq!(pairs("a\\=b\\:c\\ d=v\n"), vec![pair("a=b:c d", "v")]);
    }

    #[test]
    fn equals_colon_and_whitespace_all_separate() {
        assert_eq!(
            pairs("a=1\nb:2\nc 3\nd\t4\ne\x0c5\nf = 6\ng : 7\nh   =   8\ni  9\n"),
            vec![
                pair("a", "1"),
                pair("b", "2"),
                pair("c", "3"),
                pair("d", "4"),
                pair("e", "5"),
                pair("f", "6"),
                pair("g", "7"),
                pair("h", "8"),
                pair("i", "9"),
            ]
        );
    }

    #[test]
    fn only_one_separator_is_skipped() {
        assert_eq!(
            pairs("a==b\nc :=d\ne = = f\n"),
            vec![pair("a", "=b"), pair("c", "=d"), pair("e", "= f")]
        );
    }

    #[test]
    fn key_alone_has_an_empty_value() {
        assert_eq!(
            pairs("lonely\nspaced   \nsep=\n"),
            vec![pair("lonely", ""), pair("spaced", ""), pair("sep", "")]
        );
    }

    #[test]
    fn hash_and_bang_comments_and_blank_lines_are_skipped() {
        let text = "# one\n! two\n   # indented\n\n  \t\nkey=v # not a comment\n";
        assert_eq!(pairs(text), vec![pair("key", "v # not a comment")]);
    }

    #[test]
    fn a_comment_is_never_continued() {
        assert_eq!(pairs("# comment \\\nkey=v\n"), vec![pair("key", "v")]);
    }

    #[test]
    fn leading_whitespace_is_ignored() {
        assert_eq!(pairs("   \t key = v\n"), vec![pair("key", "v")]);
    }

    #[test]
    fn odd_trailing_backslashes_continue_the_line_and_drop_the_next_lines_indent() {
        let text = "key = one, \\\n      two, \\\r\n  three\neven=a\\\\\nnext=b\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("key", "one, two, three"),
                pair("even", "a\\"),
                pair("next", "b")
            ]
        );
    }

    #[test]
    fn an_empty_line_ends_a_continued_line() {
        assert_eq!(
            pairs("key=a\\\n\nnext=b\n"),
            vec![pair("key", "a"), pair("next", "b")]
        );
    }

    #[test]
    fn a_continued_line_may_start_with_a_hash() {
        assert_eq!(pairs("key=a\\\n#b\n"), vec![pair("key", "a#b")]);
    }

    #[test]
    fn a_trailing_backslash_at_the_end_of_the_text_is_dropped() {
        assert_eq!(pairs("key=a\\"), vec![pair("key", "a")]);
        assert_eq!(pairs("key=a\\\n"), vec![pair("key", "a")]);
    }

    #[test]
    fn cr_and_crlf_end_lines_too() {
        assert_eq!(
            pairs("a=1\rb=2\r\nc=3"),
            vec![pair("a", "1"), pair("b", "2"), pair("c", "3")]
        );
    }

    #[test]
    fn last_definition_wins() {
        let conf = parse("k=1\nother=x\nk=2\n");
        assert_eq!(conf.get("k"), Some("2"));
        assert_eq!(conf.get("missing"), None);
    }

    #[test]
    fn malformed_unicode_escape_names_the_line_and_the_problem() {
        for (text, line) in [
            ("a=1\nb=\\u12G4\n", 2),
            ("a=1\r\n\r\nb=x\\u12", 3),
            ("a=1\nbad\\u1=x\n", 2),
        ] {
            let err = Properties::parse(text).expect_err(text).to_string();
            assert!(err.starts_with(&format!("line {line}:")), "{err}");
            assert!(err.contains("four hex digits"), "{err}");
        }
        let err = Properties::parse("k=\\uD83D\n").expect_err("lone surrogate");
        assert!(err.to_string().contains("surrogate"), "{err}");
        assert!(err.to_string().contains("\"k\""), "{err}");
    }

    #[test]
    fn set_replaces_the_value_in_place_and_keeps_key_and_separator() {
        let mut conf = parse("# c\n  spark.x   :  10  \nspark.y=1\n");
        conf.set("spark.x", "4");
        assert_eq!(conf.text(), "# c\n  spark.x   :  4\nspark.y=1\n");
        assert_eq!(conf.get("spark.x"), Some("4"));
    }

    #[test]
    fn set_escapes_the_value_as_store_does() {
        let mut conf = parse("k=v\n");
        conf.set("k", " a=b:c#d!e\\f\tg\n");
        assert_eq!(conf.text(), "k=\\ a\\=b\\:c\\#d\\!e\\\\f\\tg\\n\n");
        assert_eq!(parse(conf.text()).get("k"), Some(" a=b:c#d!e\\f\tg\n"));
    }

    #[test]
    fn set_replaces_only_the_last_definition() {
        let mut conf = parse("k=1\nk=2\n");
        conf.set("k", "3");
        assert_eq!(conf.text(), "k=1\nk=3\n");
    }

    #[test]
    fn set_replaces_a_continued_value_whole() {
        let mut conf = parse("k = a,\\\n    b,\\\n    c\nnext=1\n");
        conf.set("k", "z");
        assert_eq!(conf.text(), "k = z\nnext=1\n");
        conf.set("next", "2");
        assert_eq!(conf.text(), "k = z\nnext=2\n");
    }

    #[test]
    fn set_empties_a_value_written_on_a_continuation_line() {
        // Found by the property test: once empty, the value no longer reaches the blanks that
        // follow, so the definition ends at its continuation backslash.
        let mut conf = parse(" \n=\\\n  =  ");
        conf.set("", "");
        assert_eq!(conf.text(), " \n=\\\n  ");
        assert_eq!(parse(conf.text()).entries, conf.entries);
        conf.set("", "x");
        assert_eq!(pairs(conf.text()), vec![pair("", "x")]);
    }

    #[test]
    fn set_on_a_bare_key_adds_a_separator() {
        let mut conf = parse("flag\nother=1\n");
        conf.set("flag", "on");
        assert_eq!(conf.text(), "flag=on\nother=1\n");
    }

    #[test]
    fn set_appends_an_absent_key_on_a_new_line() {
        let mut conf = parse("a=1");
        conf.set("b c", "2");
        assert_eq!(conf.text(), "a=1\nb\\ c=2\n");

        let mut conf = parse("a=1\r\n");
        conf.set("b", "2");
        assert_eq!(conf.text(), "a=1\r\nb=2\r\n");

        let mut conf = parse("");
        conf.set("b", "2");
        assert_eq!(conf.text(), "b=2\n");
    }

    #[test]
    fn set_appends_after_a_dangling_continuation_without_joining_it() {
        for text in ["a=1\\", "a=1\\\n", "a=1\\\n   "] {
            let mut conf = parse(text);
            conf.set("b", "2");
            assert_eq!(
                pairs(conf.text()),
                vec![pair("a", "1"), pair("b", "2")],
                "{text:?} -> {:?}",
                conf.text()
            );
        }
    }

    #[test]
    fn set_appends_after_a_continuation_ended_by_a_lone_cr() {
        // `\r` then `\n` would be one line break, continuing the definition into ours.
        for text in ["a=1\\\r", "a=1\\\r\n", "a=1\r\nb=\\\r"] {
            let mut conf = parse(text);
            conf.set("z", "2");
            assert_eq!(parse(conf.text()).get("z"), Some("2"), "{:?}", conf.text());
            assert_eq!(
                parse(conf.text()).entries,
                conf.entries,
                "{:?}",
                conf.text()
            );
        }
    }

    #[test]
    fn emptying_a_value_alone_on_a_cr_continued_line_keeps_the_next_definition() {
        // Found by the property test below: `=\` CR `=` LF `u` is "" = "=" and "u" = "". Emptied
        // in place, CR and LF would meet as one break and swallow `u` into the value.
        let mut conf = parse("=\\\r=\nu");
        assert_eq!(pairs(conf.text()), vec![pair("", "="), pair("u", "")]);
        conf.set("", "");
        assert_eq!(conf.get(""), Some(""));
        assert_eq!(
            pairs(conf.text()),
            vec![pair("", ""), pair("u", "")],
            "{:?}",
            conf.text()
        );
    }

    #[test]
    fn set_closes_a_value_that_ended_the_text_with_a_continuation() {
        let mut conf = parse("a=1\\");
        conf.set("a", "2");
        conf.set("b", "3");
        assert_eq!(conf.text(), "a=2\nb=3\n");
    }

    #[test]
    fn set_appends_without_losing_an_empty_definition_made_by_a_final_backslash() {
        // Java reads a last line holding only `\` as "" = "" because the text ends there.
        for text in ["=old\n\\", "=old\n\\\n", "=old\r\n  \\\r"] {
            let mut conf = parse(text);
            assert_eq!(conf.get(""), Some(""), "{text:?}");
            conf.set("b", "2");
            assert_eq!(
                pairs(conf.text()),
                vec![pair("", "old"), pair("", ""), pair("b", "2")],
                "{text:?} -> {:?}",
                conf.text()
            );
            assert_eq!(parse(conf.text()).entries, conf.entries);
            assert!(conf.text().starts_with(text));
            // No blank line between: the `=` closes the continuation.
            let lf = conf.text().replace("\r\n", "\n");
            assert!(
                lf.ends_with("\\\n=\nb=2\n") || lf.ends_with("\\\r=\nb=2\n"),
                "{lf:?}"
            );
        }
    }

    /// Writes a map as `Properties.store(Writer, comment)` does.
    fn store(comment: &str, map: &BTreeMap<String, String>) -> String {
        let mut out = format!("#{comment}\n#Mon Feb 06 21:26:11 KST 2023\n");
        for (k, v) in map {
            out.push_str(&escape(k, true));
            out.push('=');
            out.push_str(&escape(v, false));
            out.push('\n');
        }
        out
    }

    fn any_text() -> impl Strategy<Value = String> {
        // Weighted toward the characters the grammar cares about.
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(vec![
                    " ", "\t", "\x0c", "=", ":", "#", "!", "\\", "\n", "\r", "\r\n", "u",
                    "0", "a", "\\\n  ", "\\\r", "\\u00e9",
                ])
                .prop_map(str::to_owned),
                2 => any::<char>().prop_map(String::from),
            ],
            0..40,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn stored_maps_read_back(
            map in prop::collection::btree_map(any_text(), any_text(), 0..12),
        ) {
            let conf = parse(&store("comment", &map));
            let read: BTreeMap<String, String> = conf
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            prop_assert_eq!(read, map);
        }

        #[test]
        fn any_parsable_text_is_kept_byte_for_byte(text in any_text()) {
            if let Ok(conf) = Properties::parse(&text) {
                prop_assert_eq!(conf.text(), text.as_str());
            }
        }

        #[test]
        fn set_changes_one_value_and_keeps_every_other_byte(
            text in any_text(),
            pick in any::<prop::sample::Index>(),
            value in any_text(),
            new_key in any_text(),
        ) {
            let Ok(mut conf) = Properties::parse(&text) else {
                return Ok(());
            };
            let keys: Vec<String> = conf.iter().map(|(k, _)| k.to_owned()).collect();
            let key = if keys.is_empty() { new_key } else { keys[pick.index(keys.len())].clone() };
            let before = conf.clone();
            conf.set(&key, &value);

            prop_assert_eq!(conf.get(&key), Some(value.as_str()));
            let reparsed = parse(conf.text());
            prop_assert_eq!(&reparsed.entries, &conf.entries);

            match before.last(&key) {
                Some(index) => {
                    // Bytes outside the old value are untouched, other definitions too.
                    let span = before.entries[index].value_span.clone();
                    prop_assert!(conf.text().starts_with(&before.text()[..span.start]));
                    prop_assert!(conf.text().ends_with(&before.text()[span.end..]));
                    prop_assert_eq!(conf.entries.len(), before.entries.len());
                    for (i, (old, new)) in before.entries.iter().zip(&conf.entries).enumerate() {
                        if i != index {
                            prop_assert_eq!((&old.key, &old.value), (&new.key, &new.value));
                        }
                    }
                }
                None => {
                    prop_assert!(conf.text().starts_with(before.text()));
                    let old: Vec<_> = before.iter().collect();
                    let new: Vec<_> = conf.iter().collect();
                    prop_assert_eq!(&new[..new.len() - 1], &old[..]);
                }
            }
        }
    }
}
