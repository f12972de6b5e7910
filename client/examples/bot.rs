//! A bot: joins a room, publishes synthetic audio and video, prints every
//! chat message it receives and answers it (to the sender only).
//!
//! ```text
//! cargo run -p noom-client --example bot -- ws://127.0.0.1:8080/ws lobby echo-bot
//! ```
//!
//! Media is gathered on 127.0.0.1 unless `BOT_BIND_IP` names another local
//! address (the server must be able to reach it). `BOT_VIDEO_BPS` publishes
//! video at that bitrate (the load generator's frames) instead of a light
//! call's; `BOT_RECEIVE_ONLY=1` publishes nothing (a subscriber for link
//! measurements, tests/netem/bwe.sh).

use std::time::Duration;

use anyhow::{Context as _, Result};
use noom_client::{ChatMessage, Client, MediaOptions, MediaProfile, MEDIA_TIMEOUT};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    let name = args.next().unwrap_or_else(|| "echo-bot".to_owned());
    let bind_ip = match std::env::var("BOT_BIND_IP") {
        Ok(ip) => Some(ip.parse().context("BOT_BIND_IP")?),
        Err(_) => None,
    };

    let profile = match std::env::var("BOT_VIDEO_BPS") {
        Ok(bps) => Some(MediaProfile {
            video_bitrate: bps.parse().context("BOT_VIDEO_BPS")?,
            ..MediaProfile::default()
        }),
        Err(_) => None,
    };
    let receive_only = std::env::var("BOT_RECEIVE_ONLY").is_ok_and(|v| v == "1");

    let mut bot = Client::connect_url(&url, &name).await?;
    let opts = MediaOptions {
        bind_ip,
        profile,
        receive_only,
        // A long-running participant: counters, no per-packet logs.
        counters_only: true,
        ..MediaOptions::default()
    };
    let joined = bot.join_with_media_opts(&room, &name, opts).await?;
    println!(
        "joined {:?} as {} with {} others",
        joined.room,
        joined.you,
        joined.participants.len()
    );
    bot.wait_connected(MEDIA_TIMEOUT).await?;
    println!("media connected; publishing synthetic audio and video");

    loop {
        // Every message is taken, chat or not, so nothing piles up.
        let msg = bot
            .recv_where("any message", Duration::from_secs(24 * 3600), |_| true)
            .await?;
        let Some(chat) = ChatMessage::from_json(&msg) else {
            continue;
        };
        let chat = chat?;
        println!("{} ({}): {}", chat.name, chat.from, chat.text);
        let reply = format!("{name} heard: {}", chat.text);
        bot.send_chat(&reply, Some(&chat.from)).await?;
    }
}
