//! The fault-injection suite for promise 3 (never an orphan) and its neighbours, run
//! against the real binaries: `cargo run --release --example faults -- [--long]`.
//!
//! Each scenario starts its own paiosd on throw-away directories, injects one fault
//! (paiosd SIGKILLed, a crash storm, stubborn services, a leader leaving its port to a
//! grandchild, a lost state database, stopped processes, a `setsid` escape), prints
//! `PASS|FAIL name: figures`, and the process exits non-zero when any failed. Leftovers
//! are counted by identity — the PIDs every fixture process recorded (`FIXTURE_PIDS`),
//! with their start times — never by name, and every scenario ends what it recorded
//! when it is done, failed or not (the release profile aborts on panic, so scenarios
//! report failures as values and never panic). The short variants fit CI; `--long`
//! lengthens the crash storm into a soak.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use paios::process::{self, Identity};

#[path = "support.rs"]
mod support;

use support::{wait_until, Bins};

type Outcome = Result<String, String>;

/// A scenario: its figures on success, what went wrong otherwise.
type Scenario = Box<dyn Fn(&Bins) -> Outcome>;

fn main() {
    let long = std::env::args().any(|a| a == "--long");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let bins = match build_bins() {
        Ok(b) => b,
        Err(e) => {
            println!("FAIL setup: {e}");
            std::process::exit(1);
        }
    };
    let storm_secs = if long { 300 } else { 15 };
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("kill9_restart", Box::new(kill9_restart)),
        (
            "crash_storm",
            Box::new(move |b: &Bins| crash_storm(b, storm_secs)),
        ),
        ("stop_200", Box::new(stop_200)),
        ("port_kept_by_grandchild", Box::new(port_kept_by_grandchild)),
        ("state_deleted", Box::new(|b: &Bins| state_lost(b, false))),
        ("state_corrupt", Box::new(|b: &Bins| state_lost(b, true))),
        ("sigstopped", Box::new(sigstopped)),
        ("setsid_escape", Box::new(setsid_escape)),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, run) in scenarios {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let began = Instant::now();
        let outcome = run(&bins);
        let took = began.elapsed().as_secs_f64();
        match outcome {
            Ok(figures) => {
                passed += 1;
                println!("PASS {name}: {figures} ({took:.1}s)");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why} ({took:.1}s)");
            }
        }
    }
    println!("faults: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

// ----- the binaries ------------------------------------------------------------------

/// `cargo run --example faults` builds only this example: the daemon, the client and the
/// fixture are built here with the same cargo and profile.
fn build_bins() -> Result<Bins, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let examples = exe.parent().ok_or("no examples dir")?.to_path_buf();
    let profile_dir = examples.parent().ok_or("no profile dir")?.to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "--quiet", "--bins", "--example", "fixture"];
    if profile_dir.ends_with("release") {
        args.push("--release");
    }
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo {} failed", args.join(" ")));
    }
    let bins = Bins::beside(&exe);
    for p in [&bins.paiosd, &bins.paiosctl, &bins.fixture] {
        if !p.is_file() {
            return Err(format!("{} is missing after the build", p.display()));
        }
    }
    Ok(bins)
}

// ----- a paiosd on its own directories, and cleanup by identity -----------------------

/// Everything a scenario recorded, ended on drop.
#[derive(Default)]
struct Guard {
    groups: Vec<(i32, Option<u64>)>,
    pids: Vec<Identity>,
}

impl Guard {
    fn group(&mut self, pgid: i32) {
        let start = process::proc_info(pgid).map(|p| p.start_time);
        self.groups.push((pgid, start));
    }
    fn ids(&mut self, ids: &[Identity]) {
        self.pids.extend_from_slice(ids);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for &(pgid, start) in &self.groups {
            let now = process::proc_info(pgid).map(|p| p.start_time);
            if now.is_some() && start.is_some() && now != start {
                continue;
            }
            let _ = process::signal_group(pgid, libc::SIGKILL);
        }
        for &id in &self.pids {
            if process::is_alive(id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(id.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

struct Daemon<'a> {
    bins: &'a Bins,
    root: tempfile::TempDir,
    child: Option<Child>,
    guard: Guard,
}

impl<'a> Daemon<'a> {
    fn new(bins: &'a Bins) -> Result<Daemon<'a>, String> {
        let root = tempfile::Builder::new()
            .prefix("paios-faults-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        for dir in ["config/services.d", "state", "logs"] {
            std::fs::create_dir_all(root.path().join(dir)).map_err(|e| e.to_string())?;
        }
        Ok(Daemon {
            bins,
            root,
            child: None,
            guard: Guard::default(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// A unique tag in every argv, so nothing here matches another run's processes.
    fn tag(&self) -> String {
        self.root.path().display().to_string()
    }

    /// Writes a service running the fixture in `mode`, recording its PIDs in `NAME.pids`.
    fn fixture_service(&self, name: &str, mode: &[&str], extra: &str) -> Result<(), String> {
        let mut argv = vec![toml_str(&self.bins.fixture.display().to_string())];
        argv.extend(mode.iter().map(|a| toml_str(a)));
        argv.push(toml_str(&self.tag()));
        let text = format!(
            "command = [{}]\nenv = {{ FIXTURE_PIDS = {} }}\n{extra}",
            argv.join(", "),
            toml_str(&self.pids_file(name).display().to_string())
        );
        self.write_service(name, &text)
    }

    fn write_service(&self, name: &str, text: &str) -> Result<(), String> {
        std::fs::write(self.path(&format!("config/services.d/{name}.toml")), text)
            .map_err(|e| format!("write {name}: {e}"))
    }

    fn pids_file(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.pids"))
    }

    fn args(&self) -> Vec<String> {
        support::dir_args(self.root.path())
    }

    fn launch(&mut self) -> Result<Duration, String> {
        let began = Instant::now();
        let child = support::paiosd_command(&self.bins.paiosd, &self.args())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("start paiosd: {e}"))?;
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(60), || {
            self.ctl(&["ping"])
                .is_ok_and(|o| o.status.code() == Some(0))
        });
        if !ok {
            return Err("paiosd never answered ping".into());
        }
        Ok(began.elapsed())
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Result<Output, String> {
        Command::new(&self.bins.paiosctl)
            .args(self.args())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .map_err(|e| format!("paiosctl: {e}"))
    }

    fn status(&mut self) -> Result<Vec<serde_json::Value>, String> {
        let out = self.ctl(&["--json", "status"])?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("status JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        for r in &rows {
            if let Some(pgid) = r["pgid"].as_i64() {
                self.guard.group(pgid as i32);
            }
        }
        Ok(rows)
    }

    /// Waits until every service is `running`; returns the rows.
    fn all_running(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.status()?;
            let running = rows.iter().filter(|r| r["state"] == "running").count();
            if running == n {
                return Ok(rows);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{running} of {n} services running after {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ledger entries, newest first.
    fn ledger(&self) -> Result<Vec<serde_json::Value>, String> {
        let out = self.ctl(&["--json", "ledger", "--limit", "0"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn count(&self, outcome: &str) -> Result<usize, String> {
        Ok(self
            .ledger()?
            .iter()
            .filter(|r| r["outcome"] == outcome)
            .count())
    }

    /// Waits until the ledger holds at least `n` entries with `outcome`.
    fn wait_count(&self, outcome: &str, n: usize) -> Result<usize, String> {
        let mut got = 0;
        wait_until(Duration::from_secs(15), || {
            got = self.count(outcome).unwrap_or(0);
            got >= n
        });
        if got < n {
            return Err(format!(
                "{got} `{outcome}` entries in the ledger, expected {n}"
            ));
        }
        Ok(got)
    }

    /// Waits until `name.pids` lists `n` PIDs; records them for cleanup.
    fn wait_pids(&mut self, name: &str, n: usize) -> Result<Vec<Identity>, String> {
        let file = self.pids_file(name);
        if !wait_until(Duration::from_secs(30), || read_pids(&file).len() >= n) {
            return Err(format!(
                "{name} recorded {:?}, expected {n} PIDs",
                read_pids(&file)
            ));
        }
        let ids = identities(&file);
        self.guard.ids(&ids);
        Ok(ids)
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // The guard's Drop ends whatever recorded group or PID is left.
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn read_pids(path: &Path) -> Vec<i32> {
    support::parsed_lines(path)
}

fn identities(path: &Path) -> Vec<Identity> {
    read_pids(path)
        .into_iter()
        .filter_map(|pid| process::proc_info(pid).filter(|p| p.is_live()))
        .map(|p| p.identity())
        .collect()
}

fn alive(ids: &[Identity]) -> Vec<i32> {
    ids.iter()
        .filter(|id| process::is_alive(**id))
        .map(|id| id.pid)
        .collect()
}

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// Every service running, each in one group of its own, none with an old PID.
fn one_new_run_each(d: &mut Daemon, n: usize, old: &[Identity]) -> Result<(), String> {
    let rows = d.all_running(n, Duration::from_secs(60))?;
    let old: BTreeSet<i32> = old.iter().map(|id| id.pid).collect();
    let pgids: BTreeSet<i64> = rows.iter().filter_map(|r| r["pgid"].as_i64()).collect();
    check(pgids.len() == n, || {
        format!("{} groups for {n} services", pgids.len())
    })?;
    for r in &rows {
        let pid = r["pid"].as_i64().unwrap_or(0) as i32;
        check(!old.contains(&pid), || {
            format!("{} runs as old PID {pid}", r["name"])
        })?;
    }
    Ok(())
}

// ----- the scenarios -------------------------------------------------------------------

/// 1. paiosd SIGKILLed under 10 forker services, then started again.
fn kill9_restart(bins: &Bins) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let n = 10;
    for i in 0..n {
        d.fixture_service(&format!("f{i}"), &["forker", "2"], "")?;
    }
    d.launch()?;
    let mut recorded = 0;
    for i in 0..n {
        recorded += d.wait_pids(&format!("f{i}"), 5)?.len();
    }
    d.all_running(n, Duration::from_secs(30))?;
    d.kill9();
    let old: Vec<Identity> = (0..n)
        .flat_map(|i| identities(&d.pids_file(&format!("f{i}"))))
        .collect();
    d.guard.ids(&old);
    let took = d.launch()?;
    let left = alive(&old);
    check(left.is_empty(), || {
        format!("{} old processes survived: {left:?}", left.len())
    })?;
    one_new_run_each(&mut d, n, &old)?;
    d.wait_count("unclean_end", 1)?;
    let swept = d.wait_count("swept", n)?;
    Ok(format!(
        "{n} services, {recorded} processes recorded, {} alive after kill -9, 0 survived, restart+sweep {} ms, {n} runs, {swept} groups swept and recorded",
        old.len(),
        took.as_millis()
    ))
}

/// paiosd's resident memory and open descriptors (Linux /proc).
fn rss_fds(pid: i32) -> Option<(u64, usize)> {
    let rss = support::rss_bytes(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Zombie children of `parent` (Linux /proc).
fn zombies_of(parent: i32) -> std::collections::HashSet<Identity> {
    process::list_processes()
        .into_iter()
        .filter(|p| p.ppid == parent && p.state == 'Z')
        .map(|p| p.identity())
        .collect()
}

/// 2. 50 services crashing every 10 ms.
fn crash_storm(bins: &Bins, secs: u64) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let n = 50;
    // Backoff from 10 ms up to 500 ms; a burst limit high enough that the storm never
    // gives up, so paiosd keeps restarting for the whole run.
    let restart = "[restart]\npolicy = \"always\"\nbackoff = { initial = \"10ms\", max = \"500ms\", factor = 2.0, jitter = 0.2 }\nlimit = { burst = 100000, window = \"5m\", cooldown = \"1s\" }\n";
    for i in 0..n {
        d.fixture_service(&format!("c{i}"), &["crasher", "1", "10"], restart)?;
    }
    d.launch()?;
    let pid = d.pid();
    std::thread::sleep(Duration::from_secs(2));
    let start = rss_fds(pid);
    let began = Instant::now();
    let mut zombie_max = 0;
    while began.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        // Groups the storm starts are recorded for cleanup as they appear.
        let _ = d.status();
        zombie_max = zombie_max.max(zombies_of(pid).len());
    }
    let end = rss_fds(pid);
    // A zombie that is still there half a second later was never reaped.
    let z1 = zombies_of(pid);
    std::thread::sleep(Duration::from_millis(500));
    let lasting: Vec<Identity> = zombies_of(pid).intersection(&z1).copied().collect();
    let rows = d.ledger()?;
    let runs = rows.iter().filter(|r| r["type"] == "run").count();
    let total = rows.len();
    let elapsed = began.elapsed().as_secs_f64() + 2.0;
    // Delays 10, 20, 40, … ms reach ≥ 400 ms (500 with -20 % jitter) after 6 restarts.
    let bound = n * (8 + (elapsed / 0.4) as usize);
    check(runs <= bound, || {
        format!("{runs} runs recorded, more than the backoff allows ({bound})")
    })?;
    check(runs >= n, || format!("only {runs} runs recorded"))?;
    check(lasting.is_empty(), || {
        format!("unreaped zombies of paiosd: {lasting:?}")
    })?;
    check(total <= runs + 200, || {
        format!("{total} ledger rows for {runs} runs")
    })?;
    let figures = match (start, end) {
        (Some((rss0, fd0)), Some((rss1, fd1))) => {
            check(fd1 <= fd0 + 16, || {
                format!("open fds grew from {fd0} to {fd1}")
            })?;
            check(rss1 <= rss0 + rss0 / 2 + (16 << 20), || {
                format!("RSS grew from {} KiB to {} KiB", rss0 >> 10, rss1 >> 10)
            })?;
            format!("RSS {} → {} KiB, fds {fd0} → {fd1}", rss0 >> 10, rss1 >> 10)
        }
        _ => "RSS and fds not measured (no /proc)".into(),
    };
    Ok(format!(
        "{n} services for {secs}s: {runs} runs (bound {bound}), {total} ledger rows, {figures}, zombies seen at once ≤ {zombie_max}, lasting 0"
    ))
}

/// 3. Stopping 200 services, 20 of them ignoring SIGTERM, grace 2 s.
fn stop_200(bins: &Bins) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let n = 200;
    let stubborn = 20;
    let stop = "[stop]\ngrace = \"2s\"\n";
    for i in 0..n {
        let mode = if i < stubborn { "stubborn" } else { "sleeper" };
        d.fixture_service(&format!("s{i:03}"), &[mode], stop)?;
    }
    d.launch()?;
    let rows = d.all_running(n, Duration::from_secs(120))?;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.extend(d.wait_pids(&format!("s{i:03}"), 1)?);
    }
    // The stubborn ones must be ignoring SIGTERM before the stop, or it proves nothing.
    for i in 0..stubborn {
        let log = d.path(&format!("logs/s{i:03}.log"));
        let ready = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready"))
        });
        check(ready, || format!("s{i:03} never said ready"))?;
    }
    let pgids: Vec<i32> = rows
        .iter()
        .filter_map(|r| r["pgid"].as_i64().map(|p| p as i32))
        .collect();
    let began = Instant::now();
    let out = d.ctl(&["stop", "--all"])?;
    let took = began.elapsed();
    check(out.status.code() == Some(0), || {
        format!("stop --all: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    let left: Vec<i32> = pgids
        .iter()
        .copied()
        .filter(|&g| process::group_alive(g))
        .collect();
    check(left.is_empty(), || {
        format!("groups alive after stop: {left:?}")
    })?;
    check(alive(&ids).is_empty(), || {
        format!("survivors: {:?}", alive(&ids))
    })?;
    check(took <= Duration::from_secs(3), || {
        format!("stop took {} ms, more than grace + 1 s", took.as_millis())
    })?;
    Ok(format!(
        "{n} services ({stubborn} ignoring SIGTERM) stopped in {} ms (grace 2 s), 0 survivors",
        took.as_millis()
    ))
}

/// 4. The leader exits while its grandchild keeps the port.
fn port_kept_by_grandchild(bins: &Bins) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    // The shell forks a server on a fixed port, then exits: the server lives on in the
    // run's group, holding the port.
    let script = format!(
        "{} tcp {port} {} & sleep 0.3; exit 1",
        shell_quote(&bins.fixture.display().to_string()),
        shell_quote(&d.tag())
    );
    let text = format!(
        "shell = {}\nenv = {{ FIXTURE_PIDS = {} }}\n[restart]\npolicy = \"always\"\nbackoff = {{ initial = \"50ms\", max = \"50ms\", factor = 1.0, jitter = 0.0 }}\nlimit = {{ burst = 1000, window = \"5m\", cooldown = \"1s\" }}\n",
        toml_str(&script),
        toml_str(&d.pids_file("porty").display().to_string())
    );
    d.write_service("porty", &text)?;
    d.launch()?;
    let runs_wanted = 5;
    let ok = wait_until(Duration::from_secs(30), || {
        let _ = d.status();
        d.count("crashed").unwrap_or(0) >= runs_wanted
    });
    let log = std::fs::read_to_string(d.path("logs/porty.log")).unwrap_or_default();
    let in_use = log.matches("cannot listen").count();
    let bound = log.matches(&format!("port {port}")).count();
    let ids = identities(&d.pids_file("porty"));
    d.guard.ids(&ids);
    check(ok, || {
        format!("fewer than {runs_wanted} runs ended in 30 s")
    })?;
    check(in_use == 0, || {
        format!("{in_use} runs found the port in use:\n{log}")
    })?;
    check(bound >= runs_wanted, || {
        format!("only {bound} runs bound the port")
    })?;
    // At most one server alive at any time: only the current run's.
    let servers_alive = ids.len();
    check(servers_alive <= 1, || {
        format!("{servers_alive} servers alive at once")
    })?;
    Ok(format!(
        "{bound} runs each bound port {port} after the last run's group was gone; 0 \"address in use\""
    ))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// 5. The state database deleted or corrupted between a kill -9 and the next start.
fn state_lost(bins: &Bins, corrupt: bool) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let n = 10;
    for i in 0..n {
        d.fixture_service(&format!("f{i}"), &["forker", "2"], "")?;
    }
    d.launch()?;
    for i in 0..n {
        d.wait_pids(&format!("f{i}"), 5)?;
    }
    d.all_running(n, Duration::from_secs(30))?;
    // What tells the next start that a paiosd ran here before.
    d.wait_count("daemon_start", 1)?;
    d.kill9();
    let old: Vec<Identity> = (0..n)
        .flat_map(|i| identities(&d.pids_file(&format!("f{i}"))))
        .collect();
    d.guard.ids(&old);
    let state = d.state_dir().join("state.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    if corrupt {
        std::fs::write(&state, vec![0x5Au8; 16384]).map_err(|e| e.to_string())?;
    } else {
        std::fs::remove_file(&state).map_err(|e| e.to_string())?;
    }
    let took = d.launch()?;
    let left = alive(&old);
    check(left.is_empty(), || {
        format!("{} orphans: {left:?}", left.len())
    })?;
    one_new_run_each(&mut d, n, &old)?;
    d.wait_count("sweep_fallback", 1)?;
    let killed = d.wait_count("stray_killed", 1)?;
    Ok(format!(
        "{} processes alive after kill -9, {}; paiosd started in {} ms, reported it could not sweep from records, ended {killed} strays, 0 orphans, {n} runs",
        old.len(),
        if corrupt { "state.sqlite corrupted" } else { "state.sqlite deleted" },
        took.as_millis()
    ))
}

/// 6. A stopped leader, a stopped group during stop, and a group stopped after
///    paiosd died.
fn sigstopped(bins: &Bins) -> Outcome {
    let mut d = Daemon::new(bins)?;
    let grace = "[stop]\ngrace = \"5s\"\n";
    d.fixture_service("hung", &["sleeper"], grace)?;
    d.fixture_service("frozen", &["forker", "2"], grace)?;
    d.fixture_service("later", &["forker", "2"], "")?;
    d.launch()?;
    let hung = d.wait_pids("hung", 1)?;
    let frozen = d.wait_pids("frozen", 5)?;
    d.wait_pids("later", 5)?;
    let rows = d.all_running(3, Duration::from_secs(30))?;
    let pgid = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["pgid"].as_i64())
            .map(|p| p as i32)
            .ok_or(format!("{name} has no group"))
    };
    let (hung_g, frozen_g, later_g) = (pgid("hung")?, pgid("frozen")?, pgid("later")?);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hung[0].pid),
        nix::sys::signal::Signal::SIGSTOP,
    );
    let _ = process::signal_group(frozen_g, libc::SIGSTOP);
    check(
        wait_until(Duration::from_secs(5), || {
            process::group_all_stopped(hung_g) && process::group_all_stopped(frozen_g)
        }),
        || "the processes never stopped".into(),
    )?;
    let mut times = Vec::new();
    for name in ["hung", "frozen"] {
        let began = Instant::now();
        let out = d.ctl(&["stop", name])?;
        times.push(began.elapsed());
        check(out.status.code() == Some(0), || {
            format!("stop {name}: {}", String::from_utf8_lossy(&out.stderr))
        })?;
    }
    let left: Vec<i32> = alive(&hung).into_iter().chain(alive(&frozen)).collect();
    check(left.is_empty(), || {
        format!("stopped processes survived: {left:?}")
    })?;
    for t in &times {
        check(*t < Duration::from_secs(4), || {
            format!(
                "a stop took {} ms: SIGCONT must precede the stop signal",
                t.as_millis()
            )
        })?;
    }
    // Across paiosd's death: the group is stopped only after paiosd died (see DESIGN.md).
    d.kill9();
    check(
        wait_until(Duration::from_secs(5), || {
            !process::group_members(later_g).is_empty()
        }),
        || "the group did not outlive paiosd".into(),
    )?;
    let _ = process::signal_group(later_g, libc::SIGSTOP);
    check(
        wait_until(Duration::from_secs(5), || {
            process::group_all_stopped(later_g)
        }),
        || "the orphaned group never stopped".into(),
    )?;
    let old = identities(&d.pids_file("later"));
    d.guard.ids(&old);
    d.launch()?;
    let left = alive(&old);
    check(left.is_empty(), || {
        format!("a stopped orphaned group survived the sweep: {left:?}")
    })?;
    Ok(format!(
        "stopped leader ended in {} ms, stopped group in {} ms (grace 5 s); group stopped after paiosd's death: {} processes swept, 0 left",
        times[0].as_millis(),
        times[1].as_millis(),
        old.len()
    ))
}

/// 7. A service that leaves its group with setsid.
fn setsid_escape(bins: &Bins) -> Outcome {
    let mut d = Daemon::new(bins)?;
    d.fixture_service("esc", &["setsid"], "")?;
    d.fixture_service("esc2", &["setsid"], "")?;
    d.launch()?;
    let rows = d.all_running(2, Duration::from_secs(30))?;
    let ids = d.wait_pids("esc", 2)?;
    let ids2 = d.wait_pids("esc2", 2)?;
    let run_pgid = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["pgid"].as_i64())
            .unwrap_or(0) as i32
    };
    let escapee = |ids: &[Identity], pgid: i32| {
        ids.iter()
            .copied()
            .find(|id| process::proc_info(id.pid).is_some_and(|p| p.pgid != pgid))
    };
    let esc = escapee(&ids, run_pgid("esc")).ok_or("the setsid child did not leave the group")?;
    let esc2 =
        escapee(&ids2, run_pgid("esc2")).ok_or("the setsid child did not leave the group")?;
    let reported = d.wait_count("escape", 2)?;
    // Ended with its run on stop…
    let out = d.ctl(&["stop", "esc"])?;
    check(out.status.code() == Some(0), || {
        format!("stop: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    check(!process::is_alive(esc), || {
        format!("escapee {} outlived its run", esc.pid)
    })?;
    // …and by the sweep after paiosd is killed.
    d.kill9();
    check(process::is_alive(esc2), || {
        "the escapee did not outlive paiosd".into()
    })?;
    d.launch()?;
    check(!process::is_alive(esc2), || {
        format!("escapee {} survived the sweep", esc2.pid)
    })?;
    Ok(format!(
        "{reported} escapes reported in the ledger; escapee {} ended with its run's stop, escapee {} ended by the sweep after kill -9",
        esc.pid, esc2.pid
    ))
}
