//! Java `.properties` text, read exactly as `java.util.Properties.load(Reader)` reads it, and
//! edited without disturbing anything the edit is not about.
//!
//! Spark writes `spark.properties` with `Properties.store(Writer, comment)`: a comment line, a
//! date line, then `key=value` lines with Java's escapes. A user's own file may use anything
//! `load` accepts: `=`, `:` or whitespace between key and value, `#` and `!` comments, blank
//! lines, lines continued by an odd number of trailing backslashes, leading whitespace, and
//! `\uXXXX` escapes. The reader here follows the JDK's `LineReader` and `loadConvert` step by
//! step, so that [`Properties::set`] can replace one value and leave every other byte of the
//! file as it was.
//!
//! The text is what a client sends (up to 3 MiB in a review), so what it costs is bounded by
//! its size, never by its shape. Nothing of it is copied but the text itself: a definition is
//! found again by reading its one logical line from where it starts, an index maps each key to
//! where its last definition starts (8 bytes a slot, at most twice as many slots as keys), and
//! only the values of last definitions written with escapes are kept unescaped, once. An edit
//! moves the bytes after it and the index entries after it, and re-reads nothing but its own
//! line (and, when it is the last definition, what follows it to the end of the text).
//!
//! This module never reorders, re-escapes or drops a line it was not asked to change, and never
//! performs I/O.

use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use super::{Error, Result};

/// The longest text that can be read: offsets are kept in 32 bits.
const MAX_TEXT: usize = u32::MAX as usize - 1;

/// A parsed `.properties` text that can be edited in place.
///
/// ```
/// use spark_admission::sparkconf::Properties;
///
/// let mut conf = Properties::parse("#comment\nspark.executor.instances=10\n")?;
/// assert_eq!(conf.get("spark.executor.instances"), Some("10"));
/// conf.set("spark.executor.instances", "4")?;
/// conf.set("spark.app.name", "a b:c")?;
/// assert_eq!(
///     conf.text(),
///     "#comment\nspark.executor.instances=4\nspark.app.name=a b\\:c\n"
/// );
/// # Ok::<(), spark_admission::sparkconf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Properties {
    text: String,
    /// Every key, to where its last definition starts; later ones win, as in Java.
    index: Index,
    /// The values of last definitions that are written with escapes, unescaped.
    unescaped: Unescaped,
    /// Where the last definition of the text starts.
    last: Option<u32>,
    /// How the text ends, which decides what an appended definition must be preceded by.
    tail: Tail,
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
    /// which is not text (such a file is better left alone than rewritten with a guess), and on
    /// a text of 4 GiB or more.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_TEXT {
            return Err(Error::TooLarge { bytes: text.len() });
        }
        let mut index = Index::new();
        let mut scratch = String::new();
        let mut last = None;
        let mut lines = Lines::new(text, 0);
        for line in lines.by_ref() {
            let definition = split(text, line);
            // Every definition is read through, as Java reads them, so that a bad escape
            // anywhere refuses the text; an unescaped value is not kept here.
            let key = read_part(text, &definition.key, line.end, Part::Key, "")?;
            if text[definition.value.clone()].contains('\\') {
                scratch.clear();
                unescape_into(
                    text,
                    &definition.value,
                    line.end,
                    Part::Value,
                    &key,
                    &mut scratch,
                )?;
            }
            let start = offset(line.start);
            index.insert(text, &key, start);
            last = Some(start);
        }
        let tail = lines.tail();
        let unescaped = Unescaped::of(text, &index);
        Ok(Self {
            text: text.to_owned(),
            index,
            unescaped,
            last,
            tail,
        })
    }

    /// The value of `key`, unescaped, from its last definition.
    pub fn get(&self, key: &str) -> Option<&str> {
        let start = self.index.get(&self.text, key)?;
        Some(match self.unescaped.get(start) {
            Some(value) => value,
            None => {
                let definition = definition_at(&self.text, start as usize);
                &self.text[definition.value]
            }
        })
    }

    /// Every definition as (key, value), unescaped, in file order. A key defined twice appears
    /// twice; the later definition is the one [`Properties::get`] returns. Read from the text
    /// as it is iterated: a value written without escapes is borrowed from it.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        let text = self.text.as_str();
        Lines::new(text, 0).filter_map(move |line| {
            let definition = split(text, line);
            // The text was read whole when it was parsed and edits only write escapes that
            // read back, so neither part can fail here.
            let key = read_part(text, &definition.key, line.end, Part::Key, "").ok()?;
            let value = read_part(text, &definition.value, line.end, Part::Value, &key).ok()?;
            Some((key, value))
        })
    }

    /// Sets `key` to `value`.
    ///
    /// An existing key keeps its last definition's key text, separator and position; only the
    /// value is replaced, escaped as `Properties.store` escapes a value. A value that spans
    /// continuation lines is replaced whole, by one line. An absent key is appended as
    /// `key=value` on a new line at the end, with the file's own line ending. Every other byte
    /// of the text is kept. Fails, changing nothing, only when the text would reach 4 GiB.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let escaped = escape(value, false);
        // Room for the value, a separator, the key and line breaks, whatever the edit is.
        let most = self.text.len() + escaped.len() + escape(key, true).len() + 8;
        if most > MAX_TEXT {
            return Err(Error::TooLarge { bytes: most });
        }
        match self.index.get(&self.text, key) {
            Some(start) => self.replace_value(start, escaped),
            None => self.append(key, &escaped),
        }
        Ok(())
    }

    /// The text, with every edit applied.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn replace_value(&mut self, start: u32, escaped: String) {
        let line_start = start as usize;
        let definition = definition_at(&self.text, line_start);
        let mut replacement = String::with_capacity(escaped.len() + 2);
        if definition.bare_key {
            replacement.push('=');
        }
        replacement.push_str(&escaped);
        let span = definition.value.clone();
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
        let (old_end, new_end) = (span.end, span.start + replacement.len());
        self.text.replace_range(span, &replacement);
        // Everything after the value moved; the line's own start did not. Lines cannot overlap,
        // so "after the value" is "starts after this line's start".
        let delta = new_end as i64 - old_end as i64;
        self.index.shift(start, delta);
        self.unescaped.shift(start, delta);
        if let Some(last) = self.last.as_mut()
            && *last > start
        {
            *last = shifted(*last, delta);
        }
        self.unescaped.set(&self.text, start);
        if self.last == Some(start) {
            // Only the end of the text decides the tail, and only the last definition reaches
            // it (a value emptied on a continuation line, for one, ends its line earlier).
            self.tail = tail_from(&self.text, line_start);
        }
    }

    fn append(&mut self, key: &str, escaped_value: &str) {
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
        let line_start = self.text.len();
        self.text.push_str(&escape(key, true));
        self.text.push('=');
        self.text.push_str(escaped_value);
        self.text.push_str(newline);
        let start = offset(line_start);
        // The key is read back from the text, as any other: escaping round-trips, so it is
        // `key`, but the index must hold what the reader finds.
        let definition = definition_at(&self.text, line_start);
        let line_end = definition.line.end;
        if let Ok(read) = read_part(&self.text, &definition.key, line_end, Part::Key, "") {
            let read = read.into_owned();
            self.index.insert(&self.text, &read, start);
        }
        self.unescaped.set(&self.text, start);
        self.last = Some(start);
        self.tail = tail_from(&self.text, line_start);
    }

    /// Whether the last definition is a line holding only a continuation backslash at the very
    /// end of the text. Java reads it as an empty key with an empty value only because the text
    /// ends there: anything appended would join it and make that definition disappear.
    ///
    /// Such a line is the only one whose value starts where the line starts: any other line
    /// keeps at least one character before its value, a key character or a separator.
    fn ends_with_lone_continuation(&self) -> bool {
        self.last.is_some_and(|start| {
            let definition = definition_at(&self.text, start as usize);
            definition.value.start == definition.line.start
        })
    }

    /// Writes `=` on the continuation of a lone trailing backslash, so that the definition it
    /// stands for (empty key, empty value) survives text appended after it, and closes it.
    ///
    /// The definition then starts at that `=`: `LineReader` starts a line at its first kept
    /// character, and the backslash is not kept.
    fn keep_lone_continuation(&mut self, newline: &str) {
        if self.tail == Tail::Backslash {
            self.text.push_str(newline);
        }
        let start = offset(self.text.len());
        self.text.push('=');
        self.text.push_str(newline);
        self.tail = Tail::Closed;
        if let Some(old) = self.last.replace(start) {
            self.index.moved(old, start);
            self.unescaped.remove(old);
            self.unescaped.set(&self.text, start);
        }
    }
}

/// An offset the text's size limit keeps within 32 bits.
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX - 1)
}

fn shifted(at: u32, delta: i64) -> u32 {
    u32::try_from(i64::from(at) + delta).unwrap_or(u32::MAX - 1)
}

/// The state the reader is in at the end of the text, read from a line start onwards.
fn tail_from(text: &str, line_start: usize) -> Tail {
    let mut lines = Lines::new(text, line_start);
    lines.by_ref().for_each(drop);
    lines.tail()
}

/// The first line ending the text uses, so that an appended line matches the file.
fn line_ending(text: &str) -> &'static str {
    match text.find(['\n', '\r']) {
        Some(at) if text[at..].starts_with("\r\n") => "\r\n",
        Some(at) if text[at..].starts_with('\r') => "\r",
        _ => "\n",
    }
}

/// A logical line as `LineReader.readLine` assembles it, by where it is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    /// Offset of the line's first kept character (or of a lone continuation backslash).
    start: usize,
    /// Offset just past the last character the line consumed before its terminator, including
    /// a continuation backslash that was dropped.
    end: usize,
}

/// Whitespace as `Properties` knows it: space, tab and form feed, nothing else.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0c')
}

fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// The logical lines of a text, exactly as the JDK's `LineReader.readLine` finds them, and the
/// state the end of the text leaves it in.
///
/// Every character `LineReader` looks at is ASCII (blanks, line breaks, `#`, `!`, `\`), and
/// UTF-8 never uses ASCII bytes inside another character, so the text is read byte by byte.
struct Lines<'t> {
    bytes: &'t [u8],
    pos: usize,
    tail: Option<Tail>,
}

impl<'t> Lines<'t> {
    /// Reading from `pos`, where a logical line starts (or the text does).
    fn new(text: &'t str, pos: usize) -> Self {
        Self {
            bytes: text.as_bytes(),
            pos,
            tail: None,
        }
    }

    /// The state the end of the text left the reader in, once every line was read.
    fn tail(&self) -> Tail {
        self.tail.unwrap_or(Tail::Closed)
    }
}

impl Iterator for Lines<'_> {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        if self.tail.is_some() {
            return None;
        }
        let bytes = self.bytes;
        // How many bytes the line keeps so far: a continuation's backslash is taken back.
        let mut kept = 0usize;
        let mut start = self.pos;
        let mut end = self.pos;
        let mut skip_blanks = true;
        // Set after a continuation: a line break right there ends the logical line instead of
        // being skipped as a blank line.
        let mut continued = false;
        let mut odd_backslashes = false;
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                self.tail = Some(if skip_blanks && continued {
                    Tail::Break
                } else if odd_backslashes {
                    Tail::Backslash
                } else {
                    Tail::Closed
                });
                return (kept > 0).then_some(Line { start, end });
            };
            let at = self.pos;
            self.pos += 1;
            if skip_blanks {
                if is_blank(b) || (!continued && is_break(b)) {
                    continue;
                }
                skip_blanks = false;
                continued = false;
            }
            if kept == 0 && (b == b'#' || b == b'!') {
                // A comment runs to the next line break; a backslash does not continue it.
                match bytes[self.pos..].iter().position(|&b| is_break(b)) {
                    Some(offset) => self.pos += offset + 1,
                    None => {
                        self.tail = Some(Tail::Closed);
                        return None;
                    }
                }
                skip_blanks = true;
                continue;
            }
            if !is_break(b) {
                if kept == 0 {
                    start = at;
                }
                kept += 1;
                end = self.pos;
                odd_backslashes = b == b'\\' && !odd_backslashes;
                continue;
            }
            if kept == 0 {
                skip_blanks = true;
                continue;
            }
            if self.pos >= bytes.len() {
                // A line break that ends the text ends the line, continued or not.
                self.tail = Some(if odd_backslashes {
                    Tail::Break
                } else {
                    Tail::Closed
                });
                return Some(Line { start, end });
            }
            if !odd_backslashes {
                return Some(Line { start, end });
            }
            // The backslash is not part of the line, nor are the next line's blanks.
            kept -= 1;
            skip_blanks = true;
            continued = true;
            odd_backslashes = false;
            if b == b'\r' && bytes.get(self.pos) == Some(&b'\n') {
                self.pos += 1;
            }
        }
    }
}

/// The characters a logical line keeps between two of its offsets, each with its offset: what
/// `LineReader` hands `load0`. A continuation (an odd run of backslashes ending its physical
/// line, or the line) loses its last backslash, its line break and the next line's blanks.
struct Kept<'t> {
    text: &'t str,
    pos: usize,
    to: usize,
    /// Where the logical line ends: a backslash there was a continuation.
    line_end: usize,
    odd_backslashes: bool,
}

impl<'t> Kept<'t> {
    fn new(text: &'t str, range: &Range<usize>, line_end: usize) -> Self {
        Self {
            text,
            pos: range.start,
            to: range.end,
            line_end,
            odd_backslashes: false,
        }
    }
}

impl Iterator for Kept<'_> {
    type Item = (usize, char);

    fn next(&mut self) -> Option<(usize, char)> {
        let bytes = self.text.as_bytes();
        loop {
            if self.pos >= self.to {
                return None;
            }
            let c = self.text.get(self.pos..)?.chars().next()?;
            let at = self.pos;
            self.pos += c.len_utf8();
            if c != '\\' {
                self.odd_backslashes = false;
                return Some((at, c));
            }
            self.odd_backslashes = !self.odd_backslashes;
            let next = bytes.get(self.pos).copied();
            let continues = self.pos >= self.line_end || next.is_some_and(is_break);
            if !(self.odd_backslashes && continues) {
                return Some((at, c));
            }
            self.odd_backslashes = false;
            if self.pos < self.line_end {
                if next == Some(b'\r') && bytes.get(self.pos + 1) == Some(&b'\n') {
                    self.pos += 1;
                }
                self.pos += 1;
                while self.pos < self.to && bytes.get(self.pos).is_some_and(|&b| is_blank(b)) {
                    self.pos += 1;
                }
            }
        }
    }
}

/// One definition (a logical line that is not blank or a comment), by where its parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Definition {
    /// The whole logical line (see [`Line`]).
    line: Range<usize>,
    /// The key as written, escapes and continuations included.
    key: Range<usize>,
    /// The value as written, escapes and continuations included, up to the end of the logical
    /// line (a trailing continuation backslash included).
    value: Range<usize>,
    /// The line is a key alone, with no separator: a new value needs a `=` before it.
    bare_key: bool,
}

/// The definition whose logical line starts at `start`. The reader is in the same state at
/// every line start, so a line reads the same alone as within the text.
fn definition_at(text: &str, start: usize) -> Definition {
    let line = Lines::new(text, start)
        .next()
        .unwrap_or(Line { start, end: start });
    split(text, line)
}

/// Splits a logical line into key and value as the JDK's `Properties.load0` does.
fn split(text: &str, line: Line) -> Definition {
    let mut chars = Kept::new(text, &(line.start..line.end), line.end).peekable();
    let mut key_end = line.end;
    let mut has_separator = false;
    let mut escaped = false;
    let mut bare_key = true;
    // Just past the last character kept so far, for a value that is empty.
    let mut after = line.start;
    for (at, c) in chars.by_ref() {
        after = at + c.len_utf8();
        if (c == '=' || c == ':') && !escaped {
            key_end = at;
            has_separator = true;
            bare_key = false;
            break;
        }
        if c.is_ascii() && is_blank(c as u8) && !escaped {
            key_end = at;
            bare_key = false;
            break;
        }
        escaped = c == '\\' && !escaped;
    }
    let mut value_start = None;
    while let Some(&(at, c)) = chars.peek() {
        if !(c.is_ascii() && is_blank(c as u8)) {
            // Blanks around one `=` or `:` all belong to the separator.
            if !has_separator && (c == '=' || c == ':') {
                has_separator = true;
            } else {
                value_start = Some(at);
                break;
            }
        }
        after = at + c.len_utf8();
        chars.next();
    }
    let value_start = value_start.unwrap_or(after);
    Definition {
        line: line.start..line.end,
        key: line.start..key_end,
        value: value_start..line.end,
        bare_key,
    }
}

#[derive(Clone, Copy)]
enum Part {
    Key,
    Value,
}

/// A key or value as read: borrowed from the text when written without a backslash (so
/// without escapes or continuations), else unescaped.
fn read_part<'t>(
    text: &'t str,
    raw: &Range<usize>,
    line_end: usize,
    part: Part,
    key: &str,
) -> Result<Cow<'t, str>> {
    let written = &text[raw.clone()];
    if !written.contains('\\') {
        return Ok(Cow::Borrowed(written));
    }
    let mut out = String::with_capacity(written.len());
    unescape_into(text, raw, line_end, part, key, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Undoes Java's escapes as `Properties.loadConvert` does, onto `out`: `\t \n \r \f`,
/// `\uXXXX`, and a backslash before any other character stands for that character. `key` is
/// the key a value belongs to, for messages.
fn unescape_into(
    text: &str,
    raw: &Range<usize>,
    line_end: usize,
    part: Part,
    key: &str,
    out: &mut String,
) -> Result<()> {
    let mut chars = Kept::new(text, raw, line_end);
    // Java builds the string from UTF-16 units, so a character may arrive as two escapes: a
    // high surrogate waits here for its low half. One left unpaired is reported once the whole
    // part is read, as Java would only find it then, after any malformed escape.
    let mut high: Option<u16> = None;
    let mut unpaired = false;
    while let Some((offset, c)) = chars.next() {
        let unit = if c != '\\' {
            Err(c)
        } else {
            // `LineReader` never leaves a lone backslash at the end, so one always follows.
            let Some((_, next)) = chars.next() else {
                break;
            };
            match next {
                'u' => {
                    let digits: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    let unit = (digits.chars().count() == 4
                        && digits.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| u16::from_str_radix(&digits, 16).ok())
                    .flatten();
                    let Some(unit) = unit else {
                        return Err(escape_error(
                            text,
                            offset,
                            part,
                            key,
                            format!(
                                "malformed \\uxxxx escape {:?} (Java needs exactly four hex \
                                 digits after \\u)",
                                format!("\\u{digits}")
                            ),
                        ));
                    };
                    Ok(unit)
                }
                't' => Err('\t'),
                'n' => Err('\n'),
                'r' => Err('\r'),
                'f' => Err('\x0c'),
                other => Err(other),
            }
        };
        match unit {
            // A character written as itself (or escaped as itself) is whole UTF-16.
            Err(c) => {
                if high.take().is_some() {
                    unpaired = true;
                }
                out.push(c);
            }
            Ok(unit @ 0xD800..=0xDBFF) => {
                if high.replace(unit).is_some() {
                    unpaired = true;
                }
            }
            Ok(unit @ 0xDC00..=0xDFFF) => match high.take() {
                Some(high) => {
                    let code =
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    out.extend(char::from_u32(code));
                }
                None => unpaired = true,
            },
            Ok(unit) => {
                if high.take().is_some() {
                    unpaired = true;
                }
                out.extend(char::from_u32(u32::from(unit)));
            }
        }
    }
    if unpaired || high.is_some() {
        return Err(escape_error(
            text,
            raw.start,
            part,
            key,
            "a \\uXXXX escape leaves half of a UTF-16 surrogate pair (D800-DFFF) unpaired; Java \
             keeps it, but it is not text"
                .to_owned(),
        ));
    }
    Ok(())
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

/// Keys to where their last definitions start: open addressing with linear probing over slots
/// of 8 bytes, grown to keep them at most three quarters full.
///
/// A slot holds a line start and 32 bits of the key's hash; the key itself is read from the
/// text when hashes meet, so no key is copied. The hasher is std's `RandomState` (SipHash with
/// a random key), so a client cannot write keys that all land in one run of slots.
#[derive(Debug, Clone)]
struct Index {
    slots: Vec<Slot>,
    len: usize,
    hasher: RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// `FREE`, or where the last definition of the key starts.
    start: u32,
    /// The key's hash, folded to 32 bits; the slot it wants is this modulo the table size.
    hash: u32,
}

const FREE: u32 = u32::MAX;

impl Index {
    fn new() -> Self {
        Self {
            slots: vec![
                Slot {
                    start: FREE,
                    hash: 0
                };
                16
            ],
            len: 0,
            hasher: RandomState::new(),
        }
    }

    fn hash(&self, key: &str) -> u32 {
        let hash = self.hasher.hash_one(key);
        // The fold keeps both halves' bits; truncation to 32 is the point.
        #[allow(clippy::cast_possible_truncation)]
        let folded = (hash ^ (hash >> 32)) as u32;
        folded
    }

    /// The slot holding `key`, or the free slot where it would go.
    fn find(&self, text: &str, key: &str, hash: u32) -> std::result::Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot.start == FREE {
                return Err(at);
            }
            if slot.hash == hash && key_is(text, slot.start as usize, key) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    fn get(&self, text: &str, key: &str) -> Option<u32> {
        self.find(text, key, self.hash(key))
            .ok()
            .map(|at| self.slots[at].start)
    }

    /// Records that the last definition of `key` starts at `start`.
    fn insert(&mut self, text: &str, key: &str, start: u32) {
        let hash = self.hash(key);
        match self.find(text, key, hash) {
            Ok(at) => self.slots[at].start = start,
            Err(at) => {
                self.slots[at] = Slot { start, hash };
                self.len += 1;
                if self.len * 4 > self.slots.len() * 3 {
                    self.grow();
                }
            }
        }
    }

    /// Twice the slots, each key placed again by its hash: no key is read.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![
            Slot {
                start: FREE,
                hash: 0
            };
            old.len() * 2
        ];
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.start != FREE) {
            let mut at = slot.hash as usize & mask;
            while self.slots[at].start != FREE {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
    }

    /// Every definition starting after `after` moved by `delta` bytes.
    fn shift(&mut self, after: u32, delta: i64) {
        if delta == 0 {
            return;
        }
        for slot in &mut self.slots {
            if slot.start != FREE && slot.start > after {
                slot.start = shifted(slot.start, delta);
            }
        }
    }

    /// The definition that started at `from` now starts at `to`.
    fn moved(&mut self, from: u32, to: u32) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.start == from) {
            slot.start = to;
        }
    }

    fn starts(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().map(|s| s.start).filter(|&s| s != FREE)
    }
}

/// Whether the definition starting at `start` has the key `key`, as read.
fn key_is(text: &str, start: usize, key: &str) -> bool {
    let definition = definition_at(text, start);
    read_part(text, &definition.key, definition.line.end, Part::Key, "")
        .is_ok_and(|read| read == key)
}

/// The values of last definitions that are written with escapes (or continuations), read,
/// each kept once: `get` hands them out without reading them again. Sorted by the start of
/// their definition.
#[derive(Debug, Clone, Default)]
struct Unescaped {
    /// (definition start, range in `values`).
    entries: Vec<(u32, Range<u32>)>,
    values: String,
}

impl Unescaped {
    fn of(text: &str, index: &Index) -> Self {
        let mut unescaped = Self::default();
        for start in index.starts() {
            unescaped.read(text, start);
        }
        unescaped.entries.sort_unstable_by_key(|(start, _)| *start);
        unescaped
    }

    /// Appends the value of the definition at `start` if it needs reading.
    fn read(&mut self, text: &str, start: u32) {
        let definition = definition_at(text, start as usize);
        // The key only names the value in a message, and this text was read whole before.
        if let Ok(Cow::Owned(read)) = read_part(
            text,
            &definition.value,
            definition.line.end,
            Part::Value,
            "",
        ) {
            let from = offset(self.values.len());
            self.values.push_str(&read);
            self.entries.push((start, from..offset(self.values.len())));
        }
    }

    fn position(&self, start: u32) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by_key(&start, |(s, _)| *s)
    }

    fn get(&self, start: u32) -> Option<&str> {
        let (_, range) = &self.entries[self.position(start).ok()?];
        self.values.get(range.start as usize..range.end as usize)
    }

    /// The value of the definition at `start` changed: read it again. Its old form stays in
    /// `values`, unreferenced; edits are few.
    fn remove(&mut self, start: u32) {
        if let Ok(at) = self.position(start) {
            self.entries.remove(at);
        }
    }

    fn set(&mut self, text: &str, start: u32) {
        self.remove(start);
        let before = self.entries.len();
        self.read(text, start);
        if self.entries.len() > before
            && let Some(entry) = self.entries.pop()
        {
            let at = self.position(start).unwrap_or_else(|at| at);
            self.entries.insert(at, entry);
        }
    }

    fn shift(&mut self, after: u32, delta: i64) {
        for (start, _) in &mut self.entries {
            if *start > after {
                *start = shifted(*start, delta);
            }
        }
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

/// The reader as it was before it became a stream (every logical line's characters held in
/// vectors, 16 bytes a character): slow and heavy, but written straight from the JDK's
/// `LineReader` and `loadConvert` and checked by the tests above on its own, so it is the
/// independent answer the stream must give on any text.
#[cfg(test)]
mod reference {
    #![allow(dead_code)]

    use std::ops::Range;

    use super::{Part, Result, Tail, escape_error};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Entry {
        pub(super) key: String,
        pub(super) value: String,
        /// Bytes of the value as written, escapes and continuations included, up to the end of the
        /// logical line (a trailing continuation backslash included).
        pub(super) value_span: Range<usize>,
        /// Bytes of the whole logical line, from its first non-blank character to the end of its
        /// last continuation line, line terminator excluded.
        pub(super) line_span: Range<usize>,
        /// The line is a key alone, with no separator: a new value needs a `=` before it.
        pub(super) bare_key: bool,
    }

    /// Every definition of `text` and the state its end leaves the reader in.
    pub(super) fn read(text: &str) -> Result<(Vec<Entry>, Tail)> {
        let (lines, tail) = logical_lines(text);
        let entries = lines
            .iter()
            .map(|line| split_entry(text, line))
            .collect::<Result<_>>()?;
        Ok((entries, tail))
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
    fn is_blank_char(c: char) -> bool {
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
                    if is_blank_char(c) || (!continued && (c == '\r' || c == '\n')) {
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
            if is_blank_char(c) && !escaped {
                value_start = key_len + 1;
                bare_key = false;
                break;
            }
            escaped = c == '\\' && !escaped;
            key_len += 1;
        }
        while value_start < limit {
            let c = chars[value_start].1;
            if !is_blank_char(c) {
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Properties {
        Properties::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// Every definition, where it is and what it reads as, in file order.
    fn definitions(conf: &Properties) -> Vec<(Definition, String, String)> {
        Lines::new(&conf.text, 0)
            .map(|line| {
                let definition = split(&conf.text, line);
                let key = read_part(&conf.text, &definition.key, line.end, Part::Key, "")
                    .expect("key")
                    .into_owned();
                let value = read_part(&conf.text, &definition.value, line.end, Part::Value, &key)
                    .expect("value")
                    .into_owned();
                (definition, key, value)
            })
            .collect()
    }

    /// What a `Properties` holds besides its text, in a form that does not depend on where the
    /// index put its slots: each key with where its last definition starts, the values kept
    /// unescaped, the last definition and the tail.
    /// Keys (with where their last definition starts and its value), kept unescaped values,
    /// the last definition, the tail.
    type State = (
        Vec<(String, u32, String)>,
        Vec<(u32, String)>,
        Option<u32>,
        Tail,
    );

    fn state(conf: &Properties) -> State {
        let mut keys: Vec<(String, u32, String)> = conf
            .index
            .starts()
            .map(|start| {
                let definition = definition_at(&conf.text, start as usize);
                let key = read_part(
                    &conf.text,
                    &definition.key,
                    definition.line.end,
                    Part::Key,
                    "",
                )
                .expect("key")
                .into_owned();
                let value = conf.get(&key).expect("indexed").to_owned();
                (key, start, value)
            })
            .collect();
        keys.sort();
        let unescaped = conf
            .unescaped
            .entries
            .iter()
            .map(|(start, _)| (*start, conf.unescaped.get(*start).expect("kept").to_owned()))
            .collect();
        (keys, unescaped, conf.last, conf.tail)
    }

    /// An edited `conf` holds exactly what reading its text afresh gives, and every key's value
    /// is its last definition's.
    fn assert_consistent(conf: &Properties) {
        let fresh = parse(conf.text());
        assert_eq!(state(conf), state(&fresh), "{:?}", conf.text());
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for (_, key, value) in definitions(conf) {
            last.insert(key, value);
        }
        for (key, value) in &last {
            assert_eq!(
                conf.get(key),
                Some(value.as_str()),
                "{key:?} in {:?}",
                conf.text()
            );
        }
        assert_eq!(state(conf).0.len(), last.len());
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
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
        conf.set("spark.x", "4").unwrap();
        assert_eq!(conf.text(), "# c\n  spark.x   :  4\nspark.y=1\n");
        assert_eq!(conf.get("spark.x"), Some("4"));
    }

    #[test]
    fn set_escapes_the_value_as_store_does() {
        let mut conf = parse("k=v\n");
        conf.set("k", " a=b:c#d!e\\f\tg\n").unwrap();
        assert_eq!(conf.text(), "k=\\ a\\=b\\:c\\#d\\!e\\\\f\\tg\\n\n");
        assert_eq!(parse(conf.text()).get("k"), Some(" a=b:c#d!e\\f\tg\n"));
    }

    #[test]
    fn set_replaces_only_the_last_definition() {
        let mut conf = parse("k=1\nk=2\n");
        conf.set("k", "3").unwrap();
        assert_eq!(conf.text(), "k=1\nk=3\n");
    }

    #[test]
    fn set_replaces_a_continued_value_whole() {
        let mut conf = parse("k = a,\\\n    b,\\\n    c\nnext=1\n");
        conf.set("k", "z").unwrap();
        assert_eq!(conf.text(), "k = z\nnext=1\n");
        conf.set("next", "2").unwrap();
        assert_eq!(conf.text(), "k = z\nnext=2\n");
    }

    #[test]
    fn set_empties_a_value_written_on_a_continuation_line() {
        // Found by the property test: once empty, the value no longer reaches the blanks that
        // follow, so the definition ends at its continuation backslash.
        let mut conf = parse(" \n=\\\n  =  ");
        conf.set("", "").unwrap();
        assert_eq!(conf.text(), " \n=\\\n  ");
        assert_consistent(&conf);
        conf.set("", "x").unwrap();
        assert_eq!(pairs(conf.text()), vec![pair("", "x")]);
    }

    #[test]
    fn set_on_a_bare_key_adds_a_separator() {
        let mut conf = parse("flag\nother=1\n");
        conf.set("flag", "on").unwrap();
        assert_eq!(conf.text(), "flag=on\nother=1\n");
    }

    #[test]
    fn set_appends_an_absent_key_on_a_new_line() {
        let mut conf = parse("a=1");
        conf.set("b c", "2").unwrap();
        assert_eq!(conf.text(), "a=1\nb\\ c=2\n");

        let mut conf = parse("a=1\r\n");
        conf.set("b", "2").unwrap();
        assert_eq!(conf.text(), "a=1\r\nb=2\r\n");

        let mut conf = parse("");
        conf.set("b", "2").unwrap();
        assert_eq!(conf.text(), "b=2\n");
    }

    #[test]
    fn set_appends_after_a_dangling_continuation_without_joining_it() {
        for text in ["a=1\\", "a=1\\\n", "a=1\\\n   "] {
            let mut conf = parse(text);
            conf.set("b", "2").unwrap();
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
            conf.set("z", "2").unwrap();
            assert_eq!(parse(conf.text()).get("z"), Some("2"), "{:?}", conf.text());
            assert_consistent(&conf);
        }
    }

    #[test]
    fn emptying_a_value_alone_on_a_cr_continued_line_keeps_the_next_definition() {
        // Found by the property test below: `=\` CR `=` LF `u` is "" = "=" and "u" = "". Emptied
        // in place, CR and LF would meet as one break and swallow `u` into the value.
        let mut conf = parse("=\\\r=\nu");
        assert_eq!(pairs(conf.text()), vec![pair("", "="), pair("u", "")]);
        conf.set("", "").unwrap();
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
        conf.set("a", "2").unwrap();
        conf.set("b", "3").unwrap();
        assert_eq!(conf.text(), "a=2\nb=3\n");
    }

    #[test]
    fn set_appends_without_losing_an_empty_definition_made_by_a_final_backslash() {
        // Java reads a last line holding only `\` as "" = "" because the text ends there.
        for text in ["=old\n\\", "=old\n\\\n", "=old\r\n  \\\r"] {
            let mut conf = parse(text);
            assert_eq!(conf.get(""), Some(""), "{text:?}");
            conf.set("b", "2").unwrap();
            assert_eq!(
                pairs(conf.text()),
                vec![pair("", "old"), pair("", ""), pair("b", "2")],
                "{text:?} -> {:?}",
                conf.text()
            );
            assert_consistent(&conf);
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
        fn the_stream_reads_every_text_as_the_reference_reader(text in any_text()) {
            match (reference::read(&text), Properties::parse(&text)) {
                (Ok((entries, tail)), Ok(conf)) => {
                    let ours: Vec<reference::Entry> = definitions(&conf)
                        .into_iter()
                        .map(|(definition, key, value)| reference::Entry {
                            key,
                            value,
                            value_span: definition.value,
                            line_span: definition.line,
                            bare_key: definition.bare_key,
                        })
                        .collect();
                    prop_assert_eq!(ours, entries);
                    prop_assert_eq!(conf.tail, tail);
                    assert_consistent(&conf);
                }
                (Err(expected), Err(error)) => prop_assert_eq!(error, expected),
                (expected, got) => prop_assert!(false, "{text:?}: reference {expected:?}, stream {:?}", got.map(|c| c.text)),
            }
        }

        #[test]
        fn a_series_of_edits_holds_what_reading_the_text_afresh_gives(
            text in any_text(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any_text(), any::<bool>()), 1..5),
        ) {
            let Ok(mut conf) = Properties::parse(&text) else {
                return Ok(());
            };
            for (pick, value, existing) in edits {
                let keys: Vec<String> = conf.iter().map(|(k, _)| k.into_owned()).collect();
                let key = if existing && !keys.is_empty() { keys[pick.index(keys.len())].clone() } else { value.clone() };
                conf.set(&key, &value).unwrap();
                prop_assert_eq!(conf.get(&key), Some(value.as_str()));
                prop_assert_eq!(state(&conf), state(&parse(conf.text())));
            }
        }

        #[test]
        fn stored_maps_read_back(
            map in prop::collection::btree_map(any_text(), any_text(), 0..12),
        ) {
            let conf = parse(&store("comment", &map));
            let read: BTreeMap<String, String> = conf
                .iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
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
            let keys: Vec<String> = conf.iter().map(|(k, _)| k.into_owned()).collect();
            let key = if keys.is_empty() { new_key } else { keys[pick.index(keys.len())].clone() };
            let before = conf.clone();
            conf.set(&key, &value).unwrap();

            prop_assert_eq!(conf.get(&key), Some(value.as_str()));
            let reparsed = parse(conf.text());
            prop_assert_eq!(state(&reparsed), state(&conf));

            match before.index.get(&before.text, &key) {
                Some(start) => {
                    // Bytes outside the old value are untouched, other definitions too.
                    let span = definition_at(&before.text, start as usize).value;
                    prop_assert!(conf.text().starts_with(&before.text()[..span.start]));
                    prop_assert!(conf.text().ends_with(&before.text()[span.end..]));
                    let (old, new) = (definitions(&before), definitions(&conf));
                    prop_assert_eq!(new.len(), old.len());
                    for ((old_definition, old_key, old_value), (_, new_key, new_value)) in old.iter().zip(&new) {
                        if old_definition.line.start != start as usize {
                            prop_assert_eq!((old_key, old_value), (new_key, new_value));
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
