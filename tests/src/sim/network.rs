//! The simulated network and clock: an event queue ordered by (virtual time, insertion), and a
//! lossy, partitionable message model that heals at the global stabilisation time (GST).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Where a crash interrupts a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Between two events: every action of the last call was performed.
    BetweenEvents,
    /// Inside the next call that has actions: only a random prefix of them is performed (possibly
    /// none), as when a process dies between two writes or sends.
    InCall,
    /// Inside the next call that executes something, right after one of its executions: the
    /// cut that exposes an execution ahead of the state that justifies it.
    AfterExecution,
}

/// One crash of one node, restarting from what it made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub node: u32,
    pub at: u64,
    /// `None`: the node never comes back (it counts against the fault budget).
    pub restart: Option<u64>,
    pub cut: Cut,
}

/// A crash of `node` at `at`, back at `back`, cut at a random place (a third each).
fn crash_at(rng: &mut ChaCha8Rng, node: u32, at: u64, back: u64) -> Crash {
    let cut = [Cut::BetweenEvents, Cut::InCall, Cut::AfterExecution][rng.gen_range(0..3)];
    Crash {
        node,
        at,
        restart: Some(back),
        cut,
    }
}

/// Crash times for `nodes`: each crashes before `gst - 2 s` and restarts within 10 s, before GST,
/// cut between events, inside a call, or right after an execution (a third each).
pub fn crash_schedule(rng: &mut ChaCha8Rng, nodes: &[u32], gst: u64) -> Vec<Crash> {
    nodes
        .iter()
        .map(|r| {
            let at = rng.gen_range(0..gst - 2_000);
            let back = (at + rng.gen_range(300..10_000)).min(gst - 1);
            crash_at(rng, *r, at, back)
        })
        .collect()
}

/// Every one of `nodes` crashes within one second, more than the protocol's fault budget at once,
/// and each restarts before GST.
pub fn mass_crash(rng: &mut ChaCha8Rng, nodes: &[u32], gst: u64) -> Vec<Crash> {
    let start = rng.gen_range(0..gst / 2);
    nodes
        .iter()
        .map(|r| {
            let at = start + rng.gen_range(0..1_000);
            let back = (at + rng.gen_range(500..5_000)).min(gst - 1);
            crash_at(rng, *r, at, back)
        })
        .collect()
}

/// How many of a call's `actions` an armed crash (`armed`) lets through, or `None` when no crash
/// is armed or this call is not the one it cuts; `is_execution` tells the actions that execute
/// (or finalize) something.
pub fn cut_point<A>(
    rng: &mut ChaCha8Rng,
    armed: Option<Cut>,
    actions: &[A],
    is_execution: impl Fn(&A) -> bool,
) -> Option<usize> {
    let executions: Vec<usize> = (0..actions.len())
        .filter(|k| is_execution(&actions[*k]))
        .collect();
    match armed? {
        Cut::BetweenEvents => Some(actions.len()),
        Cut::InCall if !actions.is_empty() => Some(rng.gen_range(0..actions.len())),
        Cut::AfterExecution if !executions.is_empty() => {
            Some(executions[rng.gen_range(0..executions.len())] + 1)
        }
        _ => None,
    }
}

/// Up to two partitions before GST, each isolating up to half of the `n` nodes for at most
/// `max_len_ms`.
pub fn partitions(
    rng: &mut ChaCha8Rng,
    n: usize,
    gst: u64,
    max_len_ms: u64,
) -> Vec<(u64, u64, Vec<u32>)> {
    (0..rng.gen_range(0..=2))
        .map(|_| {
            let size = rng.gen_range(1..=n / 2);
            let mut set: Vec<u32> = (0..n as u32).collect();
            set.shuffle(rng);
            set.truncate(size);
            let from = rng.gen_range(0..gst);
            (from, (from + rng.gen_range(500..max_len_ms)).min(gst), set)
        })
        .collect()
}

/// Network behaviour before GST (after it, no drops, no partitions, short delays).
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub max_delay_ms: u64,
    pub max_delay_after_gst_ms: u64,
    pub gst_ms: u64,
    /// (from, until, isolated replicas): messages between the isolated set and the rest are lost.
    pub partitions: Vec<(u64, u64, Vec<u32>)>,
    /// (from, to, extra delay): asymmetric links, slow in one direction only, before GST.
    pub slow_links: Vec<(u32, u32, u64)>,
    /// Each node's clock (one per node; skewed in some schedules, see [`clocks`]).
    pub clocks: Vec<Clock>,
}

/// One schedule in eight is a long asynchrony: until GST, delays of up to 1.5-3 s, beyond the
/// engines' slot and timeout lengths, so decisions take several rounds or views.
pub fn long_asynchrony(rng: &mut ChaCha8Rng) -> Option<u64> {
    rng.gen_bool(0.125).then(|| rng.gen_range(1_500..=3_000))
}

/// One schedule in four has up to three asymmetric links among `n` nodes: messages one way are
/// delayed by up to two seconds more than the other way (before GST).
pub fn slow_links(rng: &mut ChaCha8Rng, n: usize) -> Vec<(u32, u32, u64)> {
    if n < 2 || !rng.gen_bool(0.25) {
        return Vec::new();
    }
    (0..rng.gen_range(1..=3))
        .map(|_| {
            let from = rng.gen_range(0..n as u32);
            let to = (from + rng.gen_range(1..n as u32)) % n as u32;
            (from, to, rng.gen_range(100..=2_000))
        })
        .collect()
}

/// One node's clock: it reads `offset_ms` away from virtual time and runs `rate_ppm` parts per
/// million fast (positive) or slow, as an NTP-disciplined clock does over a run (both stay
/// bounded: at most a few hundred milliseconds apart over the simulated minutes). A timer fires
/// when this clock reaches its time, never earlier, as a real timer on the node's clock does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    pub offset_ms: i64,
    pub rate_ppm: i64,
}

const PPM: i128 = 1_000_000;

impl Clock {
    /// What this node's clock reads at virtual time `now`.
    pub fn local(&self, now: u64) -> u64 {
        let t = now as i128 * (PPM + self.rate_ppm as i128) / PPM + self.offset_ms as i128;
        t.max(0) as u64
    }

    /// The first virtual time, not before `now`, at which this clock reads at least `at_local`.
    pub fn fire_at(&self, now: u64, at_local: u64) -> u64 {
        if self.local(now) >= at_local {
            return now;
        }
        let rate = PPM + self.rate_ppm as i128;
        let span = (at_local as i128 - self.offset_ms as i128) * PPM;
        let mut t = (span + rate - 1).div_euclid(rate).max(now as i128) as u64;
        // Rounding: step to the first millisecond the clock reads the time (or a later one).
        while self.local(t) < at_local {
            t += 1;
        }
        t
    }
}

/// One schedule in four has skewed clocks: every node's clock is up to `max_offset_ms` off
/// virtual time and up to 1,000 ppm fast or slow; one node in such a schedule may be off by up
/// to three times the bound (a misconfigured clock). The others: perfect clocks.
pub fn clocks(rng: &mut ChaCha8Rng, n: usize, max_offset_ms: i64) -> Vec<Clock> {
    if !rng.gen_bool(0.25) {
        return vec![Clock::default(); n];
    }
    let mut out: Vec<Clock> = (0..n)
        .map(|_| Clock {
            offset_ms: rng.gen_range(-max_offset_ms..=max_offset_ms),
            rate_ppm: rng.gen_range(-1_000..=1_000),
        })
        .collect();
    if rng.gen_bool(0.3) {
        let i = rng.gen_range(0..n);
        out[i].offset_ms = rng.gen_range(-3 * max_offset_ms..=3 * max_offset_ms);
    }
    out
}

/// A queue of timed events; ties are broken by insertion order, so runs are deterministic.
///
/// Events sit in slots that are reused once popped: memory follows the events pending, not
/// every event of the run (a long or chatty schedule once grew the slots past 3 GiB, seed
/// 178124). Which slot an event takes never affects the order.
#[derive(Debug)]
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<E>>,
    free: Vec<usize>,
    counter: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            counter: 0,
        }
    }
}

impl<E> Queue<E> {
    pub fn push(&mut self, at_ms: u64, event: E) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.heap.push(Reverse((at_ms, self.counter, slot)));
        self.counter += 1;
    }

    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let e = self.events[slot].take().expect("each event popped once");
        self.free.push(slot);
        Some((at, e))
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Slots held, pending or free: the queue's memory, in events.
    pub fn slots(&self) -> usize {
        self.events.len()
    }
}

/// How lossy and slow one simulator's networks may be before GST.
#[derive(Clone, Copy, Debug)]
pub struct NetBounds {
    pub max_drop_per_mille: u32,
    pub max_duplicate_per_mille: u32,
    /// Delays up to a random bound of at most this (or a long asynchrony, see
    /// [`long_asynchrony`]).
    pub max_delay_ms: u64,
    /// Skewed clocks up to this far off (see [`clocks`]).
    pub max_clock_offset_ms: i64,
}

impl NetConfig {
    /// The network of one seed among `n` nodes: loss, duplication and delays drawn within
    /// `bounds`, the given partitions, asymmetric links and skewed clocks; 50 ms delays after
    /// `gst_ms`.
    pub fn random(
        rng: &mut ChaCha8Rng,
        n: usize,
        gst_ms: u64,
        partitions: Vec<(u64, u64, Vec<u32>)>,
        bounds: NetBounds,
    ) -> Self {
        NetConfig {
            drop_per_mille: rng.gen_range(0..=bounds.max_drop_per_mille),
            duplicate_per_mille: rng.gen_range(0..=bounds.max_duplicate_per_mille),
            max_delay_ms: long_asynchrony(rng)
                .unwrap_or_else(|| rng.gen_range(5..=bounds.max_delay_ms)),
            max_delay_after_gst_ms: 50,
            gst_ms,
            partitions,
            slow_links: slow_links(rng, n),
            clocks: clocks(rng, n, bounds.max_clock_offset_ms),
        }
    }

    /// Node `i`'s clock reading at virtual time `now`.
    pub fn local(&self, i: u32, now: u64) -> u64 {
        self.clocks.get(i as usize).map_or(now, |c| c.local(now))
    }

    /// When a timer node `i` set at `now` for its local time `at_local` fires, in virtual time.
    pub fn fire_at(&self, i: u32, now: u64, at_local: u64) -> u64 {
        self.clocks
            .get(i as usize)
            .map_or(at_local.max(now), |c| c.fire_at(now, at_local))
    }

    /// How many nodes' clocks are skewed.
    pub fn skewed(&self) -> usize {
        self.clocks
            .iter()
            .filter(|c| **c != Clock::default())
            .count()
    }

    fn partitioned(&self, now: u64, a: u32, b: u32) -> bool {
        self.partitions.iter().any(|(from, until, set)| {
            now >= *from && now < *until && (set.contains(&a) != set.contains(&b))
        })
    }

    /// Delivery times of one message from `a` to `b` sent at `now`: none (lost), one, or two
    /// (duplicated). Reordering follows from independent random delays.
    pub fn deliveries(&self, rng: &mut ChaCha8Rng, now: u64, a: u32, b: u32) -> Vec<u64> {
        if now >= self.gst_ms {
            return vec![now + rng.gen_range(1..=self.max_delay_after_gst_ms)];
        }
        if self.partitioned(now, a, b) || rng.gen_range(0..1000) < self.drop_per_mille {
            return Vec::new();
        }
        let extra: u64 = self
            .slow_links
            .iter()
            .filter(|(from, to, _)| (*from, *to) == (a, b))
            .map(|(_, _, ms)| *ms)
            .sum();
        let mut out = vec![now + extra + rng.gen_range(1..=self.max_delay_ms)];
        if rng.gen_range(0..1000) < self.duplicate_per_mille {
            out.push(now + extra + rng.gen_range(1..=self.max_delay_ms));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{Clock, Queue};

    /// A run with a timer always pending never empties the queue: its slots must still follow
    /// the pending events (seed 178124 ran out of memory when they followed every event).
    #[test]
    fn the_queue_holds_the_pending_events_only_and_keeps_their_order() {
        let mut q = Queue::default();
        q.push(u64::MAX, "standing timer");
        for round in 0..100_000u64 {
            q.push(round * 10 + 5, "later");
            q.push(round * 10, "first");
            q.push(round * 10 + 5, "later, second");
            assert_eq!(q.pop(), Some((round * 10, "first")));
            assert_eq!(q.pop(), Some((round * 10 + 5, "later")));
            assert_eq!(q.pop(), Some((round * 10 + 5, "later, second")));
        }
        assert!(q.slots() <= 4, "{} slots for 1 pending event", q.slots());
        assert_eq!(q.pop(), Some((u64::MAX, "standing timer")));
        assert!(q.is_empty());
    }

    #[test]
    fn a_timer_fires_when_its_clock_reaches_the_time_never_earlier() {
        for (offset_ms, rate_ppm) in [(0, 0), (-900, -1_000), (900, 1_000), (-300, 0), (5, -7)] {
            let c = Clock {
                offset_ms,
                rate_ppm,
            };
            for now in [0u64, 1, 999, 10_000, 123_457] {
                for d in [0u64, 1, 2, 300, 1_000, 77_777] {
                    let at_local = c.local(now) + d;
                    let t = c.fire_at(now, at_local);
                    assert!(t >= now);
                    assert!(c.local(t) >= at_local, "{c:?} now {now} +{d}: fires early");
                    if t > now {
                        assert!(
                            c.local(t - 1) < at_local,
                            "{c:?} now {now} +{d}: fires late"
                        );
                    }
                }
            }
        }
    }
}
