//! The main job: start the testkit API server, drive the xhttp stack against it with many
//! concurrent requests while tokens expire and faults fire, and print what happened.
//!
//! ```text
//! cargo run --release -p xhttp-demo                     # table
//! cargo run --release -p xhttp-demo -- --json           # one JSON object on stdout
//! cargo run --release -p xhttp-demo -- --fail-rate 0.1 --token-ttl-ms 500 --duplicate-rate 0.2
//! cargo run --release -p xhttp-demo -- --processes 4 --store redis-local --json
//! ```
//!
//! Every figure is measured: counts come from the callers' outcomes and from the server's own
//! counters, never from configuration.

mod args;
mod fleet_run;
mod run;

use std::process::ExitCode;

use args::{Args, USAGE};

fn main() -> ExitCode {
    // A replica of a fleet run is this program started again by its parent.
    if xhttp_demo::fleet::replica_if_asked() {
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("xhttp-demo: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    // `XHTTP_DEMO_LOG=info` (or debug, trace) prints the library's events on stderr.
    if let Some(level) = std::env::var("XHTTP_DEMO_LOG").ok().and_then(|level| {
        level
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .ok()
    }) {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init();
    }
    if args.processes > 0 {
        return fleet(&args);
    }
    // The chaos run is on one thread: there the transport-end probe records a rejection in
    // the same poll in which the layers above learn of it, so its dead-token count is exact.
    let runtime = if args.chaos {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("xhttp-demo: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(&args)) {
        Ok(summary) => {
            if let Err(failed) = show(args.json, &summary, || summary.table(&args)) {
                return failed;
            }
            if !args.chaos {
                return ExitCode::SUCCESS;
            }
            let breaches = summary.chaos_breaches();
            for breach in &breaches {
                eprintln!("xhttp-demo: chaos rule broken: {breach}");
            }
            if breaches.is_empty() {
                eprintln!("xhttp-demo: the chaos run kept every rule");
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            // Display prints one level; the causes follow, one per line.
            eprintln!("xhttp-demo: {err}");
            let mut cause = std::error::Error::source(&err);
            while let Some(next) = cause {
                eprintln!("  caused by: {next}");
                cause = next.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// The fleet run: its summary, its rules, its exit status.
fn fleet(args: &Args) -> ExitCode {
    let summary = match fleet_run::run(args) {
        Ok(summary) => summary,
        Err(err) => {
            eprintln!("xhttp-demo: the fleet run failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(failed) = show(args.json, &summary, || summary.table()) {
        return failed;
    }
    let breaches = summary.breaches();
    for breach in &breaches {
        eprintln!("xhttp-demo: fleet rule broken: {breach}");
    }
    if breaches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the summary: one JSON object with `--json`, else the table.
fn show(
    json: bool,
    summary: &impl serde::Serialize,
    table: impl FnOnce() -> String,
) -> Result<(), ExitCode> {
    if !json {
        print!("{}", table());
        return Ok(());
    }
    match serde_json::to_string(summary) {
        Ok(text) => {
            println!("{text}");
            Ok(())
        }
        Err(err) => {
            eprintln!("xhttp-demo: cannot encode the summary: {err}");
            Err(ExitCode::FAILURE)
        }
    }
}
