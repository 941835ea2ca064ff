//! Automatic prefix caching: keep the key/value state of recent sequences and start a new
//! request from the longest prefix it shares with one of them, as vLLM and SGLang do.
//!
//! α-UMi's prompts make this pay: every planner, caller and summarizer prompt of a task
//! starts with the same tool docs and trajectory, so most of each prompt was already run.

use crate::model::KvCache;

struct Entry {
    tokens: Vec<u32>,
    kv: KvCache,
    last_used: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    capacity: usize,
    clock: u64,
}

/// Shorter shared prefixes are not worth a lookup's bookkeeping.
const MIN_SHARED_TOKENS: usize = 8;

impl PrefixCache {
    /// Keeps up to `capacity` sequences (least recently used evicted); 0 disables it.
    pub fn new(capacity: usize) -> Self {
        PrefixCache {
            entries: Vec::new(),
            capacity,
            clock: 0,
        }
    }

    /// A copy of the state after the longest cached prefix of `prompt`, always leaving at
    /// least the last prompt token to run (its logits start generation).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<KvCache> {
        self.clock += 1;
        let (best, shared) = self
            .entries
            .iter_mut()
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

    /// Remembers the state of a finished sequence whose cache holds `tokens`.
    pub fn insert(&mut self, tokens: Vec<u32>, kv: KvCache) {
        if self.capacity == 0 || tokens.len() < MIN_SHARED_TOKENS {
            return;
        }
        self.clock += 1;
        // A sequence that extends a cached one replaces it.
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push(Entry {
            tokens,
            kv,
            last_used: self.clock,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
