//! The document model shared by the YAML, JSON and dotenv stores: an ordered tree whose leaves are typed
//! scalars and whose comments are kept in place, because SOPS encrypts comments and hashes values in order.

/// A node of a secrets document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A mapping, in file order.
    Map(Vec<MapItem>),
    /// A sequence, in file order.
    List(Vec<ListItem>),
    /// A leaf value.
    Scalar(Scalar),
    /// `null` (or an empty value): never encrypted, never hashed.
    Null,
}

/// An entry of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum MapItem {
    /// `key: value`.
    Pair(String, Node),
    /// A comment line (without its `#`), plaintext or `ENC[…]`.
    Comment(String),
}

/// An entry of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum ListItem {
    /// A value.
    Node(Node),
    /// A comment line (without its `#`).
    Comment(String),
}

/// A leaf: its SOPS type and its canonical text (what is encrypted, except that booleans are hashed and
/// encrypted as `True`/`False`, as SOPS does). In a decrypted tree the text is a secret: it is zeroed when
/// dropped, and `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The type tag written in `ENC[…,type:…]`.
    pub kind: Kind,
    /// The value as text: `42`, `0.75`, `true`, or the string itself.
    pub text: String,
}

impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scalar({}, {} bytes)", self.kind.tag(), self.text.len())
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

/// The value types SOPS records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A floating-point number.
    Float,
    /// A boolean.
    Bool,
    /// A timestamp (read only; written back as a string).
    Time,
    /// Raw bytes (read only).
    Bytes,
}

impl Kind {
    /// The tag SOPS writes.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
            Kind::Time => "time",
            Kind::Bytes => "bytes",
        }
    }

    /// The kind a tag names.
    pub fn from_tag(tag: &str) -> Option<Kind> {
        Some(match tag {
            "str" => Kind::Str,
            "int" => Kind::Int,
            "float" => Kind::Float,
            "bool" => Kind::Bool,
            "time" => Kind::Time,
            "bytes" => Kind::Bytes,
            _ => return None,
        })
    }
}

impl Scalar {
    /// A string leaf.
    pub fn string(text: impl Into<String>) -> Scalar {
        Scalar {
            kind: Kind::Str,
            text: text.into(),
        }
    }

    /// The bytes SOPS encrypts and feeds to the MAC for this value.
    pub fn sops_bytes(&self) -> Vec<u8> {
        match (self.kind, self.text.as_str()) {
            (Kind::Bool, "true") => b"True".to_vec(),
            (Kind::Bool, "false") => b"False".to_vec(),
            _ => self.text.as_bytes().to_vec(),
        }
    }

    /// The leaf a decrypted value of `kind` stands for.
    pub fn from_sops(kind: Kind, plain: String) -> Scalar {
        let text = match kind {
            Kind::Bool => plain.to_ascii_lowercase(),
            _ => plain,
        };
        Scalar { kind, text }
    }
}

/// Formats a float the way Go's `strconv.FormatFloat(f, 'f', -1, 64)` does: shortest round-trip digits,
/// never an exponent.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    format!("{value}")
}

/// The document's top-level mapping.
pub type Document = Vec<MapItem>;

/// Looks a value up by a dotted path (`db.password`); list items are addressed by index (`ports.0`). A key
/// that itself contains dots (`tls.key`) is found too: the longest key that matches wins.
pub fn lookup<'a>(document: &'a Document, path: &str) -> Option<&'a Node> {
    let parts: Vec<&str> = path.split('.').collect();
    lookup_in_map(document, &parts)
}

fn lookup_in_map<'a>(items: &'a [MapItem], parts: &[&str]) -> Option<&'a Node> {
    (1..=parts.len()).rev().find_map(|take| {
        let key = parts[..take].join(".");
        let node = map_get(items, &key)?;
        lookup_in_node(node, &parts[take..])
    })
}

fn lookup_in_node<'a>(node: &'a Node, parts: &[&str]) -> Option<&'a Node> {
    let Some((first, rest)) = parts.split_first() else {
        return Some(node);
    };
    match node {
        Node::Map(items) => lookup_in_map(items, parts),
        Node::List(items) => {
            let index: usize = first.parse().ok()?;
            let item = items
                .iter()
                .filter_map(|i| match i {
                    ListItem::Node(n) => Some(n),
                    ListItem::Comment(_) => None,
                })
                .nth(index)?;
            lookup_in_node(item, rest)
        }
        _ => None,
    }
}

fn map_get<'a>(items: &'a [MapItem], key: &str) -> Option<&'a Node> {
    items.iter().find_map(|item| match item {
        MapItem::Pair(k, v) if k == key => Some(v),
        _ => None,
    })
}

/// Sets `path` (dotted) to `value`, creating mappings on the way; an existing value keeps its place.
pub fn set(document: &mut Document, path: &str, value: Node) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    set_in(document, &parts, value)
}

fn set_in(items: &mut Vec<MapItem>, parts: &[&str], value: Node) -> Result<(), String> {
    let (first, rest) = parts.split_first().ok_or("an empty key")?;
    if first.is_empty() {
        return Err("a key with an empty part".into());
    }
    let slot = items.iter_mut().find_map(|item| match item {
        MapItem::Pair(k, v) if k == first => Some(v),
        _ => None,
    });
    match (slot, rest.is_empty()) {
        (Some(slot), true) => *slot = value,
        (Some(Node::Map(inner)), false) => set_in(inner, rest, value)?,
        (Some(_), false) => return Err(format!("`{first}` holds a value, not a mapping")),
        (None, true) => items.push(MapItem::Pair(first.to_string(), value)),
        (None, false) => {
            let mut inner = Vec::new();
            set_in(&mut inner, rest, value)?;
            items.push(MapItem::Pair(first.to_string(), Node::Map(inner)));
        }
    }
    Ok(())
}

/// Every leaf with its dotted path, in document order (what `cairn secrets ls` shows).
pub fn leaf_paths(document: &Document) -> Vec<String> {
    fn walk(node: &Node, path: &str, out: &mut Vec<String>) {
        match node {
            Node::Map(items) => {
                for item in items {
                    if let MapItem::Pair(k, v) = item {
                        walk(v, &join(path, k), out);
                    }
                }
            }
            Node::List(items) => {
                let nodes = items.iter().filter_map(|i| match i {
                    ListItem::Node(n) => Some(n),
                    ListItem::Comment(_) => None,
                });
                for (i, n) in nodes.enumerate() {
                    walk(n, &join(path, &i.to_string()), out);
                }
            }
            Node::Scalar(_) | Node::Null => out.push(path.to_string()),
        }
    }
    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }
    let mut out = Vec::new();
    walk(&Node::Map(document.clone()), "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        assert_eq!(format_float(0.75), "0.75");
        assert_eq!(format_float(5432.0), "5432");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(1.5e-7), "0.00000015");
    }

    #[test]
    fn set_creates_and_replaces_in_place() {
        let mut doc = vec![MapItem::Pair("a".into(), Node::Scalar(Scalar::string("1")))];
        set(&mut doc, "db.password", Node::Scalar(Scalar::string("x"))).unwrap();
        set(&mut doc, "a", Node::Scalar(Scalar::string("2"))).unwrap();
        assert_eq!(leaf_paths(&doc), ["a", "db.password"]);
        assert_eq!(lookup(&doc, "a"), Some(&Node::Scalar(Scalar::string("2"))));
        assert!(set(&mut doc, "a.b", Node::Null).is_err());
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_scalars_debug_never_shows_its_text() {
        let scalar = Scalar {
            kind: Kind::Str,
            text: "hunter2-secret".into(),
        };
        let shown = format!("{:?}", Node::Scalar(scalar));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("14 bytes"), "{shown}");
    }
}
