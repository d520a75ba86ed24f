//! What Nix's parser rejects and rnix does not: variables that are not in scope (outside any `with`),
//! attributes defined twice, and duplicate formals.
//!
//! Attributes follow Nix's own rules (its parser's `addAttr`): a path `a.b.c` walks through sets created by
//! earlier paths or written as set literals (`rec` ones too); a set literal given to a name that already holds a
//! set merges into it, one level deep; an inherited name is never a set; `${"a"}` is the static name `a`.

use std::collections::{HashMap, HashSet};

use rnix::{SyntaxKind::*, SyntaxNode};

/// Names every Nix expression can use.
const GLOBALS: &[&str] = &[
    "abort",
    "baseNameOf",
    "break",
    "builtins",
    "derivation",
    "derivationStrict",
    "dirOf",
    "false",
    "fetchGit",
    "fetchMercurial",
    "fetchTarball",
    "fetchTree",
    "fromTOML",
    "import",
    "isNull",
    "map",
    "null",
    "placeholder",
    "removeAttrs",
    "scopedImport",
    "throw",
    "toString",
    "true",
];

struct Walker {
    frames: Vec<HashSet<String>>,
    with_depth: usize,
    /// Errors Nix's parser raises (duplicates), which it reports before any scope error.
    duplicates: Vec<(usize, String)>,
    problems: Vec<(usize, String)>,
    text: String,
}

/// An attribute name in a path: static (an identifier, a string or `${"…"}` without interpolation) or not.
enum Key {
    Static(String),
    Dynamic,
}

/// A set as Nix's parser builds it from bindings.
#[derive(Default)]
struct SetDef {
    attrs: HashMap<String, AttrDef>,
    /// Written as `rec { … }`: values put into it through a path (`a.b = …`) see its names.
    recursive: bool,
}

/// One attribute of a set: where it was defined, and what it holds.
struct AttrDef {
    at: usize,
    kind: DefKind,
}

enum DefKind {
    /// A set made by paths (`a.b = …` makes `a`) or merged into.
    Set(SetDef),
    /// A set literal, read only if a later binding reaches into it.
    Literal(SyntaxNode),
    /// `inherit x;`: never a set, whatever `x` is.
    Inherited,
    /// Any other value.
    Value,
}

/// `(byte offset, message)` for each problem.
pub fn check(root: &SyntaxNode) -> Vec<(usize, String)> {
    let mut walker = Walker {
        frames: Vec::new(),
        with_depth: 0,
        duplicates: Vec::new(),
        problems: Vec::new(),
        text: root.text().to_string(),
    };
    walker.visit(root);
    walker.duplicates.sort();
    walker.problems.sort();
    walker.duplicates.extend(walker.problems);
    walker.duplicates
}

fn offset(node: &SyntaxNode) -> usize {
    usize::from(node.text_range().start())
}

fn ident_text(node: &SyntaxNode) -> String {
    node.text().to_string()
}

/// The static name of one attrpath element (an identifier or a string without interpolation).
fn static_key(node: &SyntaxNode) -> Option<String> {
    match node.kind() {
        NODE_IDENT => Some(ident_text(node)),
        NODE_STRING => {
            if node.children().any(|c| c.kind() == NODE_INTERPOL) {
                None
            } else {
                let text = node.text().to_string();
                Some(text.trim_matches('"').to_string())
            }
        }
        // `${"a"}` is the name `a` to Nix's parser.
        NODE_DYNAMIC => {
            let mut inner = node.children();
            match (inner.next(), inner.next()) {
                (Some(only), None) if only.kind() == NODE_STRING => static_key(&only),
                _ => None,
            }
        }
        _ => None,
    }
}

fn key_of(node: &SyntaxNode) -> Key {
    static_key(node).map_or(Key::Dynamic, Key::Static)
}

/// How Nix's error messages show an attribute path.
fn show_path(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| match k {
            Key::Static(name) => name.clone(),
            Key::Dynamic => "\"${..}\"".to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Where Nix places an `inherit`'s names: just after `inherit`, or after its `(from)`.
fn inherit_position(node: &SyntaxNode) -> usize {
    if let Some(from) = node.children().find(|c| c.kind() == NODE_INHERIT_FROM) {
        return usize::from(from.text_range().end());
    }
    node.children_with_tokens()
        .find(|c| c.kind() == TOKEN_INHERIT)
        .map_or(offset(node), |t| usize::from(t.text_range().end()))
}

impl Walker {
    fn in_scope(&self, name: &str) -> bool {
        self.frames.iter().any(|f| f.contains(name))
            || GLOBALS.contains(&name)
            || name.starts_with("__")
    }

    fn position(&self, at: usize) -> String {
        let before = &self.text.as_bytes()[..at.min(self.text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        format!("{line}:{column}")
    }

    fn visit(&mut self, node: &SyntaxNode) {
        match node.kind() {
            NODE_IDENT => {
                let name = ident_text(node);
                if self.with_depth == 0 && !self.in_scope(&name) {
                    self.problems
                        .push((offset(node), format!("undefined variable `{name}`")));
                }
            }
            NODE_LAMBDA => self.lambda(node),
            NODE_LET_IN | NODE_LEGACY_LET => self.bindings(node, true),
            NODE_ATTR_SET => {
                let recursive = node.children_with_tokens().any(|c| c.kind() == TOKEN_REC);
                self.bindings(node, recursive);
            }
            NODE_WITH => {
                let mut children = node.children();
                if let Some(namespace) = children.next() {
                    self.visit(&namespace);
                }
                self.with_depth += 1;
                for child in children {
                    self.visit(&child);
                }
                self.with_depth -= 1;
            }
            NODE_SELECT | NODE_HAS_ATTR => {
                for child in node.children() {
                    if child.kind() == NODE_ATTRPATH {
                        self.attrpath(&child);
                    } else {
                        self.visit(&child);
                    }
                }
            }
            NODE_ATTRPATH => self.attrpath(node),
            _ => {
                for child in node.children() {
                    self.visit(&child);
                }
            }
        }
    }

    /// Only the dynamic parts of an attribute path are expressions.
    fn attrpath(&mut self, node: &SyntaxNode) {
        for part in node.children() {
            match part.kind() {
                NODE_DYNAMIC => {
                    for child in part.children() {
                        self.visit(&child);
                    }
                }
                NODE_STRING => self.visit(&part),
                _ => {}
            }
        }
    }

    fn lambda(&mut self, node: &SyntaxNode) {
        let mut frame = HashSet::new();
        let mut defaults = Vec::new();
        let mut children = node.children();
        if let Some(param) = children.next() {
            match param.kind() {
                NODE_IDENT_PARAM => {
                    frame.extend(
                        param
                            .children()
                            .filter(|c| c.kind() == NODE_IDENT)
                            .map(|c| ident_text(&c)),
                    );
                }
                NODE_PATTERN => {
                    let bound: Vec<SyntaxNode> = param
                        .children()
                        .filter(|c| c.kind() == NODE_PAT_BIND)
                        .flat_map(|b| b.children().filter(|c| c.kind() == NODE_IDENT))
                        .collect();
                    for entry in param.children() {
                        match entry.kind() {
                            NODE_PAT_ENTRY => {
                                let mut parts = entry.children();
                                if let Some(ident) = parts.next() {
                                    let name = ident_text(&ident);
                                    let repeats_bind = bound.iter().any(|b| ident_text(b) == name);
                                    if !frame.insert(name.clone()) || repeats_bind {
                                        self.duplicates.push((
                                            offset(&ident),
                                            format!("duplicate formal function argument `{name}`"),
                                        ));
                                    }
                                }
                                defaults.extend(parts);
                            }
                            NODE_PAT_BIND => {
                                frame.extend(
                                    entry
                                        .children()
                                        .filter(|c| c.kind() == NODE_IDENT)
                                        .map(|c| ident_text(&c)),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                _ => self.visit(&param),
            }
        }
        self.frames.push(frame);
        for default in defaults {
            self.visit(&default);
        }
        for child in children {
            self.visit(&child);
        }
        self.frames.pop();
    }

    /// `let`, `rec { }` (recursive: the names are in scope in the values) and `{ }` (not recursive).
    fn bindings(&mut self, node: &SyntaxNode, recursive: bool) {
        let mut names = HashSet::new();
        let mut set = SetDef::default();
        let mut values = Vec::new();
        let mut body = Vec::new();
        for child in node.children() {
            match child.kind() {
                NODE_ATTRPATH_VALUE => {
                    let mut parts = child.children();
                    let (Some(path), Some(value)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let keys: Vec<Key> = path.children().map(|k| key_of(&k)).collect();
                    if let Some(Key::Static(first)) = keys.first() {
                        names.insert(first.clone());
                    }
                    let kind = if value.kind() == NODE_ATTR_SET {
                        DefKind::Literal(value.clone())
                    } else {
                        DefKind::Value
                    };
                    // Nix points at the start of the attribute path.
                    self.add_attr(&mut set, &keys, kind, offset(&path), true);
                    self.attrpath(&path);
                    values.push((value, keys));
                }
                NODE_INHERIT => {
                    let from = child.children().find(|c| c.kind() == NODE_INHERIT_FROM);
                    let at = inherit_position(&child);
                    for ident in child
                        .children()
                        .filter(|c| c.kind() == NODE_IDENT || c.kind() == NODE_STRING)
                    {
                        let Some(name) = static_key(&ident) else {
                            continue;
                        };
                        names.insert(name.clone());
                        let duplicate = self.inherit(&mut set, &name, at, true);
                        // `inherit x;` reads `x` from the enclosing scope, never from this set; Nix stops at a
                        // duplicate before it looks at scopes.
                        if from.is_none()
                            && !duplicate
                            && self.with_depth == 0
                            && !self.in_scope(&name)
                        {
                            self.problems
                                .push((offset(&ident), format!("undefined variable `{name}`")));
                        }
                    }
                    if let Some(from) = from {
                        values.push((from, Vec::new()));
                    }
                }
                _ => body.push(child),
            }
        }
        if recursive {
            self.frames.push(names);
        }
        for (value, keys) in &values {
            // A value put into a `rec` set through a path is bound in that set, as if written inside it.
            let frames = rec_frames(&set, keys);
            let pushed = frames.len();
            self.frames.extend(frames);
            self.visit(value);
            self.frames.truncate(self.frames.len() - pushed);
        }
        for child in &body {
            self.visit(child);
        }
        if recursive {
            self.frames.pop();
        }
    }

    /// Nix's duplicate-attribute error, reported at `at`, naming where `name` was defined before (`first`).
    fn duplicate(&mut self, at: usize, name: &str, first: usize) {
        let first = self.position(first);
        self.duplicates
            .push((at, format!("attribute `{name}` already defined at {first}")));
    }

    /// `inherit name;` into `set`; whether it was a duplicate.
    fn inherit(&mut self, set: &mut SetDef, name: &str, at: usize, report: bool) -> bool {
        if let Some(existing) = set.attrs.get(name) {
            if report {
                let first = existing.at;
                self.duplicate(at, name, first);
            }
            return true;
        }
        set.attrs.insert(
            name.to_string(),
            AttrDef {
                at,
                kind: DefKind::Inherited,
            },
        );
        false
    }

    /// Adds `keys = value` to `set` as Nix's parser does, reporting (when `report`) what it rejects.
    fn add_attr(&mut self, set: &mut SetDef, keys: &[Key], kind: DefKind, at: usize, report: bool) {
        let Some((last, walk)) = keys.split_last() else {
            return;
        };
        let mut current = set;
        for key in walk {
            // A dynamic name makes a set of its own, which no other binding can reach.
            let Key::Static(name) = key else {
                return;
            };
            let existing = current.attrs.get(name.as_str()).map(|def| def.at);
            if let Some(first) = existing {
                if !self.open_as_set(current, name) {
                    if report {
                        self.duplicate(at, &show_path(keys), first);
                    }
                    return;
                }
            } else {
                current.attrs.insert(
                    name.clone(),
                    AttrDef {
                        at,
                        kind: DefKind::Set(SetDef::default()),
                    },
                );
            }
            let Some(AttrDef {
                kind: DefKind::Set(inner),
                ..
            }) = current.attrs.get_mut(name.as_str())
            else {
                return;
            };
            current = inner;
        }
        let Key::Static(name) = last else {
            return;
        };
        let Some(first) = current.attrs.get(name.as_str()).map(|d| d.at) else {
            current.attrs.insert(name.clone(), AttrDef { at, kind });
            return;
        };
        // Two set literals (or a set made by paths and a literal) merge, one level deep.
        let merges = matches!(kind, DefKind::Literal(_)) && self.open_as_set(current, name);
        if !merges {
            if report {
                self.duplicate(at, &show_path(keys), first);
            }
            return;
        }
        let DefKind::Literal(literal) = kind else {
            return;
        };
        let incoming = self.literal(&literal);
        let Some(AttrDef {
            kind: DefKind::Set(target),
            ..
        }) = current.attrs.get_mut(name.as_str())
        else {
            return;
        };
        let mut clashes = Vec::new();
        for (key, def) in incoming.attrs {
            match target.attrs.get(&key) {
                // Nix reports the one already there, saying where the newcomer is.
                Some(there) => clashes.push((there.at, key, def.at)),
                None => {
                    target.attrs.insert(key, def);
                }
            }
        }
        if report {
            for (there, key, newcomer) in clashes {
                self.duplicate(there, &key, newcomer);
            }
        }
    }

    /// Whether `set[name]` is a set a path may walk into (turning a literal into its attributes), or not (a
    /// value or an inherited name).
    fn open_as_set(&mut self, set: &mut SetDef, name: &str) -> bool {
        let Some(def) = set.attrs.get_mut(name) else {
            return false;
        };
        match &def.kind {
            DefKind::Set(_) => true,
            DefKind::Literal(node) => {
                let node = node.clone();
                def.kind = DefKind::Set(self.literal(&node));
                true
            }
            DefKind::Inherited | DefKind::Value => false,
        }
    }

    /// A set literal's own attributes, as its bindings make them; its mistakes are reported when it is visited.
    fn literal(&mut self, node: &SyntaxNode) -> SetDef {
        let mut set = SetDef {
            recursive: node.children_with_tokens().any(|c| c.kind() == TOKEN_REC),
            ..SetDef::default()
        };
        for child in node.children() {
            match child.kind() {
                NODE_ATTRPATH_VALUE => {
                    let mut parts = child.children();
                    let (Some(path), Some(value)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let keys: Vec<Key> = path.children().map(|k| key_of(&k)).collect();
                    let kind = if value.kind() == NODE_ATTR_SET {
                        DefKind::Literal(value.clone())
                    } else {
                        DefKind::Value
                    };
                    self.add_attr(&mut set, &keys, kind, offset(&path), false);
                }
                NODE_INHERIT => {
                    let at = inherit_position(&child);
                    for ident in child
                        .children()
                        .filter(|c| c.kind() == NODE_IDENT || c.kind() == NODE_STRING)
                    {
                        if let Some(name) = static_key(&ident) {
                            self.inherit(&mut set, &name, at, false);
                        }
                    }
                }
                _ => {}
            }
        }
        set
    }
}

/// The names in scope for a value defined at `keys` in `set`: those of each `rec` set the path goes through.
fn rec_frames(set: &SetDef, keys: &[Key]) -> Vec<HashSet<String>> {
    let mut frames = Vec::new();
    let mut current = set;
    for key in keys.iter().take(keys.len().saturating_sub(1)) {
        let Key::Static(name) = key else {
            break;
        };
        match current.attrs.get(name.as_str()) {
            Some(AttrDef {
                kind: DefKind::Set(inner),
                ..
            }) => {
                if inner.recursive {
                    frames.push(inner.attrs.keys().cloned().collect());
                }
                current = inner;
            }
            _ => break,
        }
    }
    frames
}
