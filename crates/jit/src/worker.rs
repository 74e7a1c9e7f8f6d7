//! Background compilation: a thread that owns a translation [`Backend`] and compiles the
//! jobs the tier sends it, so that the vCPU thread keeps interpreting a hot block instead of
//! waiting for Cranelift. Results come back tagged with the module generation they belong
//! to; the tier installs them (or drops them, if the block or the module is gone). While a
//! backlog waits, jobs are compiled with less optimization ([`QUICK_BACKLOG`]); once the
//! queue is empty, those are compiled again, optimized ([`second_pass`]), and the
//! tier replaces their code.

use crate::backend::{Backend, Compiled, Effort, Job};
use crossbeam_channel::{Receiver, Sender};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Jobs still waiting, after the one taken, from which that one is compiled with
/// [`Effort::Quick`]: the Linux boot queues over a thousand jobs, and there a hot block's
/// wait for its code costs more than its code being slower. On the Linux workload
/// (`--stats`, 2-core machine): translation time 3.7 → 2.8 s, instructions interpreted
/// while waiting for code 33 M → 21 M, queue peak 1,370 → 550; whole run against QEMU
/// TCG, median of five alternating `linux-bench` runs, 1.20 → 1.15 (backlogs of 8 and 128
/// measured no better).
pub const QUICK_BACKLOG: usize = 32;

/// The effort for a job taken with `backlog` jobs still waiting.
fn effort_for(backlog: usize) -> Effort {
    if backlog >= QUICK_BACKLOG {
        Effort::Quick
    } else {
        Effort::Optimized
    }
}

/// Whether the compile thread translates a job a second time, optimized and with the
/// blocks after the block that the job spans, once it has no other work, when the first
/// translation (of the block's own instructions) was quick (the tier then replaces the
/// code: see `Compiler::collect`). Not while `CRANE86_JIT_EFFORT` forces one
/// effort for every translation: then the first translation spans the whole job.
pub fn second_pass() -> bool {
    Effort::forced().is_none()
}

pub enum Request {
    Compile {
        id: u64,
        generation: u64,
        job: Job,
    },
    /// Job `id` (still queued, or already done) is still being asked for: its block keeps
    /// running in the interpreter. Moves it ahead of every job asked for fewer times.
    Boost {
        id: u64,
    },
    /// Free every translation and start module `generation`. Sent only after the tier made
    /// sure no code of the old module can run.
    Reset {
        generation: u64,
    },
}

/// A finished translation of job `id`: its first, or (with [`Effort::Optimized`], for a job
/// first compiled quick) its re-optimized one.
pub struct Done {
    pub id: u64,
    pub generation: u64,
    pub result: Result<Compiled, String>,
}

/// A job waiting in the compile thread.
struct Queued {
    id: u64,
    generation: u64,
    job: Job,
    /// [`Request::Boost`]s received: how long its block has kept running interpreted.
    boosts: u32,
}

/// The jobs waiting for the compile thread, in the order it takes them: most boosted first
/// (a block that keeps running in the interpreter while it waits, such as a loop of the
/// kernel's crypto code during boot), and among equally boosted jobs the newest first (a
/// block that just became hot is likely running now, while older ones may have cooled off).
/// Under a backlog (the Linux boot queues up to about 900 jobs) newest-first alone left hot
/// blocks waiting behind newer, colder ones for up to a second.
///
/// Kept ordered (by boosts, then push order), with an index from job to key, so that a
/// push, a boost and a pop each cost a logarithm of the queue's length: a scan per pop and
/// per boost was several percent of the compile thread's time behind the 100 fork+exec's
/// backlog of about 3,000 jobs, and at lower hot thresholds (tens of thousands of jobs and
/// hundreds of thousands of boosts) most of it.
#[derive(Default)]
struct JobQueue {
    /// Keyed by (boosts, push number): the last entry is the next job.
    order: BTreeMap<(u32, u64), Queued>,
    /// Job id → its key in `order`.
    keys: HashMap<u64, (u32, u64)>,
    pushes: u64,
}

impl JobQueue {
    fn push(&mut self, id: u64, generation: u64, job: Job) {
        self.push_queued(Queued {
            id,
            generation,
            job,
            boosts: 0,
        });
    }

    /// Queue `q` again (as the newest of its boosts).
    fn push_queued(&mut self, q: Queued) {
        self.pushes += 1;
        let key = (q.boosts, self.pushes);
        self.keys.insert(q.id, key);
        self.order.insert(key, q);
    }

    /// Ignored for a job no longer queued (compiled meanwhile).
    fn boost(&mut self, id: u64) {
        let Some(key) = self.keys.get_mut(&id) else {
            return;
        };
        let Some(mut q) = self.order.remove(key) else {
            return;
        };
        q.boosts = q.boosts.saturating_add(1);
        key.0 = q.boosts;
        self.order.insert(*key, q);
    }

    fn pop(&mut self) -> Option<Queued> {
        let (_, q) = self.order.pop_last()?;
        self.keys.remove(&q.id);
        Some(q)
    }

    fn clear(&mut self) {
        self.order.clear();
        self.keys.clear();
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

pub struct Worker {
    requests: Option<Sender<Request>>,
    done: Receiver<Done>,
    /// Set when the tier goes away: the thread drops its queue instead of compiling it (a
    /// guest that powers off during the boot's backlog of about a thousand jobs would
    /// otherwise wait seconds for translations nobody will run).
    stop: Arc<AtomicBool>,
    /// Results the thread has sent, counted after each send, and results taken from
    /// `done`: [`Worker::try_recv`] asks the channel only when they differ. The tier asks
    /// once per interpreted block during a boot (millions of times); the channel's own
    /// check read a cache line the other core keeps writing, about 2% of the run.
    sent: Arc<AtomicU64>,
    taken: Cell<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn() -> std::io::Result<Worker> {
        let (requests, inbox) = crossbeam_channel::unbounded::<Request>();
        let (outbox, done) = crossbeam_channel::unbounded::<Done>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let sent = Arc::new(AtomicU64::new(0));
        let sending = Arc::clone(&sent);
        let thread = std::thread::Builder::new()
            .name("crane86-jit".to_string())
            .spawn(move || {
                // The module is made here: a JIT module stays on the thread that owns it.
                let mut backend = Backend::default();
                let mut queue = JobQueue::default();
                // Jobs compiled quick, to compile again optimized when `queue` is empty: the
                // most boosted (hottest) and then the newest first, as in `queue`.
                let mut reoptimize = JobQueue::default();
                loop {
                    let first = if queue.is_empty() && reoptimize.is_empty() {
                        match inbox.recv() {
                            Ok(r) => Some(r),
                            Err(_) => break,
                        }
                    } else {
                        None
                    };
                    for request in first.into_iter().chain(inbox.try_iter()) {
                        match request {
                            Request::Compile {
                                id,
                                generation,
                                job,
                            } => {
                                queue.push(id, generation, job);
                            }
                            Request::Boost { id } => queue.boost(id),
                            Request::Reset { .. } => {
                                // Jobs of the old module would only be dropped by the tier.
                                queue.clear();
                                reoptimize.clear();
                                // SAFETY: the tier sends a reset only once no block can run
                                // code of the old module (its block cache was cleared first).
                                unsafe { backend.reset() };
                            }
                        }
                    }
                    let (queued, effort, again) = match queue.pop() {
                        Some(q) => (q, effort_for(queue.len()), false),
                        None => match reoptimize.pop() {
                            Some(q) => (q, Effort::Optimized, true),
                            None => continue,
                        },
                    };
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    // A first translation covers the block's own instructions; only a quick
                    // one is translated again, optimized and spanning the blocks after it.
                    // (Measured on the Linux workload: spanning them in first translations
                    // made the boot about 5% slower, its compile backlog growing, and a
                    // second pass for every block that could span more cost fork+exec 8%,
                    // for the same gain in `sort`.)
                    let job = &queued.job;
                    let (result, again_later) = if again || !second_pass() {
                        (backend.compile(job, effort), false)
                    } else {
                        let r = backend.compile_prefix(job, effort, job.own_len);
                        let quick = r.as_ref().is_ok_and(|c| c.effort == Effort::Quick);
                        (r, quick)
                    };
                    if outbox
                        .send(Done {
                            id: queued.id,
                            generation: queued.generation,
                            result,
                        })
                        .is_err()
                    {
                        break;
                    }
                    sending.fetch_add(1, Ordering::Release);
                    if again_later {
                        reoptimize.push_queued(queued);
                    }
                }
            })?;
        Ok(Worker {
            requests: Some(requests),
            done,
            stop,
            sent,
            taken: Cell::new(0),
            thread: Some(thread),
        })
    }

    /// Queue a request (false if the thread is gone).
    pub fn send(&self, request: Request) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|r| r.send(request).is_ok())
    }

    /// A finished translation, if one is waiting.
    pub fn try_recv(&self) -> Option<Done> {
        // A result is in the channel before it is counted (Release/Acquire).
        if self.sent.load(Ordering::Acquire) == self.taken.get() {
            return None;
        }
        let done = self.done.try_recv().ok()?;
        self.taken.set(self.taken.get() + 1);
        Some(done)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The flag ends the thread before its next job, closing the request channel once it
        // waits for one; either way it frees its module.
        self.stop.store(true, Ordering::Relaxed);
        self.requests = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("jit: the compile thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn job(bytes: &[u8]) -> Job {
        let insns: Vec<_> = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect();
        Job {
            own_len: insns.len(),
            insns,
            bits: 64,
            rip: 0x1000,
            paddr: 0x1000,
            linked_block: None,
            counters: true,
            entry_flags: None,
            features: Default::default(),
        }
    }

    fn wait(w: &Worker) -> Done {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(d) = w.try_recv() {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no result from the worker"
            );
            std::thread::yield_now();
        }
    }

    /// Jobs come back with their id and generation, compiled; after a reset the worker
    /// compiles into the new module.
    #[test]
    fn compiles_jobs_and_survives_a_reset() {
        let w = Worker::spawn().expect("thread");
        // add rax, rbx; xor ecx, ecx; jmp $
        let bytes = [0x48, 0x01, 0xD8, 0x31, 0xC9, 0xEB, 0xFE];
        assert!(w.send(Request::Compile {
            id: 7,
            generation: 0,
            job: job(&bytes),
        }));
        let d = wait(&w);
        assert_eq!((d.id, d.generation), (7, 0));
        let c = d.result.expect("compiled");
        assert_eq!((c.insns, c.inlined), (3, 3));
        assert!(c.code != 0 && c.bytes > 0);
        assert!(w.send(Request::Reset { generation: 1 }));
        assert!(w.send(Request::Compile {
            id: 8,
            generation: 1,
            job: job(&bytes),
        }));
        let d = wait(&w);
        assert_eq!((d.id, d.generation), (8, 1));
        assert!(d.result.is_ok());
    }

    /// Optimized code while the queue is short; quick code for a job taken from a backlog,
    /// which also compiles and runs (the guest suites run on it with
    /// `CRANE86_JIT_EFFORT=quick`, see `.ci/run`).
    #[test]
    fn a_backlog_is_compiled_quickly() {
        assert_eq!(effort_for(0), Effort::Optimized);
        assert_eq!(effort_for(QUICK_BACKLOG - 1), Effort::Optimized);
        assert_eq!(effort_for(QUICK_BACKLOG), Effort::Quick);
        let mut b = Backend::default();
        // add rax, rbx; xor ecx, ecx; jmp $
        let j = job(&[0x48, 0x01, 0xD8, 0x31, 0xC9, 0xEB, 0xFE]);
        let optimized = b.compile(&j, Effort::Optimized).expect("optimized");
        let quick = b.compile(&j, Effort::Quick).expect("quick");
        assert_eq!(
            (optimized.effort, quick.effort),
            (Effort::Optimized, Effort::Quick)
        );
        assert!(quick.code != 0 && quick.code != optimized.code);
        assert_eq!((quick.insns, quick.inlined), (3, 3));
    }

    /// Jobs compiled quick under a backlog come back a second time, optimized, once the
    /// queue is empty (unless `CRANE86_JIT_EFFORT` forces one effort: then never).
    #[test]
    fn quick_translations_are_reoptimized_when_idle() {
        let w = Worker::spawn().expect("spawn");
        let jobs = QUICK_BACKLOG as u64 * 2;
        for id in 0..jobs {
            // add rax, rbx; xor ecx, ecx; jmp $
            let job = job(&[0x48, 0x01, 0xD8, 0x31, 0xC9, 0xEB, 0xFE]);
            assert!(w.send(Request::Compile {
                id,
                generation: 0,
                job
            }));
        }
        let mut first = std::collections::HashMap::new();
        let mut again = Vec::new();
        while first.len() < jobs as usize {
            let d = wait(&w);
            let effort = d.result.expect("compiles").effort;
            if let std::collections::hash_map::Entry::Vacant(e) = first.entry(d.id) {
                e.insert(effort);
            } else {
                again.push((d.id, effort));
            }
        }
        let quick: Vec<u64> = first
            .iter()
            .filter(|(_, &e)| e == Effort::Quick)
            .map(|(&id, _)| id)
            .collect();
        if !second_pass() {
            assert!(
                again.is_empty(),
                "re-optimized although the effort is forced"
            );
            return;
        }
        assert!(
            !quick.is_empty(),
            "a backlog of {jobs} jobs got no quick code"
        );
        while again.len() < quick.len() {
            let d = wait(&w);
            again.push((d.id, d.result.expect("compiles").effort));
        }
        again.sort_by_key(|&(id, _)| id);
        let mut expected: Vec<(u64, Effort)> =
            quick.iter().map(|&id| (id, Effort::Optimized)).collect();
        expected.sort_by_key(|&(id, _)| id);
        assert_eq!(again, expected, "every quick job once more, optimized");
    }

    /// The compile thread takes the most boosted job first, and the newest among equals;
    /// a boost for a job no longer queued changes nothing.
    #[test]
    fn queue_takes_boosted_jobs_first_then_the_newest() {
        let bytes = [0x31, 0xC9, 0xEB, 0xFE];
        let mut q = JobQueue::default();
        for id in 1..=4 {
            q.push(id, 0, job(&bytes));
        }
        q.boost(2);
        q.boost(1);
        q.boost(2);
        q.boost(99);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|j| j.id)).collect();
        assert_eq!(order, [2, 1, 4, 3]);
        assert!(q.is_empty());
        q.push(5, 0, job(&bytes));
        q.boost(5);
        q.push(6, 0, job(&bytes));
        let five = q.pop().expect("job 5");
        assert_eq!(five.id, 5);
        // Queued again (for the second pass), it keeps its boost: ahead of the newer 6.
        q.push(7, 0, job(&bytes));
        q.push_queued(five);
        q.boost(6);
        q.boost(6);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|j| j.id)).collect();
        assert_eq!(order, [6, 5, 7]);
        assert_eq!(q.len(), 0);
    }
}
