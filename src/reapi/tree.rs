//! An action's input root as REAPI wants it: a Merkle tree of `Directory` messages over the task's declared
//! inputs, every blob addressed by its SHA-256 and size.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use sha2::{Digest as _, Sha256};

use super::proto::{Digest, Directory, DirectoryNode, FileNode, SymlinkNode};
use super::ReapiError;

/// Blobs up to this size are kept in memory once read; larger ones are read again (and checked) when sent.
const KEEP_IN_MEMORY: u64 = 1 << 20;

/// Where a blob's bytes come from when it has to be uploaded.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// Already in memory (a message, or a small file).
    Bytes(Arc<Vec<u8>>),
    /// A file, read again when sent; its digest is checked then, so a file changed meanwhile is never sent
    /// under the old digest.
    File(PathBuf),
}

/// Every blob an action needs on the server, by digest.
#[derive(Debug, Default)]
pub struct Blobs {
    by_hash: HashMap<String, (Digest, BlobSource)>,
}

impl Blobs {
    /// Adds a message's encoding and returns its digest.
    pub fn add_message(&mut self, message: &impl Message) -> Digest {
        self.add_bytes(message.encode_to_vec())
    }

    /// Adds bytes and returns their digest.
    pub fn add_bytes(&mut self, bytes: Vec<u8>) -> Digest {
        let digest = digest_of(&bytes);
        self.by_hash
            .entry(digest.hash.clone())
            .or_insert_with(|| (digest.clone(), BlobSource::Bytes(Arc::new(bytes))));
        digest
    }

    /// Adds a blob known by digest.
    pub fn add(&mut self, digest: Digest, source: BlobSource) {
        self.by_hash
            .entry(digest.hash.clone())
            .or_insert((digest, source));
    }

    /// Every digest.
    pub fn digests(&self) -> Vec<Digest> {
        self.by_hash.values().map(|(d, _)| d.clone()).collect()
    }

    /// The source of the blob with this hash.
    pub fn source(&self, hash: &str) -> Option<&BlobSource> {
        self.by_hash.get(hash).map(|(_, s)| s)
    }

    /// How many blobs.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The SHA-256 digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One input as found on disk.
#[derive(Debug, Clone)]
enum Node {
    File { digest: Digest, executable: bool },
    Link { target: String },
}

/// Builds an input root from files under a directory.
#[derive(Debug, Default)]
pub struct InputRoot {
    /// Each directory (relative path, `""` for the root) and what it holds.
    dirs: BTreeMap<String, BTreeMap<String, Node>>,
}

impl InputRoot {
    /// An empty tree.
    pub fn new() -> InputRoot {
        let mut dirs = BTreeMap::new();
        dirs.insert(String::new(), BTreeMap::new());
        InputRoot { dirs }
    }

    /// Makes sure the directory `relative` exists in the tree (a task's working directory, even if it holds
    /// no input).
    pub fn add_dir(&mut self, relative: &str) {
        let mut path = String::new();
        for part in relative.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            self.dirs.entry(path.clone()).or_default();
        }
    }

    /// Adds the file (or link) at `root/relative`, reading it to digest it; `expected` is the BLAKE3 the cache
    /// key was computed from, and a file whose content no longer has it is refused (it changed during the run,
    /// and the result would be stored under a key it does not belong to).
    pub fn add_file(
        &mut self,
        root: &Path,
        relative: &str,
        expected: Option<&[u8; 32]>,
        blobs: &mut Blobs,
    ) -> Result<(), ReapiError> {
        use std::os::unix::fs::PermissionsExt;
        let full = root.join(relative);
        let io = |source: std::io::Error| ReapiError::Input {
            path: relative.to_owned(),
            reason: source.to_string(),
        };
        let meta = std::fs::symlink_metadata(&full).map_err(io)?;
        let node = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(io)?;
            Node::Link {
                target: target.to_string_lossy().into_owned(),
            }
        } else {
            let bytes = std::fs::read(&full).map_err(io)?;
            if let Some(expected) = expected {
                if blake3::hash(&bytes).as_bytes() != expected {
                    return Err(ReapiError::Input {
                        path: relative.to_owned(),
                        reason: "it changed after its cache key was computed".into(),
                    });
                }
            }
            let digest = digest_of(&bytes);
            let source = if (bytes.len() as u64) <= KEEP_IN_MEMORY {
                BlobSource::Bytes(Arc::new(bytes))
            } else {
                BlobSource::File(full.clone())
            };
            blobs.add(digest.clone(), source);
            Node::File {
                digest,
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        };
        let (parent, name) = match relative.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", relative),
        };
        self.add_dir(parent);
        self.dirs
            .entry(parent.to_owned())
            .or_default()
            .insert(name.to_owned(), node);
        Ok(())
    }

    /// Encodes every directory, deepest first, adds each to `blobs` and returns the root's digest.
    pub fn finish(self, blobs: &mut Blobs) -> Digest {
        let mut digests: HashMap<String, Digest> = HashMap::new();
        // Longer paths first: every child is encoded before its parent needs its digest.
        let mut paths: Vec<&String> = self.dirs.keys().collect();
        paths.sort_by_key(|p| {
            std::cmp::Reverse(if p.is_empty() {
                0
            } else {
                p.split('/').count()
            })
        });
        for path in paths {
            let mut directory = Directory::default();
            for (name, node) in &self.dirs[path] {
                match node {
                    Node::File { digest, executable } => directory.files.push(FileNode {
                        name: name.clone(),
                        digest: Some(digest.clone()),
                        is_executable: *executable,
                        node_properties: None,
                    }),
                    Node::Link { target } => directory.symlinks.push(SymlinkNode {
                        name: name.clone(),
                        target: target.clone(),
                        node_properties: None,
                    }),
                }
            }
            // Child directories, by name (the map is sorted, and so must the message be).
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            for (child, digest) in self
                .dirs
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .filter(|(p, _)| !p.is_empty() && *p != path && !p[prefix.len()..].contains('/'))
                .filter_map(|(p, _)| Some((p[prefix.len()..].to_owned(), digests.get(p)?.clone())))
            {
                directory.directories.push(DirectoryNode {
                    name: child,
                    digest: Some(digest),
                });
            }
            directory.directories.sort_by(|a, b| a.name.cmp(&b.name));
            digests.insert(path.clone(), blobs.add_message(&directory));
        }
        digests.remove("").expect("the root is always in the tree")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_trees_have_identical_digests_whatever_the_order_files_were_added() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [("a/b.txt", "b"), ("a/c/d.txt", "d"), ("e.txt", "e")] {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let build = |order: &[&str]| {
            let mut blobs = Blobs::default();
            let mut tree = InputRoot::new();
            for path in order {
                tree.add_file(dir.path(), path, None, &mut blobs).unwrap();
            }
            (tree.finish(&mut blobs), blobs.len())
        };
        let (one, count) = build(&["a/b.txt", "a/c/d.txt", "e.txt"]);
        let (two, _) = build(&["e.txt", "a/c/d.txt", "a/b.txt"]);
        assert_eq!(one, two);
        // Three files and three directories (root, a, a/c).
        assert_eq!(count, 6);
    }

    #[test]
    fn a_file_changed_after_its_key_was_computed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "now").unwrap();
        let mut tree = InputRoot::new();
        let stale = *blake3::hash(b"then").as_bytes();
        let error = tree
            .add_file(dir.path(), "x", Some(&stale), &mut Blobs::default())
            .unwrap_err();
        assert!(
            error.to_string().contains("changed after its cache key"),
            "{error}"
        );
    }

    #[test]
    fn the_empty_directory_has_the_well_known_digest() {
        let mut blobs = Blobs::default();
        let root = InputRoot::new().finish(&mut blobs);
        // SHA-256 of zero bytes: an empty Directory message encodes to nothing.
        assert_eq!(
            root.hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root.size_bytes, 0);
    }
}
