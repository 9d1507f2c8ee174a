//! Command-line flags, parsed by hand: eight flags do not need a parser crate's build time.

use std::fmt;
use std::time::Duration;

use xhttp_testkit::ChaosPlan;

pub(crate) const USAGE: &str = "\
xhttp-demo: drive the xhttp stack against a loopback API server and print a summary

USAGE: cargo run --release -p xhttp-demo -- [FLAGS]

FLAGS:
  --requests N          logical requests to make (default 20000)
  --concurrency C       requests in flight at once (default 64)
  --token-ttl-ms T      access token lifetime on the server, ms (default 900000)
  --fail-rate F         share of API requests answered 503 by the server, 0..1 (default 0)
  --duplicate-rate D    share of requests that repeat one already in flight, 0..1 (default 0)
  --seed S              seed of the server's faults and of the request mix (default 1)
  --chaos               the chaos run: 100000 requests (unless --requests says otherwise),
                        concurrency 64, 300 ms tokens, 503 bursts, hangs, resets, slow
                        bodies, live tokens revoked, 5% duplicates (unless
                        --duplicate-rate) and a token endpoint that fails 5 times in total
                        (xhttp_testkit::ChaosPlan), on one thread so that the dead-token
                        count is exact; --fail-rate and --token-ttl-ms are ignored; checks
                        the run (no hung call, failures only Status/Transport/Timeout after
                        4 attempts, no refresh-token reuse, no dead-token request, no
                        stalled second) and exits 1 when a rule is broken
  --http2               speak HTTP/2 (prior knowledge) instead of HTTP/1.1
  --processes N         the fleet run: N replica processes of this program (1 to 64), each
                        with --concurrency callers, share one login with a rotating refresh
                        token through --store while tokens expire --expiries times (tokens
                        of 400 ms unless --token-ttl-ms); prints fleet-wide figures and
                        exits 1 when a refresh token was reused, a call failed, a store
                        call failed or the fleet made more than 2 token calls per token life
  --store S             the fleet's token store: redis-local (default: starts a redis-server
                        on a free loopback port), redis://[:password@]host:port[/db] or
                        rediss://… (an existing Redis or Valkey), or memory (no shared
                        store: each replica refreshes on its own, to see what that costs)
  --expiries E          token lifetimes the fleet run lasts (default 25)
  --json                print one JSON object on stdout instead of the table
  -h, --help            this text

JSON FIELDS beyond the table's:
  dead_token_requests   trips the client sent with an access token after a 401 for that
                        token had come back to it (xhttp_testkit::TokenProbe at the
                        transport end)
  rejected_token_arrivals
                        API requests that arrived bearing an access token the server had
                        already rejected: dead_token_requests plus those already on the
                        wire when the rejection went out, counted by the server
  revoked_tokens        live access tokens the server revoked (the --chaos script)
  stalled_seconds       whole wall-clock seconds of the request phase, before the last call
                        started, in which fewer calls started than 10% of the median second
  hung_calls            calls not ended 2 s after the 30 s deadline (also failed as Hung)

JSON FIELDS of the fleet run (--processes): mode (\"fleet\"), store, processes,
  callers_per_process, token_ttl_ms, token_lives, elapsed_ms, requests, ok, failed,
  first_error, token_calls (fleet-wide, counted by the server), token_calls_per_life,
  token_calls_by_process, adoptions (tokens taken from the store instead of a token call),
  reuse_detected, store_errors, store_calls, store_calls_per_request, leases_taken (leases
  granted fleet-wide; a replica woken by another's release reads and takes none),
  store_load_us, store_lock_us, store_swap_us, token_call_us (means), unauthorized
";

/// Requests of the `--chaos` run: the full-size fault scenario.
const CHAOS_REQUESTS: usize = 100_000;

/// Duplicates of the `--chaos` run, so dedupe's followers meet the faults too.
const CHAOS_DUPLICATE_RATE: f64 = 0.05;

/// The demo's settings.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) requests: usize,
    pub(crate) concurrency: usize,
    pub(crate) token_ttl: Duration,
    pub(crate) fail_rate: f64,
    pub(crate) duplicate_rate: f64,
    pub(crate) seed: u64,
    pub(crate) chaos: bool,
    pub(crate) http2: bool,
    pub(crate) json: bool,
    pub(crate) help: bool,
    /// Replica processes of the fleet run; 0 for the one-process run.
    pub(crate) processes: usize,
    /// The fleet's token store: `redis-local`, a Redis URL, or `memory`.
    pub(crate) store: String,
    /// Token lifetimes the fleet run lasts.
    pub(crate) expiries: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            requests: 20_000,
            concurrency: 64,
            token_ttl: Duration::from_secs(15 * 60),
            fail_rate: 0.0,
            duplicate_rate: 0.0,
            seed: 1,
            chaos: false,
            http2: false,
            json: false,
            help: false,
            processes: 0,
            store: "redis-local".to_owned(),
            expiries: 25,
        }
    }
}

/// A flag the demo cannot use.
#[derive(Debug, PartialEq)]
pub(crate) struct ArgError(String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Args {
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
        let mut out = Args::default();
        let (mut requests, mut duplicate_rate, mut token_ttl) = (None, None, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ArgError(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "--requests" => requests = Some(number(&flag, &value(&flag)?)?),
                "--concurrency" => out.concurrency = number(&flag, &value(&flag)?)?,
                "--token-ttl-ms" => {
                    token_ttl = Some(Duration::from_millis(number(&flag, &value(&flag)?)?))
                }
                "--processes" => out.processes = number(&flag, &value(&flag)?)?,
                "--store" => out.store = value(&flag)?,
                "--expiries" => out.expiries = number(&flag, &value(&flag)?)?,
                "--fail-rate" => out.fail_rate = share(&flag, &value(&flag)?)?,
                "--duplicate-rate" => duplicate_rate = Some(share(&flag, &value(&flag)?)?),
                "--seed" => out.seed = number(&flag, &value(&flag)?)?,
                "--chaos" => out.chaos = true,
                "--http2" => out.http2 = true,
                "--json" => out.json = true,
                "-h" | "--help" => out.help = true,
                other => return Err(ArgError(format!("unknown flag {other}"))),
            }
        }
        // The chaos run has its own size and mix; explicit flags still win.
        let (default_requests, default_duplicates) = if out.chaos {
            (CHAOS_REQUESTS, CHAOS_DUPLICATE_RATE)
        } else {
            (out.requests, out.duplicate_rate)
        };
        out.requests = requests.unwrap_or(default_requests);
        // The fleet run is about expiry: its tokens live 400 ms unless told.
        let default_ttl = if out.processes > 0 {
            Duration::from_millis(400)
        } else {
            out.token_ttl
        };
        out.token_ttl = token_ttl.unwrap_or(default_ttl);
        out.duplicate_rate = duplicate_rate.unwrap_or(default_duplicates);
        if out.chaos {
            // The plan's lifetime is the one the server uses; the table shows it.
            out.token_ttl = ChaosPlan::scaled(out.seed, out.requests as u64).access_ttl;
        }
        if out.concurrency == 0 {
            return Err(ArgError("--concurrency must be at least 1".into()));
        }
        if out.token_ttl < Duration::from_millis(50) {
            return Err(ArgError("--token-ttl-ms must be at least 50".into()));
        }
        if out.processes > 64 {
            return Err(ArgError("--processes takes 1 to 64".into()));
        }
        let store_ok = ["redis-local", "memory"].contains(&out.store.as_str())
            || out.store.starts_with("redis://")
            || out.store.starts_with("rediss://");
        if !store_ok {
            return Err(ArgError(
                "--store takes redis-local, memory, or a redis:// or rediss:// URL".into(),
            ));
        }
        if out.expiries == 0 || out.expiries > 10_000 {
            return Err(ArgError("--expiries takes 1 to 10000".into()));
        }
        if out.processes > 0 && out.chaos {
            return Err(ArgError("--processes and --chaos are separate runs".into()));
        }
        Ok(out)
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, ArgError> {
    text.parse()
        .map_err(|_| ArgError(format!("{flag} takes a whole number, not `{text}`")))
}

fn share(flag: &str, text: &str) -> Result<f64, ArgError> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(ArgError(format!(
            "{flag} takes a share between 0 and 1, not `{text}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, ArgError> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_both_value_forms() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.requests, args.concurrency), (20_000, 64));
        let args = parse(&["--requests", "10", "--fail-rate=0.1", "--json"]).unwrap();
        assert_eq!(args.requests, 10);
        assert_eq!(args.fail_rate, 0.1);
        assert!(args.json);
    }

    #[test]
    fn chaos_sets_its_size_unless_told() {
        let args = parse(&["--chaos"]).unwrap();
        assert!(args.chaos);
        assert_eq!((args.requests, args.duplicate_rate), (100_000, 0.05));
        assert_eq!(args.token_ttl, Duration::from_millis(300));
        let args = parse(&["--requests", "500", "--chaos", "--duplicate-rate=0"]).unwrap();
        assert_eq!((args.requests, args.duplicate_rate), (500, 0.0));
    }

    #[test]
    fn bad_flags_are_errors_not_panics() {
        assert!(parse(&["--requests"]).is_err());
        assert!(parse(&["--requests", "-3"]).is_err());
        assert!(parse(&["--fail-rate", "1.5"]).is_err());
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--nope"]).is_err());
        assert!(parse(&["--processes", "65"]).is_err());
        assert!(parse(&["--processes", "2", "--store", "mongodb://x"]).is_err());
        assert!(parse(&["--processes", "2", "--chaos"]).is_err());
        assert!(parse(&["--expiries", "0"]).is_err());
    }

    #[test]
    fn the_fleet_run_has_short_tokens_unless_told() {
        let args = parse(&["--processes", "4"]).unwrap();
        assert_eq!((args.processes, args.store.as_str()), (4, "redis-local"));
        assert_eq!(args.token_ttl, Duration::from_millis(400));
        let args = parse(&[
            "--processes=2",
            "--token-ttl-ms",
            "900",
            "--store",
            "memory",
        ])
        .unwrap();
        assert_eq!(args.token_ttl, Duration::from_millis(900));
        assert_eq!(parse(&[]).unwrap().token_ttl, Duration::from_secs(900));
    }
}
