//! The driver against a fake chain and an in-memory network (the channels the libp2p task would
//! hold): outputs in order, persist before send, a crash between persist and send, commits
//! published to followers and subscribers, block sync.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use medchain_crypto::Hash32;
use medchain_proto::v1::{self, peer_message::Body};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::*;
use crate::net::PeerTraffic;

/// What the fake chain made durable, shared across a "restart".
#[derive(Default)]
struct Disk {
    /// Votes persisted, in order.
    votes: Vec<u64>,
    /// Heights committed, in order.
    blocks: Vec<u64>,
}

type Journal = Arc<Mutex<Vec<String>>>;

/// A chain whose engine votes for the number a message carries: persist the vote, commit that
/// height, answer the sender with the vote. On start it re-sends its last persisted vote, as both
/// real engines do.
struct FakeChain {
    disk: Arc<Mutex<Disk>>,
    journal: Journal,
    /// Crash right after the next persist is durable, before anything after it.
    crash_after_persist: bool,
}

fn vote(n: u64) -> v1::PbftMessage {
    v1::PbftMessage {
        replica: n as u32,
        ..Default::default()
    }
}

impl Chain for FakeChain {
    type Msg = v1::PbftMessage;
    type Timer = u8;
    type Block = u64;
    type Persist = u64;
    type Commit = u64;
    type Effects = u64;
    type Note = ();

    fn step(&mut self, now_ms: u64, input: Input<Self>) -> Vec<Output<Self>> {
        match input {
            Input::Start => {
                let last = self.disk.lock().unwrap().votes.last().copied().unwrap_or(0);
                vec![Output::Broadcast(vote(last))]
            }
            Input::Message { from, msg } => {
                let n = msg.replica as u64;
                vec![
                    Output::Persist(n),
                    Output::Commit(n),
                    Output::Send {
                        to: from,
                        msg: vote(n),
                    },
                ]
            }
            Input::Submit(_) => vec![Output::SetTimer {
                timer: 1,
                at_ms: now_ms + 20,
            }],
            Input::Timer(_) => vec![Output::Broadcast(vote(99))],
            Input::Blocks(heights) => heights.into_iter().map(Output::Commit).collect(),
        }
    }

    fn persist(&mut self, n: u64) -> Job<()> {
        let (disk, journal, crash) = (
            self.disk.clone(),
            self.journal.clone(),
            self.crash_after_persist,
        );
        Box::new(move || {
            disk.lock().unwrap().votes.push(n);
            journal.lock().unwrap().push(format!("persist {n}"));
            if crash {
                return Err(DriverError::Storage("crashed after the write".into()));
            }
            Ok(())
        })
    }

    fn commit(&mut self, n: u64) -> Job<Committed<u64>> {
        let (disk, journal) = (self.disk.clone(), self.journal.clone());
        Box::new(move || {
            disk.lock().unwrap().blocks.push(n);
            journal.lock().unwrap().push(format!("commit {n}"));
            Ok(Committed {
                height: n,
                hash: id_of(&n.to_be_bytes()),
                timestamp_ms: 0,
                view: 0,
                leader: 0,
                effective: vec![id_of(b"tx")],
                skipped: 0,
                seen: vec![(id_of(b"tx"), b"tx".to_vec())],
                failed: vec![],
                effects: n * 10,
            })
        })
    }

    fn view(&self) -> u64 {
        0
    }

    fn wrap(msg: v1::PbftMessage) -> Body {
        Body::Pbft(msg)
    }

    fn read(body: Body) -> Incoming<Self> {
        match body {
            Body::Pbft(m) => Incoming::Consensus(m),
            Body::BlockResponse(r) => Incoming::Blocks {
                blocks: vec![r.tip_height],
                malformed: None,
                peer_tip: r.tip_height,
            },
            _ => Incoming::Other,
        }
    }

    fn serve_blocks(&self, _from: u64, _count: u32) -> Result<v1::BlockResponse, DriverError> {
        Ok(v1::BlockResponse::default())
    }

    fn log_note(&self, _note: ()) -> Option<&'static str> {
        None
    }

    fn checker(&self) -> Checker {
        Arc::new(|bytes| {
            Ok(CheckedTx {
                id: id_of(bytes),
                replay_key: bytes.to_vec(),
                bytes: bytes.to_vec(),
                signer: bytes.to_vec(),
                kind: "test",
                blob: None,
            })
        })
    }
}

/// Records the effects of every commit it follows.
struct Recorder(Arc<Mutex<Vec<u64>>>);

impl Follower<u64> for Recorder {
    fn on_commit(&mut self, block: &Committed<u64>) -> Result<(), DriverError> {
        self.0.lock().unwrap().push(block.effects);
        Ok(())
    }
}

/// The driver's side of an in-memory network, and its other handles.
struct Harness {
    commands: mpsc::Receiver<NetCommand>,
    events: mpsc::Sender<NetEvent>,
    submit: mpsc::Sender<Submission>,
    status: watch::Receiver<Status>,
    blocks: broadcast::Receiver<Arc<BlockEvent>>,
    followed: Arc<Mutex<Vec<u64>>>,
    join: tokio::task::JoinHandle<Result<(), DriverError>>,
    _stats: watch::Sender<NetStats>,
}

fn start(chain: FakeChain) -> Harness {
    let (net, commands) = mpsc::channel(64);
    let (events_tx, events) = mpsc::channel(64);
    let (stats_tx, stats) = watch::channel(NetStats::default());
    let (submit, submits) = mpsc::channel(64);
    let (status_tx, status) = watch::channel(Status::default());
    let (blocks_tx, blocks) = broadcast::channel(16);
    let followed = Arc::new(Mutex::new(Vec::new()));
    let wiring = Wiring {
        net,
        events,
        stats,
        submits,
        resubmit: submit.clone(),
        status: Status::default(),
        status_tx,
        blocks: blocks_tx,
        metrics: Arc::new(Metrics::new(Arc::new(PeerTraffic::default()))),
        nodes: 4,
        me: 0,
        mempool_capacity: 100,
        mempool_quotas: crate::mempool::Quotas::none(),
        pending_blobs: Default::default(),
        followers: vec![Box::new(Recorder(followed.clone()))],
    };
    Harness {
        commands,
        events: events_tx,
        submit,
        status,
        blocks,
        followed,
        join: tokio::spawn(Driver::run(chain, wiring)),
        _stats: stats_tx,
    }
}

impl Harness {
    /// The next command other than the once-a-second block poll; `None` if the driver stopped.
    async fn next_command(&mut self) -> Option<NetCommand> {
        loop {
            let cmd = tokio::time::timeout(Duration::from_secs(10), self.commands.recv())
                .await
                .expect("the driver sent nothing for 10 s")?;
            let poll = matches!(
                &cmd,
                NetCommand::Send { msg, .. } if matches!(msg.body, Some(Body::BlockRequest(_)))
            );
            if !poll {
                return Some(cmd);
            }
        }
    }

    async fn deliver(&self, from: u32, body: Body) {
        let msg = medchain_proto::canonical::peer_message(body);
        self.events
            .send(NetEvent::Message { from, msg })
            .await
            .unwrap();
    }
}

fn fake(disk: &Arc<Mutex<Disk>>, journal: &Journal, crash: bool) -> FakeChain {
    FakeChain {
        disk: disk.clone(),
        journal: journal.clone(),
        crash_after_persist: crash,
    }
}

fn vote_of(cmd: &NetCommand) -> (Option<u32>, u32) {
    let (to, msg) = match cmd {
        NetCommand::Send { to, msg } => (Some(*to), msg),
        NetCommand::Broadcast(msg) => (None, msg),
        other => panic!("unexpected command {other:?}"),
    };
    match &msg.body {
        Some(Body::Pbft(m)) => (to, m.replica),
        other => panic!("unexpected message {other:?}"),
    }
}

#[tokio::test]
async fn outputs_are_performed_in_order_and_commits_are_published() {
    let (disk, journal) = (Arc::default(), Journal::default());
    let mut h = start(fake(&disk, &journal, false));
    assert_eq!(vote_of(&h.next_command().await.unwrap()), (None, 0));
    h.deliver(2, Body::Pbft(vote(7))).await;
    let answer = h.next_command().await.unwrap();
    // By the time the answer is on the network, the vote is durable and the block executed.
    assert_eq!(
        *journal.lock().unwrap(),
        vec!["persist 7".to_string(), "commit 7".to_string()]
    );
    assert_eq!(vote_of(&answer), (Some(2), 7));
    let event = h.blocks.recv().await.unwrap();
    assert_eq!(event.height, 7);
    assert_eq!(event.hash, id_of(&7u64.to_be_bytes()));
    assert_eq!(*h.followed.lock().unwrap(), vec![70]);
    h.status.wait_for(|s| s.height == 7).await.unwrap();
    assert_eq!(h.status.borrow().committed_transactions, 1);
}

#[tokio::test]
async fn a_crash_between_persist_and_send_sends_nothing_and_restarts_from_the_vote() {
    let (disk, journal) = (Arc::default(), Journal::default());
    let mut h = start(fake(&disk, &journal, true));
    assert_eq!(vote_of(&h.next_command().await.unwrap()), (None, 0));
    h.deliver(3, Body::Pbft(vote(5))).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut h.join)
        .await
        .expect("the driver stops")
        .unwrap();
    assert!(
        matches!(stopped, Err(DriverError::Storage(_))),
        "{stopped:?}"
    );
    // Nothing after the persist happened: no execution, no answer.
    assert_eq!(*journal.lock().unwrap(), vec!["persist 5".to_string()]);
    assert!(disk.lock().unwrap().blocks.is_empty());
    assert!(
        h.next_command().await.is_none(),
        "nothing was sent after the crash"
    );
    // Restarted on the same disk, the node re-sends the vote it made durable, never another.
    let mut h = start(fake(&disk, &journal, false));
    assert_eq!(vote_of(&h.next_command().await.unwrap()), (None, 5));
}

#[tokio::test]
async fn submissions_enter_the_mempool_are_forwarded_and_timers_fire() {
    let (disk, journal) = (Arc::default(), Journal::default());
    let mut h = start(fake(&disk, &journal, false));
    h.next_command().await.unwrap();
    let (reply, answer) = oneshot::channel();
    let tx = CheckedTx {
        id: id_of(b"tx"),
        replay_key: b"tx".to_vec(),
        bytes: b"tx".to_vec(),
        signer: b"tx".to_vec(),
        kind: "test",
        blob: None,
    };
    h.submit
        .send(Submission {
            tx: tx.clone(),
            forward: true,
            reply,
        })
        .await
        .unwrap();
    answer.await.unwrap().unwrap();
    match h.next_command().await.unwrap() {
        NetCommand::Broadcast(m) => match m.body {
            Some(Body::Transactions(b)) => assert_eq!(b.transactions, vec![b"tx".to_vec()]),
            other => panic!("expected the forward, got {other:?}"),
        },
        other => panic!("expected the forward, got {other:?}"),
    }
    h.status.wait_for(|s| s.mempool == 1).await.unwrap();
    // The same transaction again is refused by the mempool.
    let (reply, answer) = oneshot::channel();
    h.submit
        .send(Submission {
            tx,
            forward: true,
            reply,
        })
        .await
        .unwrap();
    assert!(matches!(
        answer.await.unwrap(),
        Err(AdmitError::Mempool(MempoolError::Duplicate(_)))
    ));
    // The engine's timer fires.
    assert_eq!(vote_of(&h.next_command().await.unwrap()), (None, 99));
    // A commit of that transaction empties the pool.
    h.deliver(1, Body::Pbft(vote(1))).await;
    h.next_command().await.unwrap();
    h.status.wait_for(|s| s.mempool == 0).await.unwrap();
}

#[tokio::test]
async fn a_sync_answer_far_ahead_is_fed_to_the_engine_and_asked_again() {
    let (disk, journal) = (Arc::default(), Journal::default());
    let mut h = start(fake(&disk, &journal, false));
    h.next_command().await.unwrap();
    h.events.send(NetEvent::Connected(2)).await.unwrap();
    let answer = v1::BlockResponse {
        blocks: vec![],
        tip_height: 40,
    };
    h.deliver(2, Body::BlockResponse(answer)).await;
    h.status.wait_for(|s| s.height == 40).await.unwrap();
    assert_eq!(disk.lock().unwrap().blocks, vec![40]);
    // Caught up to the peer's height: ready again.
    assert_eq!(h.status.borrow().catching_up, None);
}

/// A distinct id per input for the fake chain (not a hash function: the driver never hashes).
fn id_of(bytes: &[u8]) -> Hash32 {
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        out[i % 32] ^= b;
    }
    Hash32(out)
}
