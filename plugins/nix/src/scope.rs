//! What Nix's parser rejects and rnix does not: variables that are not in scope (outside any `with`),
//! attributes defined twice (attribute sets merge only when both definitions are attribute-set literals), and
//! duplicate formals.

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
    problems: Vec<(usize, String)>,
    text: String,
}

/// `(byte offset, message)` for each problem.
pub fn check(root: &SyntaxNode) -> Vec<(usize, String)> {
    let mut walker = Walker {
        frames: Vec::new(),
        with_depth: 0,
        problems: Vec::new(),
        text: root.text().to_string(),
    };
    walker.visit(root);
    walker.problems.sort();
    walker.problems
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
        _ => None,
    }
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
                    for entry in param.children() {
                        match entry.kind() {
                            NODE_PAT_ENTRY => {
                                let mut parts = entry.children();
                                if let Some(ident) = parts.next() {
                                    let name = ident_text(&ident);
                                    if !frame.insert(name.clone()) {
                                        self.problems.push((
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
        // Path → (offset of its first definition, whether it may merge: an attribute-set literal or implied).
        let mut defined: HashMap<Vec<String>, (usize, bool)> = HashMap::new();
        let mut values = Vec::new();
        let mut body = Vec::new();
        for child in node.children() {
            match child.kind() {
                NODE_ATTRPATH_VALUE => {
                    let mut parts = child.children();
                    let (Some(path), Some(value)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let keys: Vec<SyntaxNode> = path.children().collect();
                    let statics: Vec<Option<String>> = keys.iter().map(static_key).collect();
                    if let Some(Some(first)) = statics.first() {
                        names.insert(first.clone());
                    }
                    if statics.iter().all(Option::is_some) {
                        let statics: Vec<String> = statics.into_iter().flatten().collect();
                        let mergeable = value.kind() == NODE_ATTR_SET
                            && !value.children_with_tokens().any(|c| c.kind() == TOKEN_REC);
                        self.define(&mut defined, &statics, &keys, mergeable);
                    }
                    self.attrpath(&path);
                    values.push(value);
                }
                NODE_INHERIT => {
                    let from = child.children().find(|c| c.kind() == NODE_INHERIT_FROM);
                    for ident in child
                        .children()
                        .filter(|c| c.kind() == NODE_IDENT || c.kind() == NODE_STRING)
                    {
                        if let Some(name) = static_key(&ident) {
                            names.insert(name.clone());
                            if let Some((first, _)) = defined.get(&vec![name.clone()]) {
                                let at = self.position(*first);
                                self.problems.push((
                                    offset(&ident),
                                    format!("attribute `{name}` already defined at {at}"),
                                ));
                            } else {
                                defined.insert(vec![name.clone()], (offset(&ident), false));
                            }
                            if from.is_none() {
                                // `inherit x;` reads `x` from the enclosing scope, never from this set.
                                if self.with_depth == 0 && !self.in_scope(&name) {
                                    self.problems.push((
                                        offset(&ident),
                                        format!("undefined variable `{name}`"),
                                    ));
                                }
                            }
                        }
                    }
                    if let Some(from) = from {
                        values.push(from);
                    }
                }
                _ => body.push(child),
            }
        }
        if recursive {
            self.frames.push(names);
        }
        for value in &values {
            self.visit(value);
        }
        for child in &body {
            self.visit(child);
        }
        if recursive {
            self.frames.pop();
        }
    }

    fn define(
        &mut self,
        defined: &mut HashMap<Vec<String>, (usize, bool)>,
        path: &[String],
        keys: &[SyntaxNode],
        mergeable: bool,
    ) {
        for depth in 1..=path.len() {
            let prefix = path[..depth].to_vec();
            // Nix points at the start of the attribute path, for the first definition and the duplicate.
            let at = offset(&keys[0]);
            let last = depth == path.len();
            let merges = if last { mergeable } else { true };
            match defined.get(&prefix) {
                Some(&(first, existing)) if !(existing && merges) => {
                    let name = path[..depth].join(".");
                    let where_ = self.position(first);
                    self.problems.push((
                        at,
                        format!("attribute `{name}` already defined at {where_}"),
                    ));
                    return;
                }
                Some(_) => {}
                None => {
                    defined.insert(prefix, (at, merges));
                }
            }
        }
    }
}
