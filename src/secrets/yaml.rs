//! YAML in and out, keeping key order and comments (SOPS encrypts comments and hashes values in order).
//!
//! Parsing uses saphyr's event stream for the structure; comments, which YAML parsers drop, are recovered
//! from the source lines outside every scalar and attached to the next key or item, as go-yaml/sops do.
//! Writing is our own: 4-space indentation like sops, plain scalars where YAML reads them back as the same
//! string, block literals for multi-line text, double quotes otherwise.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

use super::error::FormatError;
use super::tree::{format_float, Document, Kind, ListItem, MapItem, Node, Scalar};

/// A parsed YAML document with what the policy reader needs besides the tree.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The top-level mapping.
    pub document: Document,
    /// Anchored nodes by anchor name (`&alex`), in file order.
    pub anchors: Vec<(String, Node)>,
    /// Byte spans of scalars by dotted path (`creation_rules.0.path_regex`), for diagnostics.
    pub spans: HashMap<String, std::ops::Range<usize>>,
}

struct Comment {
    start: usize,
    line: usize,
    trailing: bool,
    text: String,
}

struct Builder<'a> {
    text: &'a str,
    events: std::vec::IntoIter<(Event<'a>, YamlSpan)>,
    char_to_byte: Vec<usize>,
    comments: std::collections::VecDeque<Comment>,
    anchors_by_id: HashMap<usize, Node>,
    /// How many values each anchored node stands for, aliases inside it expanded.
    anchor_sizes: HashMap<usize, usize>,
    anchor_names: HashMap<usize, String>,
    /// Values built so far, aliases expanded: bounded by [`MAX_VALUES`].
    values: usize,
    parsed: Parsed,
}

/// The most values a file may expand to. Aliases copy what they name, so a few lines of nested aliases (a
/// "billion laughs") would otherwise build an exponentially large tree; real secrets files and `.sops.yaml`
/// hold hundreds.
pub const MAX_VALUES: usize = 100_000;

/// Parses `text`, which must hold one document whose root is a mapping (or nothing).
pub fn parse(text: &str) -> Result<Parsed, FormatError> {
    let char_to_byte: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let mut events = Vec::new();
    for event in Parser::new_from_str(text) {
        match event {
            Ok(event) => events.push(event),
            Err(error) => {
                let marker = error.marker();
                return Err(FormatError::Syntax {
                    line: marker.line(),
                    column: marker.col() + 1,
                    message: error.info().to_string(),
                });
            }
        }
    }
    let scalar_ranges: Vec<(usize, usize)> = events
        .iter()
        .filter(|(e, _)| matches!(e, Event::Scalar(..)))
        .map(|(_, span)| {
            (
                char_to_byte[span.start.index().min(char_to_byte.len() - 1)],
                char_to_byte[span.end.index().min(char_to_byte.len() - 1)],
            )
        })
        .collect();
    let comments = find_comments(text, &scalar_ranges);
    let mut builder = Builder {
        text,
        events: events.into_iter(),
        char_to_byte,
        comments: comments.into(),
        anchors_by_id: HashMap::new(),
        anchor_sizes: HashMap::new(),
        anchor_names: HashMap::new(),
        values: 0,
        parsed: Parsed::default(),
    };
    builder.document()?;
    Ok(builder.parsed)
}

/// Finds `#` comments outside scalars: at the start of a line (after indentation) or after whitespace.
fn find_comments(text: &str, scalars: &[(usize, usize)]) -> Vec<Comment> {
    let mut comments = Vec::new();
    let mut offset = 0;
    let mut scalar_index = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let mut previous_blank = true;
        for (i, c) in body.char_indices() {
            let at = offset + i;
            while scalar_index < scalars.len() && scalars[scalar_index].1 <= at {
                scalar_index += 1;
            }
            let inside = scalars[scalar_index..]
                .iter()
                .take_while(|(start, _)| *start <= at)
                .any(|(start, end)| *start <= at && at < *end);
            if c == '#' && previous_blank && !inside {
                comments.push(Comment {
                    start: at,
                    line: number + 1,
                    trailing: !body[..i].trim().is_empty(),
                    text: body[i + 1..].to_string(),
                });
                break;
            }
            previous_blank = c == ' ' || c == '\t';
        }
        offset += line.len();
    }
    comments
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, YamlSpan), FormatError> {
        self.events.next().ok_or_else(|| FormatError::Syntax {
            line: self.text.lines().count().max(1),
            column: 1,
            message: "unexpected end of the document".into(),
        })
    }

    fn byte(&self, span: &YamlSpan) -> usize {
        self.char_to_byte[span.start.index().min(self.char_to_byte.len() - 1)]
    }

    fn shape_error(span: &YamlSpan, message: &str) -> FormatError {
        FormatError::Syntax {
            line: span.start.line(),
            column: span.start.col() + 1,
            message: message.to_string(),
        }
    }

    fn document(&mut self) -> Result<(), FormatError> {
        let mut documents = 0;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(Self::shape_error(
                            &span,
                            "several YAML documents in one file are not supported; use one file per document",
                        ));
                    }
                }
                Event::MappingStart(anchor, _) => {
                    let before = self.values;
                    self.count(1, &span)?;
                    let items = self.mapping(span.start.line(), "")?;
                    self.remember_anchor(anchor, Node::Map(items.clone()), self.values - before);
                    self.parsed.document = items;
                }
                Event::Scalar(ref value, ScalarStyle::Plain, _, None) if value.is_empty() => {}
                Event::Scalar(value, ScalarStyle::Plain, _, _)
                    if matches!(value.as_ref(), "~" | "null") => {}
                _ => {
                    return Err(Self::shape_error(
                        &span,
                        "the document's root must be a mapping (`key: value` lines)",
                    ))
                }
            }
        }
        let rest: Vec<String> = self.comments.drain(..).map(|c| c.text).collect();
        self.parsed
            .document
            .extend(rest.into_iter().map(MapItem::Comment));
        Ok(())
    }

    /// saphyr reports anchors by number only; the name is the `&name` token written just before the node.
    fn note_anchor_name(&mut self, id: usize, start: usize) {
        let token = if self.text[start..].starts_with('&') {
            self.text[start..].split_whitespace().next()
        } else {
            self.text[..start].split_whitespace().next_back()
        };
        if let Some(name) = token.and_then(|t| t.strip_prefix('&')) {
            self.anchor_names.insert(id, name.to_string());
        }
    }

    /// Counts `count` more values, failing once the file expands past [`MAX_VALUES`].
    fn count(&mut self, count: usize, span: &YamlSpan) -> Result<(), FormatError> {
        self.values = self.values.saturating_add(count);
        if self.values > MAX_VALUES {
            return Err(Self::shape_error(
                span,
                &format!("the file expands to more than {MAX_VALUES} values through its aliases (`*name`); write the values out, or split the file"),
            ));
        }
        Ok(())
    }

    fn remember_anchor(&mut self, id: usize, node: Node, size: usize) {
        if id == 0 {
            return;
        }
        self.anchor_sizes.insert(id, size);
        self.anchors_by_id.insert(id, node.clone());
        if let Some(name) = self.anchor_names.get(&id) {
            self.parsed.anchors.push((name.clone(), node));
        }
    }

    fn take_comments_before(&mut self, at: usize, line: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(front) = self.comments.front() {
            if front.start < at || (front.trailing && front.line == line) {
                out.extend(self.comments.pop_front().map(|c| c.text));
            } else {
                break;
            }
        }
        out
    }

    fn mapping(&mut self, _line: usize, path: &str) -> Result<Vec<MapItem>, FormatError> {
        let mut items = Vec::new();
        loop {
            let (event, span) = self.next()?;
            let at = self.byte(&span);
            if let Event::MappingEnd = event {
                items.extend(
                    self.take_comments_before(at, 0)
                        .into_iter()
                        .map(MapItem::Comment),
                );
                return Ok(items);
            }
            items.extend(
                self.take_comments_before(at, span.start.line())
                    .into_iter()
                    .map(MapItem::Comment),
            );
            let key = match event {
                Event::Scalar(value, _, _, _) => value.into_owned(),
                Event::Alias(id) => match self.anchors_by_id.get(&id) {
                    Some(Node::Scalar(s)) => {
                        let text = s.text.clone();
                        self.count(1, &span)?;
                        text
                    }
                    _ => return Err(Self::shape_error(&span, "only text keys are supported")),
                },
                _ => return Err(Self::shape_error(&span, "only text keys are supported")),
            };
            if items
                .iter()
                .any(|i| matches!(i, MapItem::Pair(k, _) if *k == key))
            {
                return Err(Self::shape_error(
                    &span,
                    &format!("the key `{key}` appears twice in one mapping"),
                ));
            }
            let child = join(path, &key);
            let value = self.node(&child)?;
            items.push(MapItem::Pair(key, value));
        }
    }

    fn sequence(&mut self, path: &str) -> Result<Vec<ListItem>, FormatError> {
        let mut items = Vec::new();
        let mut index = 0;
        loop {
            let (event, span) = self.next()?;
            let at = self.byte(&span);
            if let Event::SequenceEnd = event {
                items.extend(
                    self.take_comments_before(at, 0)
                        .into_iter()
                        .map(ListItem::Comment),
                );
                return Ok(items);
            }
            items.extend(
                self.take_comments_before(at, span.start.line())
                    .into_iter()
                    .map(ListItem::Comment),
            );
            let child = join(path, &index.to_string());
            index += 1;
            let node = self.node_from(event, span, &child)?;
            items.push(ListItem::Node(node));
        }
    }

    fn node(&mut self, path: &str) -> Result<Node, FormatError> {
        let (event, span) = self.next()?;
        self.node_from(event, span, path)
    }

    fn node_from(
        &mut self,
        event: Event<'a>,
        span: YamlSpan,
        path: &str,
    ) -> Result<Node, FormatError> {
        let before = self.values;
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, &span)?;
                let start = self.byte(&span);
                let end = self.char_to_byte[span.end.index().min(self.char_to_byte.len() - 1)];
                self.parsed.spans.insert(path.to_string(), start..end);
                let tag = tag.map(|t| t.suffix.clone());
                let node = scalar_node(&value, style, tag.as_deref())
                    .map_err(|m| Self::shape_error(&span, &m))?;
                if anchor != 0 {
                    self.note_anchor_name(anchor, start);
                }
                self.remember_anchor(anchor, node.clone(), 1);
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, &span)?;
                let start = self.byte(&span);
                if anchor != 0 {
                    self.note_anchor_name(anchor, start);
                }
                let node = Node::Map(self.mapping(span.start.line(), path)?);
                self.remember_anchor(anchor, node.clone(), self.values - before);
                Ok(node)
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, &span)?;
                let start = self.byte(&span);
                if anchor != 0 {
                    self.note_anchor_name(anchor, start);
                }
                let node = Node::List(self.sequence(path)?);
                self.remember_anchor(anchor, node.clone(), self.values - before);
                Ok(node)
            }
            Event::Alias(id) => {
                let size = self.anchor_sizes.get(&id).copied().unwrap_or(1);
                // Counted before the copy is made: the copy is what would exhaust memory.
                self.count(size, &span)?;
                self.anchors_by_id
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Self::shape_error(&span, "an alias to an unknown anchor"))
            }
            _ => Err(Self::shape_error(&span, "unexpected YAML structure")),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The node a scalar event stands for, typed as go-yaml types it (YAML 1.2 core schema).
fn scalar_node(value: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Node, String> {
    let plain = matches!(style, ScalarStyle::Plain);
    let kind = match tag {
        Some("str") => Some(Kind::Str),
        Some("int") => Some(Kind::Int),
        Some("float") => Some(Kind::Float),
        Some("bool") => Some(Kind::Bool),
        Some("null") => return Ok(Node::Null),
        Some(other) => return Err(format!("the tag `!!{other}` is not supported")),
        None if plain => None,
        None => Some(Kind::Str),
    };
    match kind {
        Some(Kind::Str) => Ok(Node::Scalar(Scalar::string(value))),
        Some(kind) => typed(value, kind)
            .map(Node::Scalar)
            .ok_or_else(|| format!("`{}` is not a valid {}", value, kind.tag())),
        None => Ok(resolve_plain(value)),
    }
}

/// What a plain scalar means.
pub fn resolve_plain(value: &str) -> Node {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        _ => {}
    }
    for kind in [Kind::Bool, Kind::Int, Kind::Float] {
        if let Some(scalar) = typed(value, kind) {
            return Node::Scalar(scalar);
        }
    }
    Node::Scalar(Scalar::string(value))
}

fn typed(value: &str, kind: Kind) -> Option<Scalar> {
    let text = match kind {
        Kind::Bool => match value {
            "true" | "True" | "TRUE" => "true".to_string(),
            "false" | "False" | "FALSE" => "false".to_string(),
            _ => return None,
        },
        Kind::Int => parse_int(value)?.to_string(),
        Kind::Float => format_float(parse_float(value)?),
        _ => value.to_string(),
    };
    Some(Scalar { kind, text })
}

fn parse_int(value: &str) -> Option<i64> {
    let (negative, digits) = match value.as_bytes().first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = digits.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = digits.strip_prefix("0b") {
        (2, binary)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_float(value: &str) -> Option<f64> {
    match value {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let body = value.trim_start_matches(['-', '+']);
    let mut chars = body.chars().peekable();
    let mut digits = 0;
    while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
        chars.next();
        digits += 1;
    }
    if chars.peek() == Some(&'.') {
        chars.next();
        while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
            chars.next();
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if matches!(chars.peek(), Some('e' | 'E')) {
        chars.next();
        if matches!(chars.peek(), Some('-' | '+')) {
            chars.next();
        }
        chars.peek()?;
    }
    if !chars.all(|c| c.is_ascii_digit()) || value.len() - body.len() > 1 {
        return None;
    }
    value.parse().ok()
}

/// Writes `document` as YAML.
pub fn emit(document: &Document) -> String {
    let mut out = String::new();
    emit_map(document, 0, 4, &mut out);
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn emit_comment(out: &mut String, indent: usize, text: &str) {
    pad(out, indent);
    out.push('#');
    out.push_str(text);
    out.push('\n');
}

/// `keys` is where this mapping's keys start; `nested` where the blocks under them start.
fn emit_map(items: &[MapItem], keys: usize, nested: usize, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        match item {
            MapItem::Comment(text) => emit_comment(out, keys, text),
            MapItem::Pair(key, value) => {
                // The first key of a mapping inside a sequence item continues the `- ` line.
                if !(i == 0 && out.ends_with("- ")) {
                    pad(out, keys);
                }
                out.push_str(&scalar_text(&Scalar::string(key.clone()), nested, true));
                out.push(':');
                emit_value(value, nested, out);
            }
        }
    }
}

fn emit_value(value: &Node, nested: usize, out: &mut String) {
    match value {
        Node::Null => out.push_str(" null\n"),
        Node::Scalar(scalar) => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, nested, false));
            out.push('\n');
        }
        Node::Map(items) if !items.iter().any(|i| matches!(i, MapItem::Pair(..))) => {
            out.push_str(" {}\n");
            for item in items {
                if let MapItem::Comment(text) = item {
                    emit_comment(out, nested, text);
                }
            }
        }
        Node::Map(items) => {
            out.push('\n');
            emit_map(items, nested, nested + 4, out);
        }
        Node::List(items) if !items.iter().any(|i| matches!(i, ListItem::Node(_))) => {
            out.push_str(" []\n");
            for item in items {
                if let ListItem::Comment(text) = item {
                    emit_comment(out, nested, text);
                }
            }
        }
        Node::List(items) => {
            out.push('\n');
            emit_list(items, nested, out);
        }
    }
}

fn emit_list(items: &[ListItem], dash: usize, out: &mut String) {
    for item in items {
        match item {
            ListItem::Comment(text) => emit_comment(out, dash, text),
            ListItem::Node(node) => {
                pad(out, dash);
                match node {
                    Node::Map(inner) if matches!(inner.first(), Some(MapItem::Pair(..))) => {
                        out.push_str("- ");
                        emit_map(inner, dash + 2, dash + 4, out);
                    }
                    Node::List(inner) if inner.iter().any(|i| matches!(i, ListItem::Node(_))) => {
                        out.push_str("-\n");
                        emit_list(inner, dash + 4, out);
                    }
                    other => {
                        out.push('-');
                        emit_value(other, dash + 4, out);
                    }
                }
            }
        }
    }
}

/// A scalar as YAML text; `indent` is where a block literal's lines go.
fn scalar_text(scalar: &Scalar, indent: usize, is_key: bool) -> String {
    match scalar.kind {
        Kind::Int | Kind::Bool => scalar.text.clone(),
        Kind::Float => match scalar.text.as_str() {
            "+Inf" => ".inf".into(),
            "-Inf" => "-.inf".into(),
            "NaN" => ".nan".into(),
            text => text.into(),
        },
        Kind::Str | Kind::Time | Kind::Bytes => {
            let text = scalar.text.as_str();
            if is_plain_safe(text) {
                text.to_string()
            } else if !is_key && literal_block_fits(text) {
                literal_block(text, indent)
            } else {
                double_quoted(text)
            }
        }
    }
}

fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() {
        return false;
    }
    if text.ends_with([' ', '\t', ':'])
        || text.contains(": ")
        || text.contains(" #")
        || text.chars().any(|c| c.is_control())
    {
        return false;
    }
    // Strings another reader would take for something else keep their quotes (YAML 1.1 booleans too).
    let lower = text.to_ascii_lowercase();
    if matches!(lower.as_str(), "y" | "n" | "yes" | "no" | "on" | "off") {
        return false;
    }
    if text.len() >= 10
        && text.as_bytes()[4] == b'-'
        && text[..4].bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    matches!(
        resolve_plain(text),
        Node::Scalar(Scalar {
            kind: Kind::Str,
            ..
        })
    )
}

fn literal_block_fits(text: &str) -> bool {
    text.contains('\n')
        && !text.starts_with([' ', '\t', '\n'])
        && !text.chars().any(|c| c.is_control() && c != '\n')
        && !text.lines().any(|l| l.ends_with([' ', '\t']))
}

fn literal_block(text: &str, indent: usize) -> String {
    let body = text.trim_end_matches('\n');
    let trailing = text.len() - body.len();
    let mut out = String::from(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# head\ndb:\n    user: deploy # trailing\n    port: 5432\n    ratio: 0.75\n    on: true\nlist:\n    - 80\n    # between\n    - \"443\"\nmulti: |\n    a\n    b\nempty: \"\"\nquoted: \"a: b # c\"\n";

    #[test]
    fn parses_types_order_and_comments() {
        let parsed = parse(SAMPLE).unwrap();
        let doc = &parsed.document;
        assert_eq!(doc[0], MapItem::Comment(" head".into()));
        let MapItem::Pair(key, Node::Map(db)) = &doc[1] else {
            panic!("{doc:?}")
        };
        assert_eq!(key, "db");
        assert_eq!(db[0], MapItem::Comment(" trailing".into()));
        assert_eq!(
            db[2],
            MapItem::Pair(
                "port".into(),
                Node::Scalar(Scalar {
                    kind: Kind::Int,
                    text: "5432".into()
                })
            )
        );
        assert_eq!(
            db[3],
            MapItem::Pair(
                "ratio".into(),
                Node::Scalar(Scalar {
                    kind: Kind::Float,
                    text: "0.75".into()
                })
            )
        );
        let MapItem::Pair(_, Node::List(list)) = &doc[2] else {
            panic!()
        };
        assert_eq!(list[1], ListItem::Comment(" between".into()));
        assert_eq!(list[2], ListItem::Node(Node::Scalar(Scalar::string("443"))));
        assert_eq!(
            super::super::tree::lookup(doc, "multi"),
            Some(&Node::Scalar(Scalar::string("a\nb\n")))
        );
        assert_eq!(
            super::super::tree::lookup(doc, "quoted"),
            Some(&Node::Scalar(Scalar::string("a: b # c")))
        );
    }

    #[test]
    fn emitted_yaml_reads_back_the_same() {
        let parsed = parse(SAMPLE).unwrap();
        let text = emit(&parsed.document);
        let again = parse(&text).unwrap();
        assert_eq!(again.document, parsed.document, "{text}");
    }

    #[test]
    fn awkward_strings_survive_a_round_trip() {
        for value in [
            "",
            " lead",
            "trail ",
            "yes",
            "123",
            "1.5",
            "true",
            "null",
            "- dash",
            "#hash",
            "a\nb",
            "a\n\n",
            "tab\there",
            "2024-01-01",
            "quote\"s",
            "ünï ✓",
            "key: value",
            "ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]",
            "x\r\ny",
        ] {
            let doc = vec![MapItem::Pair(
                "k".into(),
                Node::Scalar(Scalar::string(value)),
            )];
            let text = emit(&doc);
            let again = parse(&text).unwrap_or_else(|e| panic!("{value:?}: {e}\n{text}"));
            assert_eq!(again.document, doc, "{value:?}\n{text}");
        }
    }

    #[test]
    fn anchors_are_named_and_aliases_resolved() {
        let parsed =
            parse("keys:\n  - &alex age1aaa\n  - &host age1bbb\nrules:\n  - age: [*alex, *host]\n")
                .unwrap();
        let names: Vec<&str> = parsed.anchors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alex", "host"]);
        let node = super::super::tree::lookup(&parsed.document, "rules.0.age.1").unwrap();
        assert_eq!(node, &Node::Scalar(Scalar::string("age1bbb")));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let error = parse("a: b\n  c: d\n").unwrap_err();
        assert!(
            matches!(error, FormatError::Syntax { line: 2, .. }),
            "{error}"
        );
    }
}
