//! The order in which one connection's commands for one file run.
//!
//! The session runs every `$file` command in its own task, so that segments are written in
//! parallel. Commands that change what a transfer is (init, fin, abort, and status carrying
//! init's metadata) run *alone*: after every command of the same file read before them on the
//! connection, and before any read after them. Segments and plain status run concurrently between
//! them. A device may therefore pipeline init, its segments and fin without waiting for a single
//! acknowledgement, as EMQX's in-order processing allows; before, a segment could overtake its
//! init (0x10) or a fin its last segments (0x80) on the multi-threaded runtime.
//!
//! Every decision is taken when the session reads the command, in reading order; the command's
//! task then only awaits what it was given.

use futures::future::{join_all, FutureExt, Shared};
use tokio::sync::oneshot;

/// Resolves when a command is done (its [`Turn`] was dropped).
type Done = Shared<oneshot::Receiver<()>>;

/// The commands of one file on one connection that may still be running.
#[derive(Default)]
pub(crate) struct FileOrder {
    /// The last command that runs alone.
    alone: Option<Done>,
    /// Commands read since then.
    since: Vec<Done>,
}

/// A command's place in its file's order: await [`Turn::ready`], run, then drop the turn.
pub(crate) struct Turn {
    wait: Vec<Done>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// Waits for the commands this one runs after.
    pub(crate) async fn ready(&mut self) {
        join_all(self.wait.iter().cloned()).await;
        self.wait.clear();
    }
}

impl FileOrder {
    /// Places the next command read; `alone` for one that changes the transfer.
    pub(crate) fn next(&mut self, alone: bool) -> Turn {
        let (tx, rx) = oneshot::channel();
        let rx = rx.shared();
        let wait = if alone {
            let mut wait = std::mem::take(&mut self.since);
            wait.extend(self.alone.replace(rx));
            wait
        } else {
            self.since.push(rx);
            self.alone.iter().cloned().collect()
        };
        Turn { wait, _done: tx }
    }

    /// Forgets finished commands; `true` when nothing is left.
    pub(crate) fn prune(&mut self) -> bool {
        let done = |d: &Done| d.clone().now_or_never().is_some();
        self.since.retain(|d| !done(d));
        if self.alone.as_ref().is_some_and(done) {
            self.alone = None;
        }
        self.since.is_empty() && self.alone.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `turn` may run now.
    fn ready(turn: &mut Turn) -> bool {
        turn.ready().now_or_never().is_some()
    }

    #[test]
    fn segments_run_together_and_an_alone_command_waits_for_them() {
        let mut order = FileOrder::default();
        let mut a = order.next(false);
        let mut b = order.next(false);
        let mut fin = order.next(true);
        let mut late = order.next(false);
        assert!(ready(&mut a) && ready(&mut b));
        assert!(
            !ready(&mut fin),
            "fin ran before the segments read before it"
        );
        drop(a);
        assert!(!ready(&mut fin));
        drop(b);
        assert!(ready(&mut fin));
        assert!(!ready(&mut late), "a segment read after fin ran before it");
        assert!(!order.prune());
        drop(fin);
        assert!(ready(&mut late));
        drop(late);
        assert!(order.prune(), "finished commands are forgotten");
    }

    #[test]
    fn alone_commands_run_in_reading_order() {
        let mut order = FileOrder::default();
        let mut init = order.next(true);
        let mut seg = order.next(false);
        let mut fin = order.next(true);
        let mut abort = order.next(true);
        assert!(ready(&mut init));
        assert!(!ready(&mut seg) && !ready(&mut fin) && !ready(&mut abort));
        drop(init);
        assert!(ready(&mut seg) && !ready(&mut fin));
        drop(seg);
        assert!(ready(&mut fin) && !ready(&mut abort));
        drop(fin);
        assert!(ready(&mut abort));
    }

    #[test]
    fn a_turn_dropped_without_running_releases_the_next() {
        let mut order = FileOrder::default();
        let first = order.next(true);
        let mut second = order.next(true);
        drop(first);
        assert!(ready(&mut second));
    }
}
