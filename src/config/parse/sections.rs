//! Where a large tasks.toml can be cut into pieces that parse on their own: before a `[tasks.NAME]` header.
//!
//! The TOML parser lexes a whole file before it builds anything, so a file of 100,000 tasks held every token,
//! the parsed document and the tasks made from it at once. Parsed piece by piece, only one piece's tokens and
//! document are alive at a time. Cutting is only done where it cannot change the meaning: after the first cut,
//! every header must be a `[tasks.…]` table, and nothing before it may define `tasks` other than by headers;
//! the caller still falls back to one whole parse on any syntax error in a piece, on a task named in two
//! pieces, or on a piece that defines anything but tasks.

use std::ops::Range;

/// The pieces of `text`, each at least `min_piece` bytes long (but the last), cut only before `[tasks.NAME]`
/// headers; one piece (the whole text) when it cannot be cut safely.
#[cfg(test)]
pub fn pieces(text: &str, min_piece: usize) -> Vec<Range<usize>> {
    pieces_and_tasks(text, min_piece).0
}

/// [`pieces`], and how many `[tasks.NAME]` headers the file has (the tasks' list is made that large at once:
/// growing it by doubling would hold two copies of a large list at the peak).
pub fn pieces_and_tasks(text: &str, min_piece: usize) -> (Vec<Range<usize>>, usize) {
    let whole = vec![Range {
        start: 0,
        end: text.len(),
    }];
    let Some(cuts) = task_headers(text) else {
        return (whole, 0);
    };
    let headers = cuts.len();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        if cut > start && cut - start >= min_piece {
            pieces.push(start..cut);
            start = cut;
        }
    }
    pieces.push(start..text.len());
    (pieces, headers)
}

/// The offsets of every `[tasks.NAME]` header (two keys exactly) at the start of a line, or `None` when the file
/// is not one the pieces can be parsed apart from: another kind of header after the first task header, or
/// `tasks` defined as a key of the root table.
fn task_headers(text: &str) -> Option<Vec<usize>> {
    let bytes = text.as_bytes();
    let mut cuts = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    let mut in_value = false;
    let mut depth = 0usize;
    let mut in_root = true;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'\n' => {
                if depth == 0 {
                    in_value = false;
                }
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = memchr(b'\n', bytes, i).unwrap_or(bytes.len());
                continue;
            }
            b'"' | b'\'' => {
                i = skip_string(bytes, i)?;
                line_start = false;
                continue;
            }
            _ => {}
        }
        if line_start && !in_value && depth == 0 {
            if byte == b'[' {
                match header_kind(bytes, i) {
                    Header::Task => cuts.push(i),
                    Header::TaskPart => {}
                    // `[tasks]` itself, and any other table, only before the first cut: after it, they would
                    // land in a piece that must hold tasks alone.
                    Header::Tasks | Header::Other if cuts.is_empty() => {}
                    Header::Tasks | Header::Other => return None,
                }
                in_root = false;
            } else if in_root && defines_tasks(bytes, i) {
                return None;
            }
        }
        match byte {
            b'=' if depth == 0 => in_value = true,
            b'[' | b'{' if in_value => depth += 1,
            b']' | b'}' if in_value && depth > 0 => depth -= 1,
            _ => {}
        }
        line_start = false;
        i += 1;
    }
    Some(cuts)
}

#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// `[tasks.NAME]`: a cut may come before it.
    Task,
    /// `[tasks.NAME.more]`: part of a task, never a cut.
    TaskPart,
    /// `[tasks]`.
    Tasks,
    /// Anything else, `[[…]]` included.
    Other,
}

fn header_kind(bytes: &[u8], at: usize) -> Header {
    let rest = &bytes[at..];
    let Some(after) = rest.strip_prefix(b"[tasks") else {
        return Header::Other;
    };
    match after.first() {
        Some(b']') if after.get(1) != Some(&b']') => return Header::Tasks,
        Some(b'.') => {}
        _ => return Header::Other,
    }
    // One key after `tasks.`: bare, or quoted without escapes; then `]` ends the header, `.` goes deeper.
    let key = &after[1..];
    let end = match key.first() {
        Some(b'"') => key[1..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b == b'\n')
            .and_then(|p| (key[1 + p] == b'"').then_some(p + 2)),
        Some(b'\'') => key[1..]
            .iter()
            .position(|&b| b == b'\'' || b == b'\n')
            .and_then(|p| (key[1 + p] == b'\'').then_some(p + 2)),
        _ => {
            let n = key
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                .count();
            (n > 0).then_some(n)
        }
    };
    match end.map(|n| key.get(n)) {
        Some(Some(b']')) if key.get(end.unwrap_or(0) + 1) != Some(&b']') => Header::Task,
        Some(Some(b'.')) => Header::TaskPart,
        _ => Header::Other,
    }
}

/// Whether the root-table line at `at` assigns `tasks` (`tasks = …`, `tasks.a = …`, or quoted).
fn defines_tasks(bytes: &[u8], at: usize) -> bool {
    let rest = &bytes[at..];
    let after = rest
        .strip_prefix(b"tasks")
        .or_else(|| rest.strip_prefix(b"\"tasks\""))
        .or_else(|| rest.strip_prefix(b"'tasks'"));
    after.is_some_and(|after| matches!(after.first(), Some(b' ' | b'\t' | b'=' | b'.')))
}

/// The offset just past the string starting at `at` (basic, literal, or their multi-line forms); `None` when
/// it never ends (the whole parse reports it).
fn skip_string(bytes: &[u8], at: usize) -> Option<usize> {
    let quote = bytes[at];
    let triple = bytes.get(at..at + 3) == Some(&[quote, quote, quote][..]);
    let mut i = at + if triple { 3 } else { 1 };
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'\\' && quote == b'"' {
            i += 2;
            continue;
        }
        if byte == b'\n' && !triple {
            return None;
        }
        if byte == quote {
            if !triple {
                return Some(i + 1);
            }
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                // Up to two more quotes may end the content itself (`""""" ` is `""` then the closing three).
                let mut end = i + 3;
                while end < bytes.len() && bytes[end] == quote && end < i + 5 {
                    end += 1;
                }
                return Some(end);
            }
        }
        i += 1;
    }
    None
}

fn memchr(needle: u8, bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str) -> Vec<&str> {
        pieces(text, 0).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn cuts_fall_before_each_task_header_only() {
        let text = "[vars]\na = 1\n[tasks.a]\nrun = \"x\"\n[tasks.a.env]\nK = \"v\"\n[tasks.\"b:{env}\"]\nrun = 'y'\n";
        assert_eq!(
            cut(text),
            [
                "[vars]\na = 1\n",
                "[tasks.a]\nrun = \"x\"\n[tasks.a.env]\nK = \"v\"\n",
                "[tasks.\"b:{env}\"]\nrun = 'y'\n"
            ]
        );
    }

    #[test]
    fn headers_inside_strings_arrays_and_comments_are_not_cuts() {
        let text = "[tasks.a]\nrun = \"\"\"\n[tasks.fake]\n\"\"\"\ndeps = [\n  [\"x\"],\n]\n# [tasks.c]\nx = '''\n[tasks.d]'''\n[tasks.b]\n";
        let pieces = cut(text);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert_eq!(pieces[1], "[tasks.b]\n");
    }

    #[test]
    fn a_file_that_defines_tables_after_its_tasks_is_not_cut() {
        assert_eq!(
            cut("[tasks.a]\nrun = \"x\"\n[settings]\njobs = 2\n").len(),
            1
        );
        assert_eq!(cut("[tasks.a]\nrun = \"x\"\n[[tasks.a.list]]\n").len(), 1);
        assert_eq!(cut("[tasks.a]\nrun = \"x\"\n[tasks]\nb = {}\n").len(), 1);
    }

    #[test]
    fn a_root_that_assigns_tasks_is_not_cut() {
        assert_eq!(cut("tasks = { a = { run = \"x\" } }\n[tasks.b]\n").len(), 1);
        assert_eq!(cut("tasks.a.run = \"x\"\n[tasks.b]\n").len(), 1);
    }

    #[test]
    fn pieces_are_at_least_the_minimum_size() {
        let text: String = (0..100)
            .map(|i| format!("[tasks.t{i}]\nrun = \"true\"\n"))
            .collect();
        let pieces = pieces(&text, 200);
        assert!(pieces.len() > 5 && pieces.len() < 20, "{}", pieces.len());
        assert_eq!(pieces.first().map(|p| p.start), Some(0));
        assert_eq!(pieces.last().map(|p| p.end), Some(text.len()));
        assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
    }
}
