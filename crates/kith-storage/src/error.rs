//! The storage crate's error type, and its conversion into openraft's.

/// A failure of the disk, the engine, or a record that no longer decodes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] redb::Error),
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] postcard::Error),
    /// A snapshot file that is not whole: bad header, record, order or checksum.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// A data directory opened under another node's id.
    #[error("this data directory belongs to node {stored}, not node {given}")]
    NodeIdMismatch {
        stored: kith_core::NodeId,
        given: kith_core::NodeId,
    },
    /// The data directory is open in another process (a running node).
    #[error("{0} is in use by another process (is the node still running?)")]
    InUse(String),
    /// `recover` cannot make a one-member cluster of this directory; the message says why.
    #[error("{0}")]
    CannotRecover(String),
    /// A snapshot piece that does not continue the receive in progress.
    #[error("snapshot piece at offset {got}, expected {expected}")]
    SnapshotOffset { expected: u64, got: u64 },
    /// A snapshot larger than a node accepts.
    #[error("snapshot larger than {bytes_max} bytes")]
    SnapshotTooLarge { bytes_max: u64 },
}

macro_rules! engine_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(e.into())
            }
        }
    )*};
}

engine_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
