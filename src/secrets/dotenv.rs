//! dotenv files: `KEY=value` lines and `#` comments; every value is a string and newlines are written `\n`.

use super::error::FormatError;
use super::tree::{Document, MapItem, Node, Scalar};

/// Parses dotenv text.
pub fn parse(text: &str) -> Result<Document, FormatError> {
    let mut items = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            items.push(MapItem::Comment(comment.to_string()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(FormatError::Syntax {
                line: number + 1,
                column: 1,
                message: "expected `KEY=value` or a `#` comment".into(),
            });
        };
        if key.is_empty() {
            return Err(FormatError::Syntax {
                line: number + 1,
                column: 1,
                message: "a line with an empty name before `=`".into(),
            });
        }
        if items
            .iter()
            .any(|i| matches!(i, MapItem::Pair(k, _) if k == key))
        {
            return Err(FormatError::Syntax {
                line: number + 1,
                column: 1,
                message: format!("`{key}` is set twice"),
            });
        }
        items.push(MapItem::Pair(
            key.to_string(),
            Node::Scalar(Scalar::string(value.replace("\\n", "\n"))),
        ));
    }
    Ok(items)
}

/// Writes dotenv text.
pub fn emit(document: &Document) -> Result<String, FormatError> {
    let mut out = String::new();
    for item in document {
        match item {
            MapItem::Comment(text) => {
                out.push('#');
                out.push_str(text);
            }
            MapItem::Pair(key, Node::Scalar(scalar)) => {
                out.push_str(key);
                out.push('=');
                out.push_str(&scalar.text.replace('\n', "\\n"));
            }
            MapItem::Pair(key, Node::Null) => {
                out.push_str(key);
                out.push('=');
            }
            MapItem::Pair(key, _) => {
                return Err(FormatError::Shape(format!(
                    "`{key}` holds a mapping or list, which a dotenv file cannot"
                )))
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_comments_and_newlines() {
        let doc = parse("A=1\n# note\nPEM=line1\\nline2\nEMPTY=\n\n").unwrap();
        assert_eq!(doc.len(), 4);
        assert_eq!(
            emit(&doc).unwrap(),
            "A=1\n# note\nPEM=line1\\nline2\nEMPTY=\n"
        );
        assert!(matches!(
            parse("A=1\nnonsense\n"),
            Err(FormatError::Syntax { line: 2, .. })
        ));
    }
}
