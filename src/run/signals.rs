//! Ctrl-C and SIGTERM while a run is under way: the scheduler stops its jobs on them, and the end of a run
//! stops waiting for the remote cache's uploads. One listener type for both, so they agree on what stops a run.

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::Interruption;

/// Listeners for the signals that stop a run.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Starts listening; from now on these signals no longer end the process by themselves.
    pub(crate) fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal; never, without listeners.
    pub(crate) async fn next(signals: &mut Option<Signals>) -> Interruption {
        match signals {
            Some(s) => tokio::select! {
                _ = s.interrupt.recv() => Interruption::Interrupt,
                _ = s.terminate.recv() => Interruption::Terminate,
            },
            None => std::future::pending().await,
        }
    }
}
