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

/// Whether a relative path, with its `..` taken literally, never climbs above where it starts.
pub fn stays_inside(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_stays_inside_unless_its_dots_climb_out() {
        assert!(stays_inside(Path::new("a/../b/./c")));
        assert!(stays_inside(Path::new("a/..")));
        assert!(!stays_inside(Path::new("a/../../b")));
        assert!(!stays_inside(Path::new("/etc")));
    }

    #[test]
    fn dots_collapse_without_the_filesystem() {
        assert_eq!(
            normalize_lexically(Path::new("/r/a/../b/./c")),
            PathBuf::from("/r/b/c")
        );
    }
}
