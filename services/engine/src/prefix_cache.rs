//! Automatic prefix caching: keep the key/value state of recent sequences and start a new
//! request from the longest prefix it shares with one of them, as vLLM and SGLang do.
//!
//! α-UMi's prompts make this pay: every planner, caller and summarizer prompt of a task
//! starts with the same tool docs and trajectory, so most of each prompt was already run.

use crate::error::Result;
use crate::model::KvCache;

/// What the cache keeps per sequence: its key/value state (the model engine's `KvCache`),
/// or what stands for one (the simulated engine's token count).
pub trait CachedState: Sized {
    /// Memory the state holds, charged to the budget.
    fn bytes(&self) -> usize;
    /// The state of the first `n` positions.
    fn prefix(&self, n: usize) -> Result<Self>;
}

impl CachedState for KvCache {
    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }

    fn prefix(&self, n: usize) -> Result<Self> {
        KvCache::prefix(self, n)
    }
}

struct Entry<S> {
    /// The adapter the state was computed with (None: the base weights): a state is
    /// reused only under the same one, since an adapter changes keys and values.
    adapter: Option<usize>,
    tokens: Vec<u32>,
    kv: S,
    /// `kv.bytes()`, counted once.
    bytes: usize,
    last_used: u64,
}

/// Sequences' key/value states within a memory budget, least recently used evicted
/// first; shared by every request of the engine (concurrent tasks included).
pub struct PrefixCache<S = KvCache> {
    entries: Vec<Entry<S>>,
    budget: usize,
    used: usize,
    clock: u64,
}

/// Shorter shared prefixes are not worth a lookup's bookkeeping.
const MIN_SHARED_TOKENS: usize = 8;

impl<S: CachedState> PrefixCache<S> {
    /// Keeps sequences holding up to `budget` bytes of key/value state; 0 disables it.
    pub fn new(budget: usize) -> Self {
        PrefixCache {
            entries: Vec::new(),
            budget,
            used: 0,
            clock: 0,
        }
    }

    /// Bytes of key/value state held now.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// A copy of the state after the longest cached prefix of `prompt`, always leaving at
    /// least the last prompt token to run (its logits start generation).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<S> {
        self.lookup_with(None, prompt)
    }

    /// [`PrefixCache::lookup`] among the states computed with `adapter`.
    pub fn lookup_with(&mut self, adapter: Option<usize>, prompt: &[u32]) -> Option<S> {
        self.clock += 1;
        let (best, shared) = self
            .entries
            .iter_mut()
            .filter(|e| e.adapter == adapter)
            .map(|e| {
                let shared = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (e, shared.min(prompt.len().saturating_sub(1)))
            })
            .max_by_key(|(_, shared)| *shared)?;
        if shared < MIN_SHARED_TOKENS {
            return None;
        }
        best.last_used = self.clock;
        best.kv.prefix(shared).ok()
    }

    /// Remembers the state of a finished sequence whose cache holds `tokens`, evicting
    /// the least recently used sequences to stay within the budget (a state larger than
    /// the whole budget is not kept).
    pub fn insert(&mut self, tokens: Vec<u32>, kv: S) {
        self.insert_with(None, tokens, kv)
    }

    /// [`PrefixCache::insert`] of a state computed with `adapter`.
    pub fn insert_with(&mut self, adapter: Option<usize>, tokens: Vec<u32>, kv: S) {
        let bytes = kv.bytes();
        if bytes > self.budget || tokens.len() < MIN_SHARED_TOKENS {
            return;
        }
        self.clock += 1;
        // A sequence that extends a cached one (of the same adapter) replaces it.
        self.remove_where(|e| e.adapter == adapter && tokens.starts_with(&e.tokens));
        while self.used + bytes > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let gone = self.entries.swap_remove(oldest);
            self.used -= gone.bytes;
        }
        self.used += bytes;
        self.entries.push(Entry {
            adapter,
            tokens,
            kv,
            bytes,
            last_used: self.clock,
        });
    }

    fn remove_where(&mut self, mut gone: impl FnMut(&Entry<S>) -> bool) {
        let mut freed = 0;
        self.entries.retain(|e| {
            let drop = gone(e);
            if drop {
                freed += e.bytes;
            }
            !drop
        });
        self.used -= freed;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(first: u32, n: usize) -> Vec<u32> {
        (first..first + n as u32).collect()
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_states() {
        // Each 10-position state holds 320 bytes: three fit in 1,000.
        let mut cache = PrefixCache::new(1000);
        for first in [0, 100, 200] {
            cache.insert(tokens(first, 10), KvCache::zeros(10));
        }
        assert_eq!((cache.len(), cache.bytes()), (3, 960));
        // Using the oldest makes the second the least recently used.
        assert!(cache.lookup(&tokens(0, 12)).is_some());
        cache.insert(tokens(300, 10), KvCache::zeros(10));
        assert_eq!((cache.len(), cache.bytes()), (3, 960));
        assert!(
            cache.lookup(&tokens(100, 12)).is_none(),
            "the LRU state was kept"
        );
        assert!(cache.lookup(&tokens(0, 12)).is_some());
        // A state larger than the whole budget is not kept, and evicts nothing.
        cache.insert(tokens(400, 40), KvCache::zeros(40));
        assert_eq!(cache.len(), 3);
        // A sequence extending a cached one replaces it.
        cache.insert(tokens(0, 20), KvCache::zeros(20));
        assert!(cache.bytes() <= 1000);
        assert_eq!(cache.lookup(&tokens(0, 25)).map(|kv| kv.len()), Some(20));
        // A state computed under an adapter serves only that adapter.
        cache.insert_with(Some(1), tokens(500, 20), KvCache::zeros(20));
        assert!(cache.lookup(&tokens(500, 25)).is_none());
        assert!(cache.lookup_with(Some(0), &tokens(500, 25)).is_none());
        assert_eq!(
            cache
                .lookup_with(Some(1), &tokens(500, 25))
                .map(|kv| kv.len()),
            Some(20)
        );
        assert!(PrefixCache::<KvCache>::new(0).is_empty());
    }
}
