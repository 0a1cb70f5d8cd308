//! medchain-sim: runs the consensus engines under seeded fault schedules.
//!
//!     medchain-sim pbft --seeds N [--start S] [--n 4|7|10] [--threads T] [--mutant M]
//!     medchain-sim pbft --seed S [--trace] [--n N] [--mutant M]
//!     medchain-sim dpos --seeds N [--start S] [--large] [--threads T] [--mutant M]
//!     medchain-sim dpos --seed S [--trace] [--large] [--mutant M]
//!     medchain-sim dpos (--seeds N | --seed S) --lock-split [--mutant M]
//!
//! `--mutant M` switches on one of the deliberate engine bugs of the mutation check in every
//! honest node (names: `medchain-sim pbft --mutant list`); the run should then report violations.
//! `--large` gives every dpos seed the 121-institution consortium (101 RPN + 20 ATN); without it
//! one seed in 50 is large and the rest are small consortia. `--lock-split` runs the scripted
//! lock-split attack instead (the schedule that catches `unlock-on-lower-pol`), seeds varying its
//! network delays.
//! A failing seed prints its scenario and violation; replay it with `--seed S --trace`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use medchain_tests::sim::{dpos, pbft, Violation};

struct Args {
    engine: String,
    seeds: Option<u64>,
    start: u64,
    seed: Option<u64>,
    n: Option<usize>,
    trace: bool,
    large: bool,
    lock_split: bool,
    threads: usize,
    mutant: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let engine = it
        .next()
        .ok_or("usage: medchain-sim pbft|dpos (--seeds N | --seed S [--trace])")?;
    let mut a = Args {
        engine,
        seeds: None,
        start: 0,
        seed: None,
        n: None,
        trace: false,
        large: false,
        lock_split: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mutant: None,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|_| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = Some(value("--seeds")?),
            "--start" => a.start = value("--start")?,
            "--seed" => a.seed = Some(value("--seed")?),
            "--n" => a.n = Some(value("--n")? as usize),
            "--threads" => a.threads = value("--threads")?.max(1) as usize,
            "--trace" => a.trace = true,
            "--large" => a.large = true,
            "--lock-split" => a.lock_split = true,
            "--mutant" => a.mutant = Some(it.next().ok_or("--mutant needs a name")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.engine != "pbft" && a.engine != "dpos" {
        return Err(format!(
            "unknown engine {:?}: choose `pbft` or `dpos`",
            a.engine
        ));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.engine == "dpos" {
        dpos_main(&args)
    } else {
        pbft_main(&args)
    }
}

/// Prints one replayed seed (trace, scenario, summary, verdict).
fn replay(
    trace: &[String],
    scenario: String,
    summary: String,
    violation: Option<Violation>,
) -> ExitCode {
    for line in trace {
        println!("{line}");
    }
    println!("{scenario}");
    println!("{summary}");
    match violation {
        Some(v) => {
            println!("VIOLATION: {v}");
            ExitCode::FAILURE
        }
        None => {
            println!("ok");
            ExitCode::SUCCESS
        }
    }
}

/// Runs seeds `start..start+count` on `threads` threads; `one(seed)` runs a seed and returns its
/// failure line, if any. Returns the failing seeds and the wall-clock seconds.
fn sweep(args: &Args, count: u64, one: impl Fn(u64) -> Option<String> + Sync) -> (Vec<u64>, f64) {
    // Wall-clock time of the whole run, for the report only; the simulation itself is virtual time.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let next = AtomicU64::new(args.start);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= args.start + count {
                    break;
                }
                if let Some(line) = one(seed) {
                    println!("FAIL {line}");
                    failures.lock().expect("not poisoned").push(seed);
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("not poisoned");
    failures.sort_unstable();
    (failures, started.elapsed().as_secs_f64())
}

/// The end of a sweep's report line, and its exit code.
fn verdict(failures: &[u64]) -> (String, ExitCode) {
    if failures.is_empty() {
        ("0 violation(s)".into(), ExitCode::SUCCESS)
    } else {
        (
            format!(
                "{} violation(s): seeds {failures:?} (replay with --seed S --trace)",
                failures.len()
            ),
            ExitCode::FAILURE,
        )
    }
}

/// The mutant `--mutant` names among `known` (`Ok(None)` without the flag); `list` prints the
/// names and stops.
fn pick_mutant<M: Copy>(args: &Args, known: &[(&str, M)]) -> Result<Option<M>, ExitCode> {
    let Some(name) = args.mutant.as_deref() else {
        return Ok(None);
    };
    let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
    if name == "list" {
        println!("{}", names.join("\n"));
        return Err(ExitCode::SUCCESS);
    }
    match known.iter().find(|(n, _)| *n == name) {
        Some((_, m)) => Ok(Some(*m)),
        None => {
            eprintln!(
                "error: unknown mutant {name:?} for {}: choose one of {}",
                args.engine,
                names.join(", ")
            );
            Err(ExitCode::from(2))
        }
    }
}

fn pbft_main(args: &Args) -> ExitCode {
    let mutant = match pick_mutant(args, &pbft::MUTANTS) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let scenario = |seed| {
        let mut scn = pbft::Scenario::generate(seed, args.n);
        scn.mutant = mutant;
        scn
    };
    if let Some(seed) = args.seed {
        let scn = scenario(seed);
        let out = pbft::run(&scn, args.trace);
        let summary = format!(
            "events {} virtual time {} ms executed {} trace {}",
            out.events, out.end_ms, out.executed, out.trace_hash
        );
        return replay(&out.trace, scn.describe(), summary, out.violation);
    }
    let count = args.seeds.unwrap_or(100);
    let by_n = Mutex::new([0u64; 3]);
    let (failures, secs) = sweep(args, count, |seed| {
        let scn = scenario(seed);
        let out = pbft::run(&scn, false);
        let idx = match scn.n {
            4 => 0,
            7 => 1,
            _ => 2,
        };
        by_n.lock().expect("not poisoned")[idx] += 1;
        out.violation.map(|v| format!("{} -> {v}", scn.describe()))
    });
    let by_n = by_n.into_inner().expect("not poisoned");
    let (end, code) = verdict(&failures);
    println!(
        "pbft: ran {count} seeds ({}..{}) n=4:{} n=7:{} n=10:{} in {secs:.1}s; {end}",
        args.start,
        args.start + count,
        by_n[0],
        by_n[1],
        by_n[2],
    );
    code
}

fn dpos_main(args: &Args) -> ExitCode {
    let large = args.large.then_some(true);
    let mutant = match pick_mutant(args, &dpos::MUTANTS) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let scenario = |seed| {
        let mut scn = if args.lock_split {
            dpos::Scenario::lock_split(seed)
        } else {
            dpos::Scenario::generate(seed, large)
        };
        scn.mutant = mutant;
        scn
    };
    if let Some(seed) = args.seed {
        let scn = scenario(seed);
        let out = dpos::run(&scn, args.trace);
        let summary = format!(
            "events {} virtual time {} ms height {} replaced {} trace {}",
            out.events, out.end_ms, out.height, out.replaced, out.trace_hash
        );
        return replay(&out.trace, scn.describe(), summary, out.violation);
    }
    let count = args.seeds.unwrap_or(100);
    // (seeds with 121 institutions, final heights, Byzantine representatives, replaced)
    let stats = Mutex::new((0u64, 0u64, 0u64, 0u64));
    let (failures, secs) = sweep(args, count, |seed| {
        let scn = scenario(seed);
        let out = dpos::run(&scn, false);
        let mut st = stats.lock().expect("not poisoned");
        st.0 += u64::from(scn.rpn == 101);
        st.1 += out.height;
        st.2 += scn
            .byzantine
            .iter()
            .filter(|(_, b)| {
                matches!(
                    b,
                    dpos::Behaviour::Silent
                        | dpos::Behaviour::Equivocator
                        | dpos::Behaviour::InvalidBlock
                        | dpos::Behaviour::MultiProposer
                )
            })
            .count() as u64;
        st.3 += out.replaced as u64;
        out.violation.map(|v| format!("{} -> {v}", scn.describe()))
    });
    let st = stats.into_inner().expect("not poisoned");
    let (end, code) = verdict(&failures);
    println!(
        "dpos: ran {count} seeds ({}..{}) of which {} with 121 institutions; {} final heights; {} of {} Byzantine representative roles replaced; in {secs:.1}s; {end}",
        args.start,
        args.start + count,
        st.0,
        st.1,
        st.3,
        st.2,
    );
    code
}
