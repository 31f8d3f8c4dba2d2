//! A bounded multi-producer, single-consumer queue between threads, bounded in bytes: what does
//! not fit is refused and counted, never waited for, so a slow consumer can cost records (each
//! one counted and reported in the stream) but never block the producer.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    max_bytes: usize,
}

struct State<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    /// Items refused because the queue was full, since start.
    refused: u64,
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the state inconsistent: use it anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Sender<T>(Arc<Shared<T>>);
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// A queue holding at most `max_bytes` (as the senders count them) of items.
pub fn bounded<T>(max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            refused: 0,
            closed: false,
        }),
        ready: Condvar::new(),
        max_bytes,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` (`bytes` of it) if it fits; otherwise counts it as refused and returns false.
    pub fn try_send(&self, item: T, bytes: usize) -> bool {
        let mut s = self.0.lock();
        if s.closed {
            return false;
        }
        if s.bytes > 0 && s.bytes + bytes > self.0.max_bytes {
            s.refused += 1;
            return false;
        }
        self.push(s, item, bytes);
        true
    }

    /// Queues `item` even past the bound: for small control messages, and for the last records
    /// at stop, which must not be lost.
    pub fn send(&self, item: T, bytes: usize) {
        let s = self.0.lock();
        if !s.closed {
            self.push(s, item, bytes);
        }
    }

    fn push(&self, mut s: MutexGuard<'_, State<T>>, item: T, bytes: usize) {
        s.bytes += bytes;
        s.items.push_back((item, bytes));
        drop(s);
        self.0.ready.notify_one();
    }

    /// No more items: the receiver gets None once the queue is empty.
    pub fn close(&self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; None once the queue is closed and empty.
    pub fn recv(&self) -> Option<T> {
        let mut s = self.0.lock();
        loop {
            if let Some((item, bytes)) = s.items.pop_front() {
                s.bytes -= bytes;
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.0.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }

    /// Items refused since start.
    pub fn refused(&self) -> u64 {
        self.0.lock().refused
    }
}

impl<T> Drop for Receiver<T> {
    /// A receiver that is gone takes nothing more.
    fn drop(&mut self) {
        self.0.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_does_not_fit_and_counts_it() {
        let (tx, rx) = bounded::<u32>(100);
        assert!(tx.try_send(1, 60));
        assert!(!tx.try_send(2, 60), "over the bound");
        tx.send(3, 60); // control: past the bound
        assert!(!tx.try_send(4, 1));
        assert_eq!(rx.refused(), 2);
        assert_eq!(rx.recv(), Some(1));
        assert_eq!(rx.recv(), Some(3));
        assert!(tx.try_send(5, 90), "room again");
        tx.close();
        assert!(!tx.try_send(6, 1));
        assert_eq!(rx.recv(), Some(5));
        assert_eq!(rx.recv(), None);
    }

    #[test]
    fn an_item_larger_than_the_bound_fits_an_empty_queue() {
        let (tx, rx) = bounded::<u32>(10);
        assert!(tx.try_send(1, 50));
        assert_eq!(rx.recv(), Some(1));
    }

    #[test]
    fn the_receiver_waits_across_threads() {
        let (tx, rx) = bounded::<u32>(1 << 20);
        let t = std::thread::spawn(move || (0..1000).map(|_| rx.recv().unwrap()).sum::<u32>());
        for i in 0..1000 {
            assert!(tx.try_send(i, 8));
        }
        assert_eq!(t.join().unwrap(), (0..1000).sum::<u32>());
    }
}
