//! Receiving a snapshot from a peer, piece by piece, into a file in the data directory.
//!
//! Owns the one receive in progress (`snapshot.recv`), keyed by the sender's vote and the
//! snapshot's id. Refuses a piece that does not continue it exactly (its offset must equal
//! the bytes received so far; only offset 0 starts a receive, and it replaces any other), a
//! snapshot past [`SNAPSHOT_BYTES_MAX`], and, once the last piece is in, a file that is not
//! a whole snapshot carrying the announced metadata ([`verify_snapshot`]). So no message can
//! make a node allocate or zero-fill past what it was sent, and nothing is handed to Raft
//! until it is known to install. Deciding whether the sender may send at all (its vote) is
//! the caller's.

use std::path::{Path, PathBuf};

use openraft::raft::InstallSnapshotRequest;
use openraft::{Snapshot, Vote};
use tokio::io::AsyncWriteExt;

use crate::snapshot::{verify_snapshot, SNAPSHOT_BYTES_MAX};
use crate::{StoreError, TypeConfig};
use kith_core::NodeId;

const INBOX_FILE: &str = "snapshot.recv";

/// The receive in progress.
struct Partial {
    vote: Vote<NodeId>,
    snapshot_id: String,
    file: tokio::fs::File,
    received: u64,
}

/// One node's snapshot receive. The caller serialises calls (one receive at a time).
pub struct SnapshotInbox {
    path: PathBuf,
    bytes_max: u64,
    partial: Option<Partial>,
}

impl SnapshotInbox {
    /// An inbox in the data directory `dir`, accepting snapshots up to `SNAPSHOT_BYTES_MAX`.
    /// A partial file left by a crash is removed.
    pub fn new(dir: &Path) -> Self {
        Self::with_bytes_max(dir, SNAPSHOT_BYTES_MAX)
    }

    /// As [`new`](Self::new), with another size bound (for tests).
    pub fn with_bytes_max(dir: &Path, bytes_max: u64) -> Self {
        let mut inbox = SnapshotInbox {
            path: dir.join(INBOX_FILE),
            bytes_max,
            partial: None,
        };
        inbox.finished();
        inbox
    }

    /// Takes one piece. `Ok(None)`: taken, more to come. `Ok(Some(snapshot))`: the last
    /// piece is in and the whole file checked out; install it, then call
    /// [`finished`](Self::finished). An error changed nothing, except that a file that
    /// failed its check is discarded.
    pub async fn receive(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let InstallSnapshotRequest {
            vote,
            meta,
            offset,
            data,
            done,
        } = request;
        let same = self
            .partial
            .as_ref()
            .is_some_and(|p| p.vote == vote && p.snapshot_id == meta.snapshot_id);
        let expected = match &self.partial {
            Some(p) if same => p.received,
            _ => 0,
        };
        if offset != expected && offset != 0 {
            return Err(StoreError::SnapshotOffset {
                expected,
                got: offset,
            });
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= self.bytes_max)
            .ok_or(StoreError::SnapshotTooLarge {
                bytes_max: self.bytes_max,
            })?;
        if offset == 0 {
            // A new snapshot, a new sender, or the same one starting over (after a timeout
            // it sends again from the start).
            // A new file, never the old one truncated: an install may still be reading the
            // last file (its sender gave up waiting), and its inode lives on until it is done.
            self.finished();
            let file = tokio::fs::File::create_new(&self.path)
                .await
                .map_err(StoreError::Io)?;
            self.partial = Some(Partial {
                vote,
                snapshot_id: meta.snapshot_id.clone(),
                file,
                received: 0,
            });
        }
        let partial = self.partial.as_mut().expect("set above or continued");
        // tokio's file writes in the background; the flush waits until the OS has it all.
        partial
            .file
            .write_all(&data)
            .await
            .map_err(StoreError::Io)?;
        partial.file.flush().await.map_err(StoreError::Io)?;
        partial.received = end;
        if !done {
            return Ok(None);
        }
        self.partial = None;
        let (path, checked_meta) = (self.path.clone(), meta.clone());
        let checked = tokio::task::spawn_blocking(move || verify_snapshot(&path, &checked_meta))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))
            .and_then(|checked| checked);
        if let Err(e) = checked {
            self.finished();
            return Err(e);
        }
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(StoreError::Io)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }

    /// Drops the received file (installed, refused, or given up).
    pub fn finished(&mut self) {
        self.partial = None;
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "could not remove the received snapshot file");
            }
        }
    }

    /// Bytes of the receive in progress (0 for none).
    pub fn received(&self) -> u64 {
        self.partial.as_ref().map_or(0, |p| p.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::SnapshotMeta;

    fn piece(
        id: &str,
        term: u64,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(term, 1),
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: id.into(),
            },
            offset,
            data: data.to_vec(),
            done,
        }
    }

    #[tokio::test]
    async fn pieces_must_continue_the_receive_exactly() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut inbox = SnapshotInbox::with_bytes_max(dir.path(), 100);
        assert!(inbox
            .receive(piece("a", 1, 0, b"abc", false))
            .await
            .unwrap()
            .is_none());
        for offset in [1, 2, 4, 1 << 40] {
            let err = inbox
                .receive(piece("a", 1, offset, b"d", false))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::SnapshotOffset { expected: 3, .. }),
                "{err}"
            );
        }
        // Another snapshot or another vote can only start at 0.
        let err = inbox
            .receive(piece("b", 1, 3, b"d", false))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::SnapshotOffset { expected: 0, .. }),
            "{err}"
        );
        let err = inbox
            .receive(piece("a", 2, 3, b"d", false))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::SnapshotOffset { expected: 0, .. }),
            "{err}"
        );
        assert_eq!(inbox.received(), 3);
        inbox
            .receive(piece("a", 1, 3, b"def", false))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(INBOX_FILE)).unwrap(),
            b"abcdef"
        );
        // Past the bound: refused, and the receive stays as it was.
        let err = inbox
            .receive(piece("a", 1, 6, &[0; 95], false))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::SnapshotTooLarge { bytes_max: 100 }),
            "{err}"
        );
        assert_eq!(inbox.received(), 6);
        // A new snapshot replaces it.
        inbox.receive(piece("b", 2, 0, b"x", false)).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join(INBOX_FILE)).unwrap(), b"x");
    }

    #[tokio::test]
    async fn a_last_piece_that_is_not_a_snapshot_is_refused_and_dropped() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut inbox = SnapshotInbox::new(dir.path());
        let err = inbox
            .receive(piece("a", 1, 0, b"garbage, not a snapshot", true))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidSnapshot(_)), "{err}");
        assert!(!dir.path().join(INBOX_FILE).exists());
        assert_eq!(inbox.received(), 0);
    }

    /// A receive that starts while the last snapshot is still being installed (its sender
    /// stopped waiting) never touches the file the install reads.
    #[tokio::test]
    async fn a_new_receive_leaves_the_file_being_installed_whole() {
        use openraft::storage::RaftStateMachine;
        use openraft::RaftSnapshotBuilder;
        use tokio::io::AsyncReadExt;

        let src = tempfile::TempDir::new().unwrap();
        let mut sm = crate::StateMachineStore::open(src.path(), Default::default()).unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        let bytes = std::fs::read(src.path().join("snapshot.bin")).unwrap();

        let dir = tempfile::TempDir::new().unwrap();
        let mut inbox = SnapshotInbox::new(dir.path());
        let mut request = piece("x", 1, 0, &bytes, true);
        request.meta = current.meta.clone();
        let mut received = inbox.receive(request).await.unwrap().expect("whole");
        assert_eq!(received.meta, current.meta);

        inbox
            .receive(piece("y", 2, 0, b"other", false))
            .await
            .unwrap();
        let mut read_back = Vec::new();
        received.snapshot.read_to_end(&mut read_back).await.unwrap();
        assert_eq!(read_back, bytes);
    }
}
