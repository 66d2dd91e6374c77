//! Reads a dataset's batches ahead of their use on worker threads, into a bounded queue, so
//! that decoding (image folders), byte-to-f32 conversion and normalisation run beside the
//! training step instead of before it.
//!
//! The batches come out in the order given, whatever the worker count: worker `w` reads
//! batches `w, w + workers, ...` into its own queue of `depth` batches, and the consumer takes
//! batch `k` from queue `k % workers`. A worker blocks when its queue is full, so at most
//! `workers * (depth + 1)` batches are read and not yet taken (one waiting in each worker's
//! hand), plus the one the consumer holds. A read error (an undecodable image) comes out as that batch's `Err`; a worker that
//! stops without sending (a panic) is reported as an internal error, never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::Dataset;
use crate::error::{Error, Result};

/// How many worker threads read ahead, and how many finished batches each may queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// Reader threads; 0 reads each batch on the calling thread when it is asked for.
    pub workers: usize,
    /// Finished batches each worker may queue before it waits.
    pub depth: usize,
}

impl Prefetch {
    /// For `data`: up to 4 decoding workers for image files (decoding is the slow part), one
    /// worker for pixels in memory (a copy and a conversion per batch).
    pub fn for_data(data: &Dataset) -> Prefetch {
        let workers = if data.decodes_files() {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 4)
        } else {
            1
        };
        Prefetch { workers, depth: 1 }
    }

    /// Most batches read and not yet released at any time: each worker's queue and the one in
    /// its hand, plus the batch the consumer has just taken (counted until its receipt is
    /// recorded, so a worker may refill the freed slot first).
    pub fn bound(&self) -> usize {
        self.workers * (self.depth + 1) + 1
    }
}

/// Batches read and not yet taken: now, and the most there ever were.
#[derive(Default)]
struct Pending {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One pass over `order` of a dataset in batches, read ahead by [`Prefetch`] workers.
pub struct Loader {
    data: Dataset,
    order: Arc<Vec<usize>>,
    batch_size: usize,
    batches: usize,
    next: usize,
    receivers: Vec<Receiver<Result<Vec<f32>>>>,
    workers: Vec<JoinHandle<()>>,
    pending: Arc<Pending>,
}

impl Loader {
    /// Starts reading the samples `order` of `data` in batches of `batch_size` (the last one
    /// shorter). If a thread cannot be started, batches are read on the calling thread.
    pub fn new(data: &Dataset, order: Vec<usize>, batch_size: usize, prefetch: Prefetch) -> Self {
        let batch_size = batch_size.max(1);
        let batches = order.len().div_ceil(batch_size);
        let mut loader = Loader {
            data: data.clone(),
            order: Arc::new(order),
            batch_size,
            batches,
            next: 0,
            receivers: Vec::new(),
            workers: Vec::new(),
            pending: Arc::new(Pending::default()),
        };
        let workers = prefetch.workers.min(batches);
        let mut senders = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = sync_channel(prefetch.depth);
            senders.push(tx);
            loader.receivers.push(rx);
        }
        for (w, tx) in senders.into_iter().enumerate() {
            let job = Job {
                data: data.clone(),
                order: loader.order.clone(),
                batch_size,
                first: w,
                stride: workers,
                pending: loader.pending.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("input-{w}"))
                .spawn(move || job.run(tx));
            match spawned {
                Ok(handle) => loader.workers.push(handle),
                Err(_) => {
                    // Fewer threads than queues would leave batches unread: read them here.
                    loader.stop();
                    break;
                }
            }
        }
        loader
    }

    /// Sample indices of the batch [`Loader::next_batch`] gives next.
    pub fn next_indices(&self) -> Option<&[usize]> {
        (self.next < self.batches).then(|| self.range(self.next))
    }

    fn range(&self, k: usize) -> &[usize] {
        let start = k * self.batch_size;
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// The next batch's NCHW pixels, normalised; None after the last batch.
    pub fn next_batch(&mut self) -> Option<Result<Vec<f32>>> {
        if self.next >= self.batches {
            return None;
        }
        let k = self.next;
        self.next += 1;
        if self.receivers.is_empty() {
            return Some(self.data.read(self.range(k)));
        }
        let from = &self.receivers[k % self.receivers.len()];
        Some(match from.recv() {
            Ok(batch) => {
                self.pending.now.fetch_sub(1, Ordering::SeqCst);
                batch
            }
            Err(_) => Err(Error::Internal(format!(
                "input worker {} stopped before sending batch {k}",
                k % self.receivers.len()
            ))),
        })
    }

    /// The most batches that were read and not yet taken at one time.
    pub fn peak_pending(&self) -> usize {
        self.pending.peak.load(Ordering::SeqCst)
    }

    /// Ends the workers: a worker waiting on a full queue sees it closed and returns.
    fn stop(&mut self) {
        self.receivers.clear();
        for handle in self.workers.drain(..) {
            // A worker that panicked has nothing more to say here; its batch already reported.
            let _ = handle.join();
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Vec<f32>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one worker reads: batches `first, first + stride, ...` of `order`.
struct Job {
    data: Dataset,
    order: Arc<Vec<usize>>,
    batch_size: usize,
    first: usize,
    stride: usize,
    pending: Arc<Pending>,
}

impl Job {
    fn run(self, tx: SyncSender<Result<Vec<f32>>>) {
        let batches = self.order.len().div_ceil(self.batch_size);
        for k in (self.first..batches).step_by(self.stride.max(1)) {
            let start = k * self.batch_size;
            let end = (start + self.batch_size).min(self.order.len());
            let batch = self.data.read(&self.order[start..end]);
            let failed = batch.is_err();
            let now = self.pending.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.pending.peak.fetch_max(now, Ordering::SeqCst);
            if tx.send(batch).is_err() || failed {
                // The consumer is gone, or this batch's error ends the pass.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Dataset {
        let bytes: Vec<u8> = (0..n * 4).map(|v| (v % 251) as u8).collect();
        Dataset::from_u8(bytes, (0..n as u32).collect(), (1, 2, 2)).unwrap()
    }

    #[test]
    fn batches_come_in_order_whatever_the_workers() {
        let data = ramp(50);
        let order: Vec<usize> = (0..50).rev().collect();
        let want: Vec<Vec<f32>> = order.chunks(7).map(|c| data.read(c).unwrap()).collect();
        for workers in [0, 1, 3, 8] {
            let prefetch = Prefetch { workers, depth: 2 };
            let got: Vec<Vec<f32>> = Loader::new(&data, order.clone(), 7, prefetch)
                .map(|b| b.unwrap())
                .collect();
            assert_eq!(got, want, "{workers} workers");
        }
    }

    #[test]
    fn the_queue_stays_bounded_and_an_early_drop_ends_the_workers() {
        let data = ramp(400);
        let prefetch = Prefetch {
            workers: 3,
            depth: 1,
        };
        let mut loader = Loader::new(&data, (0..400).collect(), 2, prefetch);
        // A slow consumer: the workers fill their queues and wait.
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            loader.next_batch().unwrap().unwrap();
        }
        let peak = loader.peak_pending();
        assert!(peak >= 1, "nothing was read ahead");
        assert!(peak <= prefetch.bound(), "{peak} > {}", prefetch.bound());
        // 180 batches are left unread: dropping must not wait for them.
        drop(loader);
    }
}
