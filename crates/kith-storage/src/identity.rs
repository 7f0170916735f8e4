//! Which node a data directory belongs to: the `node-id` file, written the first time a node
//! opens the directory and checked at every later open.
//!
//! Owns: the file's format (the id in decimal, one line) and its atomic write. Refuses: any
//! other state; a directory without the file (made by an older kith, or by a tool) is taken
//! as anyone's until a node opens it.
//!
//! Why: Raft's safety rests on a node's vote and log staying with its id. Started with
//! another `--id`, a directory would hand one node's vote and log to another; and
//! `kith recover`, which runs with no node, reads the id from here.

use std::io::Write;
use std::path::Path;

use crate::StoreError;
use kith_core::NodeId;

/// The file's name inside the data directory.
pub const NODE_ID_FILE: &str = "node-id";

/// The id recorded in `dir`, if any.
pub fn stored_node_id(dir: &Path) -> Result<Option<NodeId>, StoreError> {
    let path = dir.join(NODE_ID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(e)),
    };
    match text.trim().parse::<NodeId>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(StoreError::Io(std::io::Error::other(format!(
            "{} does not hold a node id",
            path.display()
        )))),
    }
}

/// Records `id` as `dir`'s node, or refuses when the directory belongs to another node.
pub(crate) fn claim(dir: &Path, id: NodeId) -> Result<(), StoreError> {
    match stored_node_id(dir)? {
        Some(stored) if stored == id => Ok(()),
        Some(stored) => Err(StoreError::NodeIdMismatch { stored, given: id }),
        None => write_node_id(dir, id),
    }
}

fn write_node_id(dir: &Path, id: NodeId) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp).map_err(StoreError::Io)?;
        writeln!(file, "{id}").map_err(StoreError::Io)?;
        file.sync_all().map_err(StoreError::Io)?;
    }
    std::fs::rename(&tmp, dir.join(NODE_ID_FILE)).map_err(StoreError::Io)?;
    crate::wal::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_belongs_to_the_first_node_that_opens_it() {
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(stored_node_id(dir.path()).unwrap(), None);
        claim(dir.path(), 3).unwrap();
        claim(dir.path(), 3).unwrap();
        assert_eq!(stored_node_id(dir.path()).unwrap(), Some(3));
        let err = claim(dir.path(), 4).unwrap_err();
        assert!(err.to_string().contains("node 3"), "{err}");
    }
}
