//! The pipeline's persistent state in the outbox database: [`OutboxState`] is the
//! [`StateStore`] the gateway gives its `Processor` (fallback baselines, open summary
//! buckets, pending waveform samples), each call through [`OutboxHandle::blocking`].

use crate::outbox::OutboxHandle;
use crate::pipeline::StateStore;

/// The pipeline's persistent state (fallback baselines, open summary buckets) lives
/// in the outbox database, so it survives restarts with the data it belongs to.
pub(crate) struct OutboxState(pub(crate) OutboxHandle);

impl StateStore for OutboxState {
    fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.blocking(|o| o.get_state(key))?)
    }

    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        Ok(self.0.blocking(|o| o.put_state(key, value))?)
    }

    fn delete(&mut self, key: &str) -> anyhow::Result<()> {
        Ok(self.0.blocking(|o| o.delete_state(key))?)
    }
}
