//! A session's active subscriptions, in subscription order (R-END-2 removes them in reverse),
//! keyed by the hub's channel (which holds the name).
//!
//! A vector of `(channel, subscription)` pairs, 32 bytes each, scanned by name while there are
//! at most [`SCAN`]; beyond, a table of positions by name (4 bytes a slot) is kept beside it.
//! An `IndexMap` stored a hash with each entry and kept its index table at every size: 56 bytes
//! per subscription, and about 100 bytes more for a session's first one.

use std::borrow::Borrow;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Lookups scan up to this many subscriptions; a longer list gets an index.
const SCAN: usize = 16;

/// Keyed by `K` (the session's: `hub::ChannelRef`), looked up by name.
pub(super) struct Subs<K, V> {
    entries: Vec<(K, V)>,
    /// Positions in `entries` by name, while there are more than [`SCAN`].
    index: Option<Box<Index>>,
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Subs {
            entries: Vec::new(),
            index: None,
        }
    }
}

struct Index {
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Index {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn build<K: Borrow<str>, V>(entries: &[(K, V)]) -> Box<Index> {
        let hasher = foldhash::fast::RandomState::default();
        let rehash = |&j: &u32| hasher.hash_one(entries[j as usize].0.borrow());
        let mut table = HashTable::with_capacity(entries.len());
        for (i, (ch, _)) in entries.iter().enumerate() {
            table.insert_unique(hasher.hash_one(ch.borrow()), i as u32, rehash);
        }
        Box::new(Index { table, hasher })
    }
}

impl<K: Borrow<str>, V> Subs<K, V> {
    fn position(&self, name: &str) -> Option<usize> {
        match &self.index {
            None => self.entries.iter().position(|(ch, _)| ch.borrow() == name),
            Some(index) => index
                .table
                .find(index.hash(name), |&i| {
                    self.entries[i as usize].0.borrow() == name
                })
                .map(|&i| i as usize),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, name: &str) -> Option<&V> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.position(name).map(|i| &mut self.entries[i].1)
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Adds a subscription last, or replaces the one of the same name in its place.
    pub(super) fn insert(&mut self, key: K, value: V) {
        if let Some(i) = self.position(key.borrow()) {
            self.entries[i] = (key, value);
            return;
        }
        self.entries.push((key, value));
        let i = self.entries.len() - 1;
        match &mut self.index {
            Some(index) => {
                let (entries, hasher) = (&self.entries, &index.hasher);
                let h = hasher.hash_one(entries[i].0.borrow());
                index.table.insert_unique(h, i as u32, |&j| {
                    hasher.hash_one(entries[j as usize].0.borrow())
                });
            }
            None if self.entries.len() > SCAN => self.index = Some(Index::build(&self.entries)),
            None => {}
        }
    }

    /// Removes the subscription of `name`, keeping the order of the others.
    pub(super) fn shift_remove(&mut self, name: &str) -> Option<V> {
        let i = self.position(name)?;
        let (_, value) = self.entries.remove(i);
        if self.entries.len() <= SCAN / 2 {
            self.index = None;
        } else if let Some(index) = &mut self.index {
            let h = index.hash(name);
            if let Ok(slot) = index.table.find_entry(h, |&j| j as usize == i) {
                slot.remove();
            }
            for j in index.table.iter_mut() {
                if *j as usize > i {
                    *j -= 1;
                }
            }
        }
        Some(value)
    }

    /// Gives back the room of removed or not yet used entries.
    pub(super) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        if let Some(index) = &mut self.index {
            let (entries, hasher) = (&self.entries, &index.hasher);
            index
                .table
                .shrink_to_fit(|&j| hasher.hash_one(entries[j as usize].0.borrow()));
        }
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    pub(super) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers as an `IndexMap` (the type this replaced) through growth past the scan
    /// limit, removals anywhere, replacement and shrinking back.
    #[test]
    fn behaves_as_an_ordered_map() {
        let mut subs: Subs<String, u32> = Subs::default();
        let mut model: indexmap::IndexMap<String, u32> = indexmap::IndexMap::new();
        let mut x: u64 = 7;
        let (mut indexed, mut scanned) = (0, 0);
        for step in 0..4000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Phases of 40 and of 10 names: the list grows past the scan limit and back.
            let names = if (step / 500) % 2 == 0 { 40 } else { 10 };
            let name = format!("svc.topic-{}", x % names);
            match x % 5 {
                0..=2 => {
                    subs.insert(name.clone(), step);
                    model.insert(name.clone(), step);
                }
                3 => assert_eq!(subs.shift_remove(&name), model.shift_remove(&name)),
                _ => subs.shrink_to_fit(),
            }
            assert_eq!(subs.len(), model.len());
            assert_eq!(subs.get(&name), model.get(&name));
            if subs.index.is_some() {
                indexed += 1;
            } else {
                scanned += 1;
            }
            if subs.len() > SCAN {
                assert!(subs.index.is_some());
            } else if subs.len() <= SCAN / 2 {
                assert!(subs.index.is_none());
            }
            let ours: Vec<_> = subs.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let theirs: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(ours, theirs, "step {step}");
            for k in model.keys() {
                assert!(subs.contains_key(k));
            }
        }
        assert!(!subs.contains_key("svc.other"));
        assert!(indexed > 0 && scanned > 0, "{indexed} {scanned}");
    }
}
