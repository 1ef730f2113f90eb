//! `status`: what the server holds of a transfer, for a device that resumes after a reconnect or a
//! restart (DESIGN §2): the durable ranges, the missing ones when the size is known, the metadata and
//! the [`TransferState`]. Only acknowledged bytes are reported, so resuming from `missing` never
//! skips one that could still be lost.

use quicft_proto::ft::FtReason;

use super::api::TransferState;
use super::outcome::{cancelled_outcome, FtOutcome};
use super::registry::Lookup;
use super::transfer::lock;
use super::FtService;

impl FtService {
    /// `status`, and with init's JSON as its payload (a quicft extension) a transfer the server
    /// knows nothing of is initialised first: a device that may or may not be resuming learns what
    /// the server holds in one round trip instead of status, then init. A transfer the server does
    /// know (live, finished or cancelled) is only reported, never re-initialised, so the device
    /// still sees a different file held under the same id before anything replaces it.
    pub(super) async fn status_or_init(
        &self,
        client_id: &str,
        file_id: &str,
        payload: &[u8],
    ) -> FtOutcome {
        if !payload.is_empty() && matches!(self.lookup(client_id, file_id), Lookup::Unknown) {
            let out = self.init(client_id, file_id, payload).await;
            if out.reason != FtReason::Success {
                return out;
            }
        }
        self.status(client_id, file_id)
    }

    fn status(&self, client_id: &str, file_id: &str) -> FtOutcome {
        // A transfer turns `Gone` under the registry lock as it leaves the registry; seeing it here
        // means that happened since the lookup, which a second lookup sees.
        let mut found = self.lookup(client_id, file_id);
        for _ in 0..2 {
            let Lookup::Live(t) = &found else { break };
            let st = lock(&t.st);
            let Some(state) = TransferState::of(st.phase()) else {
                drop(st);
                found = self.lookup(client_id, file_id);
                continue;
            };
            let mut out = FtOutcome::ok().state(state);
            out.ranges = Some(st.held.to_vec());
            out.missing = t.meta.size.map(|s| st.held.missing(s));
            out.meta = Some(t.meta.clone());
            return out;
        }
        match found {
            Lookup::Live(_) => FtOutcome::with(FtReason::Restart, "transfer is being removed")
                .state(TransferState::Unknown),
            Lookup::Finished(f) => {
                let size = f.manifest.size;
                let mut out = FtOutcome::ok().state(TransferState::Complete);
                out.ranges = Some(if size > 0 { vec![(0, size)] } else { vec![] });
                out.missing = Some(vec![]);
                out.meta = Some(f.manifest.meta);
                out
            }
            Lookup::Cancelled(c) => {
                let mut out = cancelled_outcome().state(TransferState::Cancelled);
                out.meta = Some(c.meta);
                out
            }
            Lookup::Unknown => {
                FtOutcome::with(FtReason::Restart, "unknown transfer").state(TransferState::Unknown)
            }
        }
    }
}
