//! Node paths relative to the SyncedTree root: `""` is the root, `"World/Player"` a node.

use crate::ApplyError;

/// The path of the SyncedTree root itself.
pub const ROOT: &str = "";

/// Characters Godot refuses in node names (`Node::set_name` replaces them).
const INVALID_NAME_CHARS: &[char] = &['.', ':', '@', '/', '"', '%'];

/// Longest accepted node name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks that `name` is a valid Godot node name that Godot will not rename.
pub fn validate_name(name: &str) -> Result<(), ApplyError> {
    let reason = if name.is_empty() {
        Some("a node name must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("a node name must be at most 255 bytes")
    } else if name.contains(INVALID_NAME_CHARS) {
        Some("a node name must not contain any of . : @ / \" %")
    } else if name.trim() != name {
        Some("a node name must not start or end with white space")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ApplyError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Checks a path made of valid names joined by `/` (or the root, `""`).
pub fn validate_path(path: &str) -> Result<(), ApplyError> {
    if path == ROOT {
        return Ok(());
    }
    for part in path.split('/') {
        if validate_name(part).is_err() {
            return Err(ApplyError::InvalidPath {
                path: path.to_owned(),
                reason: "each segment must be a valid node name (no '.', '..', empty or absolute segments)".to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks a property name: not empty, at most 255 bytes, no white space at either end. A
/// property path (`Sprite:modulate`, `:position:x`) may name only a descendant of the node:
/// no absolute path, no `..` and no `.` segment before the `:` (else a client owning one node
/// could reach any node of every process).
pub fn validate_property(name: &str) -> Result<(), ApplyError> {
    let node_part = name.split_once(':').map(|(n, _)| n);
    let reason = if name.is_empty() {
        Some("a property name must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("a property name must be at most 255 bytes")
    } else if name.trim() != name {
        Some("a property name must not start or end with white space")
    } else if node_part.is_some_and(|n| {
        n.starts_with('/')
            || n.split('/')
                .any(|seg| seg == ".." || seg == "." && n != ".")
    }) {
        Some("a property path may name only a descendant of the node (no absolute path, no '..' or '.')")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ApplyError::InvalidProperty {
            name: name.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// `join("", "A") == "A"`, `join("A", "B") == "A/B"`.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// `split_parent("A/B") == Some(("A", "B"))`, `split_parent("A") == Some(("", "A"))`,
/// `split_parent("") == None`.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path.is_empty() {
        return None;
    }
    Some(match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("Player_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a.b").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(" a").is_err());
        assert!(validate_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn paths() {
        assert!(validate_path("").is_ok());
        assert!(validate_path("A/B").is_ok());
        assert!(validate_path("/A").is_err());
        assert!(validate_path("A//B").is_err());
        assert!(validate_path("A/../B").is_err());
        assert_eq!(join("", "A"), "A");
        assert_eq!(join("A", "B"), "A/B");
        assert_eq!(split_parent("A/B/C"), Some(("A/B", "C")));
        assert_eq!(split_parent("A"), Some(("", "A")));
        assert_eq!(split_parent(""), None);
    }
}

#[cfg(test)]
mod property_path_tests {
    use super::validate_property;

    #[test]
    fn property_paths_stay_below_their_node() {
        for ok in [
            "position",
            "Sprite:modulate",
            ":position:x",
            "Arm/Hand:rotation",
            ".:position",
        ] {
            assert!(validate_property(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../Main:health",
            "/root/Server:script",
            "A/../../B:x",
            "A/./B:x",
        ] {
            assert!(validate_property(bad).is_err(), "{bad}");
        }
    }
}
