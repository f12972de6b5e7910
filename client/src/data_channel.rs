//! The server's `noom` data channel as a [`Client`] sees it: open, send
//! binary or text frames, the frames received, back-pressure on both sides.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tokio::time::Instant;

use crate::Client;

impl Client {
    /// Waits until the server's `noom` data channel is open.
    pub async fn wait_data_open(&self, timeout: Duration) -> Result<()> {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if shared.data_channel.lock().unwrap().is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: data channel not open after {timeout:?}", self.label);
            }
        }
    }

    fn data_channel(&self) -> Result<Arc<dyn webrtc::data_channel::DataChannel>> {
        self.media()?
            .shared
            .data_channel
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| anyhow!("{}: data channel not open", self.label))
    }

    /// Sends one binary frame on the data channel.
    pub async fn send_data(&self, frame: &[u8]) -> Result<()> {
        let dc = self.data_channel()?;
        dc.send(bytes::BytesMut::from(frame))
            .await
            .map_err(|e| anyhow!("{}: data channel send: {e}", self.label))
    }

    /// Sends a text (non-binary) message on the data channel.
    pub async fn send_data_text(&self, text: &str) -> Result<()> {
        self.data_channel()?
            .send_text(text)
            .await
            .map_err(|e| anyhow!("{}: data channel send_text: {e}", self.label))
    }

    /// Bytes queued on our data channel, not yet sent.
    pub async fn data_outstanding(&self) -> Result<usize> {
        self.data_channel()?
            .outstanding_bytes()
            .await
            .map_err(|e| anyhow!("{e}"))
    }

    /// Sets the data channel's `bufferedAmountLowThreshold`: the queue
    /// falling to it raises `OnBufferedAmountLow`.
    pub async fn set_data_low_threshold(&self, bytes: u32) -> Result<()> {
        self.data_channel()?
            .set_buffered_amount_low_threshold(bytes)
            .await
            .map_err(|e| anyhow!("{}: set_buffered_amount_low_threshold: {e}", self.label))
    }

    /// `OnBufferedAmountLow` events seen so far.
    pub fn data_low_events(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.shared.data_low_events.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Sender-side back-pressure: returns once our channel's outstanding
    /// bytes are at most `low` (the threshold set with
    /// [`Self::set_data_low_threshold`]). Wakes on the channel's
    /// `OnBufferedAmountLow` event (any channel event, in fact), with a
    /// 50 ms re-check as a lost-wakeup backstop.
    pub async fn wait_data_buffered_at_most(&self, low: usize, timeout: Duration) -> Result<()> {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            let queued = self.data_outstanding().await?;
            if queued <= low {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: data channel still has {queued} bytes queued after {timeout:?}",
                    self.label
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Bytes of binary frames the application has read from the channel.
    pub fn data_bytes_read(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.shared.data_bytes_read.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Runs `f` over the frames received so far, without copying them.
    pub fn with_data_frames<R>(&self, f: impl FnOnce(&[Vec<u8>]) -> R) -> R {
        match self.media.as_ref() {
            Some(m) => f(&m.shared.data_frames.lock().unwrap()),
            None => f(&[]),
        }
    }

    /// Every binary frame received on the data channel so far.
    pub fn data_frames(&self) -> Vec<Vec<u8>> {
        self.media
            .as_ref()
            .map(|m| m.shared.data_frames.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Waits until some received frame satisfies `pred`; returns it.
    pub async fn wait_data_frame<F>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<u8>>
    where
        F: Fn(&[u8]) -> bool,
    {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if let Some(f) = shared.data_frames.lock().unwrap().iter().find(|f| pred(f)) {
                return Ok(f.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: no data frame {what} after {timeout:?}", self.label);
            }
        }
    }

    /// Waits until the frames received so far, as a whole, satisfy `pred`.
    pub async fn wait_data_frames<F>(&self, what: &str, timeout: Duration, pred: F) -> Result<()>
    where
        F: Fn(&[Vec<u8>]) -> bool,
    {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if pred(&shared.data_frames.lock().unwrap()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: data frames never {what} after {timeout:?}", self.label);
            }
        }
    }

    /// Stops (or resumes) reading the data channel, as a slow receiver.
    pub fn set_data_paused(&self, paused: bool) -> Result<()> {
        let shared = &self.media()?.shared;
        shared.data_paused.store(paused, Ordering::Release);
        if !paused {
            // A stored permit: the reader may not be waiting yet.
            shared.data_resume.notify_one();
        }
        Ok(())
    }
}
