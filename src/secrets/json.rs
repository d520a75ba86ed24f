//! JSON in and out, keeping key order. SOPS reads every JSON number as a float, so cairn does too: the
//! type tag and the MAC depend on it.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::FormatError;
use super::tree::{format_float, Document, Kind, ListItem, MapItem, Node, Scalar};

struct Ordered(Node);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor).map(Ordered)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar {
            kind: Kind::Bool,
            text: v.to_string(),
        }))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Node, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar {
            kind: Kind::Float,
            text: format_float(v),
        }))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar::string(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(Ordered(node)) = seq.next_element()? {
            items.push(ListItem::Node(node));
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut items: Vec<MapItem> = Vec::new();
        while let Some((key, Ordered(value))) = map.next_entry::<String, Ordered>()? {
            if items
                .iter()
                .any(|i| matches!(i, MapItem::Pair(k, _) if *k == key))
            {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            items.push(MapItem::Pair(key, value));
        }
        Ok(Node::Map(items))
    }
}

/// Parses a JSON document whose root is an object.
pub fn parse(text: &str) -> Result<Document, FormatError> {
    let Ordered(node) = serde_json::from_str(text).map_err(|e| FormatError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or("")
            .to_string(),
    })?;
    match node {
        Node::Map(items) => Ok(items),
        _ => Err(FormatError::Shape(
            "the JSON document's root must be an object".into(),
        )),
    }
}

/// Writes `document` as tab-indented JSON, as sops does.
pub fn emit(document: &Document) -> Result<String, FormatError> {
    let mut out = String::new();
    emit_map(document, 0, &mut out)?;
    out.push('\n');
    Ok(out)
}

fn emit_map(items: &[MapItem], depth: usize, out: &mut String) -> Result<(), FormatError> {
    let pairs: Vec<(&String, &Node)> = items
        .iter()
        .filter_map(|i| match i {
            MapItem::Pair(k, v) => Some((k, v)),
            MapItem::Comment(_) => None,
        })
        .collect();
    if pairs.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    out.push_str("{\n");
    for (i, (key, value)) in pairs.iter().enumerate() {
        tabs(out, depth + 1);
        out.push_str(&quote(key));
        out.push_str(": ");
        emit_node(value, depth + 1, out)?;
        out.push_str(if i + 1 < pairs.len() { ",\n" } else { "\n" });
    }
    tabs(out, depth);
    out.push('}');
    Ok(())
}

fn emit_node(node: &Node, depth: usize, out: &mut String) -> Result<(), FormatError> {
    match node {
        Node::Null => out.push_str("null"),
        Node::Map(items) => emit_map(items, depth, out)?,
        Node::List(items) => {
            let nodes: Vec<&Node> = items
                .iter()
                .filter_map(|i| match i {
                    ListItem::Node(n) => Some(n),
                    ListItem::Comment(_) => None,
                })
                .collect();
            if nodes.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push_str("[\n");
            for (i, node) in nodes.iter().enumerate() {
                tabs(out, depth + 1);
                emit_node(node, depth + 1, out)?;
                out.push_str(if i + 1 < nodes.len() { ",\n" } else { "\n" });
            }
            tabs(out, depth);
            out.push(']');
        }
        Node::Scalar(scalar) => match scalar.kind {
            Kind::Bool | Kind::Int => out.push_str(&scalar.text),
            Kind::Float => match scalar.text.parse::<f64>() {
                Ok(v) if v.is_finite() => out.push_str(&scalar.text),
                _ => {
                    return Err(FormatError::Shape(format!(
                        "JSON cannot hold the number `{}`",
                        scalar.text
                    )))
                }
            },
            Kind::Str | Kind::Time | Kind::Bytes => out.push_str(&quote(&scalar.text)),
        },
    }
    Ok(())
}

fn tabs(out: &mut String, depth: usize) {
    out.extend(std::iter::repeat_n('\t', depth));
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_numbers_follow_sops() {
        let doc = parse(
            r#"{"z": 1, "a": {"port": 5432, "ratio": 1.5, "ok": true, "n": null, "l": ["x"]}}"#,
        )
        .unwrap();
        let text = emit(&doc).unwrap();
        assert!(
            text.starts_with("{\n\t\"z\": 1,\n\t\"a\": {\n\t\t\"port\": 5432,"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), doc);
        let MapItem::Pair(_, Node::Scalar(z)) = &doc[0] else {
            panic!()
        };
        assert_eq!(z.kind, Kind::Float);
    }

    #[test]
    fn errors_have_a_position_and_duplicates_are_refused() {
        assert!(matches!(
            parse("{\n  \"a\": }").unwrap_err(),
            FormatError::Syntax { line: 2, .. }
        ));
        assert!(parse(r#"{"a": 1, "a": 2}"#).is_err());
        assert!(parse("[1]").is_err());
    }
}
