//! `kith chat ROOM --name ME`: a line-mode chat client.
//!
//! Prints the room's recent history, then every new message as it arrives, and posts each
//! line typed on stdin. Messages are shown only as they come back from the cluster's stream,
//! so everyone sees the same order. Each post carries an id, so a retry after a failover
//! never posts twice; the stream resumes on another node from the last seq it printed.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};

use kith_client::{Consistency, RoomEvent};

/// Messages of history printed on start.
const HISTORY_LINES: u64 = 50;

#[derive(Args)]
pub struct ChatArgs {
    /// The room (1–64 characters: letters, digits, '-', '_', '.'); created on first message.
    room: String,
    /// Your name as others see it.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    common: crate::commands::Common,
}

fn print_message(m: &kith_client::ChatMessage) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "[{}] {}: {}", m.seq, m.author, m.text);
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    kith_core::limits::validate_room(&args.room)?;
    kith_core::limits::validate_message(&args.name, "-")?;
    let client = std::sync::Arc::new(args.common.client()?);
    let history = client
        .history(&args.room, 0, 1, Consistency::Linearizable)
        .await?;
    let last_seq = history["last_seq"].as_u64().unwrap_or(0);
    let start = last_seq.saturating_sub(HISTORY_LINES);
    eprintln!(
        "kith chat: room '{}' as '{}' ({} messages so far); type and press Enter, Ctrl-D to leave",
        args.room, args.name, last_seq
    );
    let follower = {
        let client = client.clone();
        let room = args.room.clone();
        tokio::spawn(async move {
            client
                .follow_room(&room, start, |event| {
                    match event {
                        RoomEvent::Message(m) => print_message(&m),
                        RoomEvent::Gap { from_seq, to_seq } => {
                            eprintln!("(messages {from_seq}–{to_seq} are no longer kept)")
                        }
                    }
                    true
                })
                .await
        })
    };
    let session = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        sent += 1;
        let id = format!("c{}-{session:x}-{sent}", std::process::id());
        if let Err(e) = client
            .post_message(&args.room, &args.name, text, Some(&id))
            .await
        {
            eprintln!("(not sent: {e})");
        }
    }
    follower.abort();
    Ok(())
}
