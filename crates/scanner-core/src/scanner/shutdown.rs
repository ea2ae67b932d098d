//! The shutdown request a running scanner watches (in the manner of mini-redis's `shutdown`).

use tokio::sync::watch;

/// Creates a linked pair: a [`ShutdownTrigger`] that requests shutdown, and the [`Shutdown`]
/// signal a scanner watches.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

/// Requests a shutdown (on SIGTERM, say).
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Asks the scanner to finish its current batch, drain, and return.
    pub fn request(&self) {
        self.0.send_replace(true);
    }
}

/// The scanner's view of a shutdown request. Dropping the trigger never requests shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (never, if the trigger was dropped unused).
    pub async fn requested(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
