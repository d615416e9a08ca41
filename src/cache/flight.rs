//! In-process single-flight: concurrent callers of the same missing key await one build.
//!
//! Each key in flight has a shared `OnceCell`; the first caller runs its build, the others wait
//! for the cell. When the build fails (or its caller goes away), the next waiter runs its own
//! build, so an error is never handed to callers that didn't cause it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<OnceCell<Bytes>>>>,
}

impl Flights {
    /// Runs `build` unless a build of `key` is already running, in which case waits for it.
    /// Returns the value and whether this call's build produced it.
    pub async fn run<F, Fut, E>(&self, key: &str, build: F) -> Result<(Bytes, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let cell = self.lock().entry(key.to_owned()).or_default().clone();
        let mut led = false;
        let result = cell
            .get_or_try_init(|| {
                led = true;
                build()
            })
            .await
            .cloned();
        let mut map = self.lock();
        if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(key);
        }
        result.map(|v| (v, led))
    }

    /// Keys with a build in progress (for tests and diagnostics).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Bytes>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_build() {
        let flights = Arc::new(Flights::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (flights, builds) = (flights.clone(), builds.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", || async {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(Bytes::from_static(b"v"))
                        })
                        .await
                })
            })
            .collect();
        let mut leaders = 0;
        for t in tasks {
            let (v, led) = t.await.unwrap().unwrap();
            assert_eq!(v, Bytes::from_static(b"v"));
            leaders += led as usize;
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_failed_build_lets_the_next_caller_build() {
        let flights = Flights::default();
        let r = flights.run("k", || async { Err::<Bytes, _>("down") }).await;
        assert_eq!(r, Err("down"));
        let (v, led) = flights
            .run("k", || async { Ok::<_, &str>(Bytes::from_static(b"v")) })
            .await
            .unwrap();
        assert!(led);
        assert_eq!(v, Bytes::from_static(b"v"));
    }
}
