//! Background tasks that end with their owner.

/// A spawned task, aborted when this is dropped: a component's background work
/// (a subscriber, a flusher, a heartbeat) ends with the component.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Waits for the task to end by itself (it is not aborted).
    pub async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
