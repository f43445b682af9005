//! `burn-peft-fuzz [--seconds N] [--seed S] [--out DIR] [TARGET...]`: runs each fuzz target
//! (all by default) for N seconds (default 20) on mutations of its seeds, and exits 1 if any
//! input panicked, aborted or was slow. The input that failed is written to DIR (default
//! `target/fuzz`) to replay with `--replay FILE TARGET`.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn_peft_fuzz::{Mutator, TARGETS, Target};

/// What each input may allocate: an absurd size must be refused, not allocated.
const MEMORY_LIMIT: u64 = 256 << 20;
/// An input that takes longer than this is reported.
const SLOW: Duration = Duration::from_secs(10);

/// The input being run, for the abort handler.
static CURRENT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
/// The file the abort handler writes it to.
static ABORT_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

extern "C" fn on_abort(_: libc::c_int) {
    // Only async-signal-safe calls: write(2) and _exit(2).
    let fd = ABORT_FD.load(Ordering::SeqCst);
    let ptr = CURRENT.load(Ordering::SeqCst);
    let len = CURRENT_LEN.load(Ordering::SeqCst);
    let note = b"burn-peft-fuzz: the process aborted; the input is in target/fuzz/abort.bin\n";
    // SAFETY: `ptr`/`len` describe the input vector, alive while it runs.
    unsafe {
        if fd != usize::MAX && !ptr.is_null() {
            libc::write(fd as libc::c_int, ptr.cast(), len);
        }
        libc::write(2, note.as_ptr().cast(), note.len());
        libc::_exit(134);
    }
}

struct Args {
    seconds: u64,
    seed: u64,
    out: PathBuf,
    replay: Option<PathBuf>,
    targets: Vec<&'static Target>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 20,
        seed: 1,
        out: PathBuf::from("target/fuzz"),
        replay: None,
        targets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                args.seconds = value("--seconds")?.parse().map_err(|e| format!("{e}"))?
            }
            "--seed" => args.seed = value("--seed")?.parse().map_err(|e| format!("{e}"))?,
            "--out" => args.out = value("--out")?.into(),
            "--replay" => args.replay = Some(value("--replay")?.into()),
            "-h" | "--help" => {
                let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                return Err(format!(
                    "burn-peft-fuzz [--seconds N] [--seed S] [--out DIR] [--replay FILE] \
                     [TARGET...]; targets: {}",
                    names.join(", ")
                ));
            }
            name => args.targets.push(
                TARGETS
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or(format!("unknown target '{name}'"))?,
            ),
        }
    }
    if args.targets.is_empty() {
        args.targets = TARGETS.iter().collect();
    }
    Ok(args)
}

/// Runs one input; `Err` with a description when it panicked or was slow.
fn run_one(target: &Target, input: &[u8]) -> Result<Duration, String> {
    CURRENT.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
    CURRENT_LEN.store(input.len(), Ordering::SeqCst);
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let took = started.elapsed();
    CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
    match result {
        Err(_) => Err("panicked".into()),
        Ok(()) if took > SLOW => Err(format!("took {:.1} s", took.as_secs_f64())),
        Ok(()) => Ok(took),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    burn_peft_core::limits::set_memory_limit(Some(MEMORY_LIMIT));
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("{}: {e}", args.out.display());
        std::process::exit(2);
    }
    if let Some(file) = &args.replay {
        let input = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for target in &args.targets {
            match run_one(target, &input) {
                Ok(took) => println!("{}: ok in {:.3} s", target.name, took.as_secs_f64()),
                Err(e) => println!("{}: {e}", target.name),
            }
        }
        return;
    }
    let abort_path = args.out.join("abort.bin");
    if let Ok(file) = std::fs::File::create(&abort_path) {
        use std::os::fd::IntoRawFd;
        ABORT_FD.store(file.into_raw_fd() as usize, Ordering::SeqCst);
    }
    // SAFETY: installs a handler that only writes and exits.
    unsafe { libc::signal(libc::SIGABRT, on_abort as *const () as libc::sighandler_t) };

    let mut failed = 0;
    for target in &args.targets {
        let seeds = (target.seeds)();
        let mut mutator = Mutator::new(args.seed);
        let started = Instant::now();
        let (mut runs, mut slowest) = (0u64, Duration::ZERO);
        let mut failure = None;
        // The seeds themselves first, then mutations until the time is up.
        let mut inputs = seeds.clone().into_iter();
        while failure.is_none() && started.elapsed() < Duration::from_secs(args.seconds) {
            let input = inputs
                .next()
                .unwrap_or_else(|| mutator.next(&seeds, target.text));
            match run_one(target, &input) {
                Ok(took) => slowest = slowest.max(took),
                Err(e) => failure = Some((e, input)),
            }
            runs += 1;
        }
        match failure {
            None => println!(
                "{:<15} {runs:>8} inputs in {:>5.1} s, slowest {:.3} s: ok",
                target.name,
                started.elapsed().as_secs_f64(),
                slowest.as_secs_f64()
            ),
            Some((what, input)) => {
                failed += 1;
                let path = args.out.join(format!("{}-{runs}.bin", target.name));
                let saved = std::fs::write(&path, &input).is_ok();
                println!(
                    "{:<15} input {runs} {what}{}",
                    target.name,
                    if saved {
                        format!(
                            ": {} (replay: burn-peft-fuzz --replay {} {})",
                            path.display(),
                            path.display(),
                            target.name
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
    let _ = std::fs::remove_file(&abort_path);
    if failed > 0 {
        std::process::exit(1);
    }
}
