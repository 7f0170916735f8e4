//! `GET /v1/backup`, streamed into a writer: the first endpoint that answers makes the copy.
//! A backup is not resumable (each request makes a new copy), so a transfer that breaks off
//! fails, and the caller starts again.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{decode_error, Client, ClientError};

/// Longest wait for the node's first byte (it makes the whole copy first) or for the next.
const IDLE_MAX: Duration = Duration::from_secs(300);

/// Where a saved backup stands, from the answer's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupSaved {
    pub bytes: u64,
    /// The last log entry the copy holds, that entry's term, and the kv revision.
    pub index: u64,
    pub term: u64,
    pub revision: u64,
}

impl Client {
    /// Streams a backup of the cluster's state into `out`; with `with_files`, the backup also
    /// carries the bytes of every file. `progress` sees the bytes so far, and the whole
    /// backup's length once the node has said it.
    pub async fn backup<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        with_files: bool,
        progress: &dyn Fn(u64, Option<u64>),
    ) -> Result<BackupSaved, ClientError> {
        let query = if with_files { "?with_files=true" } else { "" };
        let n = self.endpoints.len();
        let start = self.read_start();
        let mut last = String::from("no attempt made");
        for attempt in 0..n {
            let url = format!("{}/v1/backup{query}", self.endpoints[(start + attempt) % n]);
            let response =
                match tokio::time::timeout(IDLE_MAX, self.stream_http.get(&url).send()).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        last = format!("{url}: {e}");
                        continue;
                    }
                    Err(_) => {
                        last = format!("{url}: no answer for {IDLE_MAX:?}");
                        continue;
                    }
                };
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                last = decode_error(status.as_u16(), response).await.to_string();
                continue;
            }
            if !status.is_success() {
                return Err(decode_error(status.as_u16(), response).await);
            }
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| ClientError::Decode(format!("{url}: no {name} header")))
            };
            let (index, term, revision) = (
                header("kith-backup-index")?,
                header("kith-backup-term")?,
                header("kith-backup-revision")?,
            );
            let expected = response.content_length();
            let mut bytes = 0u64;
            let mut stream = response.bytes_stream();
            loop {
                match tokio::time::timeout(IDLE_MAX, stream.next()).await {
                    Ok(Some(Ok(piece))) => {
                        out.write_all(&piece).await.map_err(|e| ClientError::Io {
                            what: "cannot write the backup".into(),
                            source: e,
                        })?;
                        bytes += piece.len() as u64;
                        progress(bytes, expected);
                    }
                    Ok(Some(Err(e))) => {
                        return Err(ClientError::Unavailable(format!(
                            "{url}: the backup broke off after {bytes} bytes: {e}"
                        )))
                    }
                    Ok(None) => break,
                    Err(_) => {
                        return Err(ClientError::Unavailable(format!(
                            "{url}: no byte for {IDLE_MAX:?} after {bytes} bytes"
                        )))
                    }
                }
            }
            if expected.is_some_and(|e| e != bytes) {
                return Err(ClientError::Unavailable(format!(
                    "{url}: the backup ended after {bytes} of {} bytes",
                    expected.unwrap_or(0)
                )));
            }
            out.flush().await.map_err(|e| ClientError::Io {
                what: "cannot write the backup".into(),
                source: e,
            })?;
            return Ok(BackupSaved {
                bytes,
                index,
                term,
                revision,
            });
        }
        Err(ClientError::Unavailable(last))
    }
}
