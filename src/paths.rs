//! Path arithmetic shared by the cache (restoring outputs) and the secrets policy (matching rules).

use std::path::{Component, Path, PathBuf};

/// Collapses `.` and `..` without touching the filesystem.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_collapse_without_the_filesystem() {
        assert_eq!(
            normalize_lexically(Path::new("/r/a/../b/./c")),
            PathBuf::from("/r/b/c")
        );
    }
}
