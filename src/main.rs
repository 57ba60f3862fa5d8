//! `twin`: the engine's command line. Each command lives in its own module under src/cli/ (an
//! `Args` struct and a `run`); this file only parses and dispatches. Every failure prints one
//! line naming the field and the value, and exits non-zero.

// See Cargo.toml: freed blocks are reused instead of returned to the OS and faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(name = "twin", version, about = "TWIN / TWIN-V2 engine: data, offline clustering, online scoring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic short-video log (users with drifting, resurfacing interests).
    Gen(cli::gen::GenArgs),
    /// Convert a MovieLens (ratings.csv, u.data, ratings.dat) or KuaiRand/KuaiRec log.
    Import(cli::import::ImportArgs),
    /// Initialise a model for a dataset's item catalogue (deterministic from the seed).
    Init(cli::init::InitArgs),
    /// Offline job (TWIN-V2 Algorithm 1): compress each user's history into clusters.
    Cluster(cli::cluster::ClusterArgs),
    /// Score requests: GSU top-K and ESU output per candidate, as JSON.
    Score(cli::score::ScoreArgs),
    /// Train one model variant on a time split (earlier samples train, the newest test),
    /// evaluating and checkpointing after every epoch.
    Train(cli::train::TrainArgs),
    /// Evaluate a trained model on the test part of the time split: AUC, GAUC, logloss.
    Eval(cli::eval::EvalArgs),
    /// The whole pipeline: data -> clusters -> train every variant -> evaluate -> table, JSON, plots.
    Demo(cli::demo::DemoArgs),
    /// Say what a dataset, model or clusters file holds.
    Info(cli::info::InfoArgs),
    /// Serve a model: HTTP/JSON (GET /health, GET /ready, POST /score, GET /metrics), gRPC with
    /// --grpc-addr, and POST /admin/swap on a token-protected --admin-addr.
    Serve {
        #[command(flatten)]
        opts: cli::serve::ServeOpts,
    },
    /// Load-test a running `twin serve` with requests built from a dataset's users.
    Loadtest {
        #[command(flatten)]
        opts: cli::loadtest::LoadtestOpts,
    },
    /// Benchmark BENCHMARKS.md's workloads (online, cluster, train) on one backend.
    Bench {
        #[command(flatten)]
        opts: cli::bench::BenchOpts,
    },
}

/// clap's error as one line (the house style: one line naming the flag and the value), without
/// the usage and "try --help" lines; `--help` and `--version` print as usual.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
                .collect();
            eprintln!("{}", parts.join(" "));
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = parse();
    if !matches!(cli.cmd, Cmd::Serve { .. } | Cmd::Loadtest { .. }) {
        cli::quiet_broken_pipe();
    }
    let result = match cli.cmd {
        Cmd::Gen(a) => a.run(),
        Cmd::Import(a) => a.run(),
        Cmd::Init(a) => a.run(),
        Cmd::Cluster(a) => a.run(),
        Cmd::Score(a) => a.run(),
        Cmd::Train(a) => a.run(),
        Cmd::Eval(a) => a.run(),
        Cmd::Demo(a) => a.run(),
        Cmd::Info(a) => a.run(),
        Cmd::Serve { opts } => cli::serve::run(&opts),
        Cmd::Loadtest { opts } => cli::loadtest::run(&opts),
        Cmd::Bench { opts } => cli::bench::run(&opts),
    };
    if let Err(e) = result {
        eprintln!("error: {}", cli::error_line(&e));
        std::process::exit(1);
    }
}
