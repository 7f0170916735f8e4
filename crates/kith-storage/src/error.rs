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
