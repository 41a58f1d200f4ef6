//! In-process single flight: concurrent misses for one key make one origin call.
//!
//! Written by hand (about 60 lines on `tokio::sync::broadcast`) rather than taken from
//! a crate: the maintained single-flight crates either need `E: Clone` for every
//! origin error or leave a key wedged when the leader's future is cancelled. Here a
//! cancelled or failed leader releases the key, and its followers retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

/// Shared map of flights in progress. Cheap to clone.
#[derive(Debug)]
pub(crate) struct Flights<V: Clone> {
    map: Arc<Mutex<HashMap<String, broadcast::Sender<V>>>>,
}

impl<V: Clone> Clone for Flights<V> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
        }
    }
}

impl<V: Clone> Default for Flights<V> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// What a caller should do for a key.
pub(crate) enum Role<V: Clone> {
    /// Call the origin, then [`Leader::complete`].
    Leader(Leader<V>),
    /// Wait for the leader's value; `Err` means the leader gave up.
    Follower(broadcast::Receiver<V>),
}

impl<V: Clone> Flights<V> {
    /// Joins the flight for `key`, leading it if there is none.
    pub(crate) fn join(&self, key: &str) -> Role<V> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(key) {
            return Role::Follower(tx.subscribe());
        }
        let (tx, _) = broadcast::channel(1);
        map.insert(key.to_owned(), tx.clone());
        Role::Leader(Leader {
            key: key.to_owned(),
            flights: self.clone(),
            tx: Some(tx),
        })
    }

    /// Whether a flight for `key` is in progress.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, key: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The caller that runs the origin for a key. Dropping it without completing
/// releases the key; followers see the channel close and retry.
pub(crate) struct Leader<V: Clone> {
    key: String,
    flights: Flights<V>,
    tx: Option<broadcast::Sender<V>>,
}

impl<V: Clone> Leader<V> {
    /// Hands `value` to every follower and releases the key.
    pub(crate) fn complete(mut self, value: V) {
        self.flights.remove(&self.key);
        if let Some(tx) = self.tx.take() {
            // No receivers is fine: nobody was waiting.
            let _ = tx.send(value);
        }
    }
}

impl<V: Clone> Leader<V> {
    /// Ends the flight without a value if nobody waits on it (checked under the map's
    /// lock, so no follower can join in between). Gives the leader back otherwise.
    // Used by the HTTP flow, which only the framework features compile.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn release_if_alone(mut self) -> Result<(), Self> {
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0) {
            drop(map);
            return Err(self);
        }
        map.remove(&self.key);
        drop(map);
        self.tx = None;
        Ok(())
    }
}

impl<V: Clone> Drop for Leader<V> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first is leader")
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!("second follows")
        };
        assert!(flights.in_flight("k"));
        leader.complete(7);
        assert_eq!(rx.recv().await.unwrap(), 7);
        assert!(!flights.in_flight("k"));
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_lone_leader_can_end_the_flight_without_a_value() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        assert!(leader.release_if_alone().is_ok());
        assert!(!flights.in_flight("k"));
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!()
        };
        let leader = leader.release_if_alone().expect_err("a follower waits");
        leader.complete(3);
        assert_eq!(rx.recv().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(rx.recv().await.is_err());
        assert!(!flights.in_flight("k"));
    }
}
