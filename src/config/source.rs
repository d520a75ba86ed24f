//! The text of a configuration file, kept whole so any later stage can point into it.

use std::ops::Range;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// A named, cheaply cloned copy of a file's text, which miette can render spans from.
pub type SourceFile = NamedSource<Arc<str>>;

/// A byte range in a [`SourceFile`].
pub type Span = Range<usize>;

/// Converts a byte range into miette's span type.
pub fn to_source_span(span: &Span) -> SourceSpan {
    SourceSpan::from(span.start..span.end)
}

/// The span of `part_offset..part_offset+part_len` within a string value whose whole token (quotes included)
/// covers `token`. When the token holds escapes the decoded text no longer lines up with the source, and we
/// fall back to the whole token rather than point at the wrong characters.
pub fn span_within_string(text: &str, token: &Span, value: &str, part: Range<usize>) -> Span {
    let raw = text.get(token.clone()).unwrap_or("");
    match raw.find(value) {
        Some(offset) if !value.is_empty() => {
            let start = token.start + offset + part.start;
            start..token.start + offset + part.end
        }
        _ => token.clone(),
    }
}

/// 1-based line and column (in characters) of a byte offset, for messages that are not rendered by miette.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_within_plain_string_points_at_part() {
        let text = r#"run = "echo {{x}}""#;
        let token = 6..text.len();
        let span = span_within_string(text, &token, "echo {{x}}", 5..10);
        assert_eq!(&text[span], "{{x}}");
    }

    #[test]
    fn span_within_escaped_string_falls_back_to_token() {
        let text = r#"run = "a\tb {{x}}""#;
        let token = 6..text.len();
        let span = span_within_string(text, &token, "a\tb {{x}}", 4..9);
        assert_eq!(span, token);
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
    }
}
