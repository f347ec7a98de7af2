//! Tests that cannot share this process or this user with the others: a run in a fresh
//! process of the test binary (alone, or as a throwaway user), and what a test does
//! when the machine lacks something it needs.
//!
//! The suite is one binary whose tests run on parallel threads, so a test that reaps
//! with `waitpid(-1)`, becomes a subreaper or changes a process-wide signal disposition
//! would disturb the children of the tests beside it; and a test about file modes means
//! nothing as root, which reads everything. Each reruns itself where it can do no harm
//! and the parent checks that it passed there.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::wait_until;

/// The variable that tells a fresh process of this binary which test it is there to run.
const OWN_PROCESS: &str = "PAIOS_TEST_OWN_PROCESS";

/// How long a rerun test may take before it is killed and fails.
const RERUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs the calling test again, alone, in a fresh process of this test binary, and
/// says whether it has: call it first, as
/// `if ran_in_own_process(module_path!(), "test_name") { return; }`.
///
/// In the parent it returns true once the fresh process has passed the test, and
/// panics with that process's output if it failed or ran no test (a misspelt name); in
/// the fresh process it returns false, so the body runs there.
pub fn ran_in_own_process(module: &str, test: &str) -> bool {
    let name = harness_name(module, test);
    if std::env::var_os(OWN_PROCESS).is_some_and(|v| v == name.as_str()) {
        return false;
    }
    rerun(&name, Command::new(this_binary()));
    true
}

/// Runs the calling test again in a fresh process of this test binary as `user` (with
/// `setpriv`, no supplementary groups), and panics with its output unless it passed
/// there. The caller runs its body only when it is not root, so the rerun does.
pub fn run_as_user(module: &str, test: &str, user: &TestUser) {
    let name = harness_name(module, test);
    let mut setpriv = Command::new("setpriv");
    setpriv
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .arg(this_binary());
    rerun(&name, setpriv);
}

/// The harness names a test by its path without the crate: `process_reap::name`.
fn harness_name(module: &str, test: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{test}")
}

fn this_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("the test binary's own path")
}

/// Runs `command` (this binary, or a wrapper that ends in it) on test `name` alone and
/// panics unless that one test passed.
fn rerun(name: &str, mut command: Command) {
    // Output goes to files, not pipes: a grandchild the test leaves behind for its guard
    // to kill must not hold the parent waiting for end-of-file.
    let out = tempfile::tempdir().expect("create temp dir");
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let file = |p: &Path| fs::File::create(p).expect("create an output file");
    let mut child = command
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .env(OWN_PROCESS, name)
        .stdin(Stdio::null())
        .stdout(file(&stdout))
        .stderr(file(&stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name} again in a process of its own: {e}"));
    let mut status = None;
    let finished = wait_until(RERUN_LIMIT, || {
        status = child.try_wait().expect("wait for the test's own process");
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    let (stdout, stderr) = (read(&stdout), read(&stderr));
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        finished,
        "{name} did not finish within {RERUN_LIMIT:?} in its own process"
    );
    let status = status.expect("a finished process has a status");
    assert!(
        status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({status}); its output is above"
    );
}

/// Whether CI runs this: `CI` set (as CI services and `.ci/run` do). CI is meant to
/// provide what the environment-dependent tests need: root, tmpfs mounts, `chattr`,
/// `setpriv`, `useradd`.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// What a test needs from the machine (`what`: root, a tool, a filesystem feature):
/// the value when it is there. When it is not, the test fails under CI, which provides
/// it; elsewhere this says on stderr what was missing and gives `None`, and the caller
/// returns.
pub fn needs<T>(what: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_string();
            assert!(
                !in_ci(),
                "{test} needs {what}, which CI provides (see .ci/run): {why}"
            );
            eprintln!("skipped: {test} needs {what}: {why}");
            None
        }
    }
}

/// A system user made for one test (to run something as, with `setpriv`) and removed
/// when the test ends, pass or fail.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `useradd` and `userdel` lock the user database and fail rather than wait, so tests
/// on parallel threads take turns.
static USER_DB: Mutex<()> = Mutex::new(());

impl TestUser {
    pub fn create() -> Result<TestUser, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !nix::unistd::geteuid().is_root() {
            return Err("not root, cannot create a second user".into());
        }
        // The user is there to run something as; without setpriv it cannot.
        Command::new("setpriv")
            .arg("--version")
            .output()
            .map_err(|e| format!("setpriv unavailable: {e}"))?;
        let name = format!(
            "paios-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let made = {
            let _turn = USER_DB.lock().unwrap_or_else(|e| e.into_inner());
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .status()
                .map_err(|e| format!("useradd unavailable: {e}"))?
        };
        if !made.success() {
            return Err(format!("useradd {name} failed: {made}"));
        }
        let mut user = TestUser {
            name,
            uid: 0,
            gid: 0,
        };
        let found = nix::unistd::User::from_name(&user.name)
            .map_err(|e| format!("cannot look up {}: {e}", user.name))?
            .ok_or_else(|| format!("{} not found after useradd", user.name))?;
        user.uid = found.uid.as_raw();
        user.gid = found.gid.as_raw();
        Ok(user)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _turn = USER_DB.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}
