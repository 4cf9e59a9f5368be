//! The Debian package, installed on this machine for real: `scripts/package`
//! builds it (the release build is cached in target/release), `dpkg -i`
//! installs it, `systemd-analyze verify` checks the unit, the unit's
//! `ExecStart` runs as the `shoal` user with a `NOTIFY_SOCKET` this test
//! binds (READY, STATUS, WATCHDOG, the pings stopping while the process is
//! stopped, RELOADING/READY on SIGHUP, STOPPING on SIGTERM; then READY
//! with an unreachable seed), an upgrade to a second build with a higher
//! version keeps an edited /etc/shoal/agent.toml, `dpkg -r` keeps
//! /var/lib/shoal and `dpkg -P` removes it.
//!
//! It needs root, dpkg, setpriv and systemd-analyze (scripts/test installs
//! them); without root it says so and passes without doing anything. It
//! refuses to run when a `shoal` package is already installed (it would
//! purge it), and it always purges what it installed, even on failure.
//! One test function, and a machine-wide lock: dpkg's state is shared.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::notify::{NotifyListener, count};
use shoal_tests::unique_loopback;

const UNIT: &str = "shoal.service";
const CONFIG: &str = "/etc/shoal/agent.toml";
const DATA_DIR: &str = "/var/lib/shoal";

#[test]
fn the_debian_package_installs_runs_under_its_unit_upgrades_and_purges() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing a Debian package needs root");
        return;
    }
    let _lock = MachineLock::take();
    let installed = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "shoal"]));
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("installed"),
        "a `shoal` package is already installed on this machine; this test would purge it: remove it first (dpkg -P shoal)"
    );

    let packages = tempfile::tempdir().unwrap();
    let (first, upgrade) = build_packages(packages.path());
    let _purge = PurgeOnDrop;

    // Install.
    dpkg(&["-i", path_str(&first)]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(package_field("${Version}"), version);
    assert!(Path::new("/usr/bin/shoal").is_file());
    let conffiles = package_field("${Conffiles}");
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    let shoal_uid = id("-u");
    let shoal_gid = id("-g");
    let data_dir = std::fs::metadata(DATA_DIR).expect("/var/lib/shoal exists");
    assert_eq!(
        (data_dir.uid(), data_dir.gid()),
        (shoal_uid, shoal_gid),
        "/var/lib/shoal belongs to shoal"
    );
    let config = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(
        (
            config.uid(),
            config.gid(),
            config.permissions().mode() & 0o777
        ),
        (0, shoal_gid, 0o640),
        "agent.toml: root:shoal 0640"
    );
    assert!(Path::new("/etc/shoal/agent.d").is_dir());
    let unit = installed_unit();
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants")
            .join(UNIT)
            .exists(),
        "the unit is enabled"
    );
    verify_unit(&unit);

    // The unit's ExecStart, as the unit's user, with systemd's variables.
    let exec_start = exec_start(&unit);
    eprintln!("ExecStart: {exec_start:?}");
    run_as_the_unit(&exec_start);
    let node_id = std::fs::read_to_string(Path::new(DATA_DIR).join("node-id"))
        .expect("the agent wrote its data dir as shoal");

    // Upgrade over an edited configuration.
    let edited = std::fs::read_to_string(CONFIG)
        .unwrap()
        .replace("log_level = \"info\"", "log_level = \"debug\"")
        + "\n# edited on this host\n";
    std::fs::write(CONFIG, &edited).unwrap();
    dpkg(&["-i", path_str(&upgrade)]);
    assert_eq!(package_field("${Version}"), format!("{version}+upgrade1"));
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert_eq!(
        std::fs::read_to_string(Path::new(DATA_DIR).join("node-id")).unwrap(),
        node_id,
        "the data dir survives an upgrade"
    );
    let config = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(
        (config.gid(), config.permissions().mode() & 0o777),
        (shoal_gid, 0o640)
    );

    // Remove: data and configuration stay.
    dpkg(&["-r", "shoal"]);
    assert!(!Path::new("/usr/bin/shoal").exists());
    assert!(Path::new(DATA_DIR).join("node-id").is_file());
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert_eq!(package_field("${Status}"), "deinstall ok config-files");

    // Purge: both go.
    dpkg(&["-P", "shoal"]);
    assert!(
        !Path::new(DATA_DIR).exists(),
        "purge removes /var/lib/shoal"
    );
    assert!(!Path::new(CONFIG).exists(), "purge removes the conffile");
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants")
            .join(UNIT)
            .exists()
    );
    let overrides = run(Command::new("dpkg-statoverride").args(["--list", CONFIG]));
    assert!(!overrides.status.success(), "purge drops the stat override");
}

/// Builds the package and a second one with a higher version (the same
/// binary, `--no-build`), and copies both to `keep` (cargo-deb clears
/// target/debian of older packages).
fn build_packages(keep: &Path) -> (PathBuf, PathBuf) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let started = Instant::now();
    let built = run(Command::new(workspace.join("scripts/package")).current_dir(workspace));
    assert!(built.status.success(), "scripts/package: {}", text(&built));
    eprintln!("scripts/package took {:?}", started.elapsed());
    let built_first = find_deb(&workspace.join("target/debian"), version);
    let first = keep.join(built_first.file_name().unwrap());
    std::fs::copy(&built_first, &first).unwrap();
    let upgrade_dir = workspace.join("target/debian/upgrade-test");
    std::fs::create_dir_all(&upgrade_dir).unwrap();
    let upgrade_version = format!("{version}+upgrade1");
    let built = run(Command::new(workspace.join("scripts/package"))
        .current_dir(workspace)
        .args(["--no-build", "--deb-version", &upgrade_version, "--output"])
        .arg(&upgrade_dir));
    assert!(built.status.success(), "scripts/package: {}", text(&built));
    let built_upgrade = find_deb(&upgrade_dir, &upgrade_version);
    let upgrade = keep.join(built_upgrade.file_name().unwrap());
    std::fs::copy(&built_upgrade, &upgrade).unwrap();
    let size = std::fs::metadata(&first).unwrap().len();
    let listing = run(Command::new("dpkg").arg("-c").arg(&first));
    eprintln!(
        "{} ({size} bytes):\n{}",
        first.display(),
        String::from_utf8_lossy(&listing.stdout)
    );
    (first, upgrade)
}

fn find_deb(dir: &Path, version: &str) -> PathBuf {
    let prefix = format!("shoal_{version}_");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".deb"))
        })
        .unwrap_or_else(|| panic!("no {prefix}*.deb in {}", dir.display()))
}

/// Where dpkg put the unit.
fn installed_unit() -> PathBuf {
    let listed = run(Command::new("dpkg").args(["-L", "shoal"]));
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|line| line.ends_with(&format!("/systemd/system/{UNIT}")))
        .map(PathBuf::from)
        .expect("the package installs shoal.service")
}

/// `systemd-analyze verify` loads the unit as systemd would (offline: it
/// needs no running systemd) and reports every problem on stderr.
fn verify_unit(unit: &Path) {
    let verified = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    let report = text(&verified);
    assert!(
        verified.status.success() && !report.contains(UNIT),
        "systemd-analyze verify {}: {report}",
        unit.display()
    );
}

/// The words of the unit's `ExecStart=` (no quoting in ours).
fn exec_start(unit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

/// Starts `exec_start` as the unit would: as `shoal`, from `/`, with
/// `NOTIFY_SOCKET` and `WATCHDOG_USEC` (2 s). Its addresses are moved to a
/// loopback address of its own through `SHOAL_*` variables, so that it
/// can't collide with other tests; `join` adds a seed.
fn spawn_as_the_unit(
    exec_start: &[String],
    listener: &NotifyListener,
    log: &Path,
    join: Option<&str>,
) -> Child {
    let ip = unique_loopback();
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=shoal", "--regid=shoal", "--init-groups", "--"])
        .args(exec_start)
        .current_dir("/")
        .env("NOTIFY_SOCKET", listener.path())
        .env("WATCHDOG_USEC", "2000000")
        .env("SHOAL_NODE", "package-test")
        .env("SHOAL_BIND", format!("{ip}:{}", shoal_tests::GOSSIP_PORT))
        .env(
            "SHOAL_HTTP_ADDR",
            format!("{ip}:{}", shoal_tests::HTTP_PORT),
        )
        .env("SHOAL_DNS_ADDR", format!("{ip}:{}", shoal_tests::DNS_PORT))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(seed) = join {
        command.env("SHOAL_JOIN", seed);
    }
    command.spawn().expect("setpriv")
}

fn run_as_the_unit(exec_start: &[String]) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("agent.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Alone: READY at once, STATUS, WATCHDOG.
    let mut listener = NotifyListener::bind();
    let started = Instant::now();
    let mut agent = KillOnDrop(spawn_as_the_unit(exec_start, &listener, &log, None));
    let ready = listener.wait_for("READY=1", Duration::from_secs(30));
    eprintln!(
        "ExecStart to READY=1, packaged config, no seeds: {:?}",
        ready.at.duration_since(started)
    );
    assert_eq!(
        ready.value("STATUS"),
        Some("members alive: 1, checks critical: 0"),
        "{}",
        show_log()
    );
    let pings = count(
        &listener.collect_for(Duration::from_millis(3500)),
        "WATCHDOG=1",
    );
    assert!((2..=6).contains(&pings), "{pings} pings in 3.5 s");
    let while_stopped = listener.watchdog_pings_while_stopped(agent.0.id(), Duration::from_secs(3));
    assert_eq!(while_stopped, 0, "pings while stopped");
    listener.wait_for("WATCHDOG=1", Duration::from_secs(5));
    // ExecReload: kill -HUP $MAINPID.
    signal(&agent.0, libc::SIGHUP);
    listener.wait_for("RELOADING=1", Duration::from_secs(10));
    listener.wait_for("READY=1", Duration::from_secs(10));
    signal(&agent.0, libc::SIGTERM);
    listener.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = wait_exit(&mut agent.0, Duration::from_secs(20));
    assert_eq!(status, Some(0), "{}", show_log());

    // A seed that does not answer: READY after join_ready_timeout (10 s in
    // the packaged config), saying so.
    let mut listener = NotifyListener::bind();
    let seed = format!("{}:{}", unique_loopback(), shoal_tests::GOSSIP_PORT);
    let started = Instant::now();
    let mut agent = KillOnDrop(spawn_as_the_unit(exec_start, &listener, &log, Some(&seed)));
    let ready = listener.wait_for("READY=1", Duration::from_secs(40));
    let waited = ready.at.duration_since(started);
    eprintln!("ExecStart to READY=1, packaged config, unreachable seed: {waited:?}");
    assert!(
        waited >= Duration::from_secs(10),
        "READY=1 after {waited:?}"
    );
    let status = ready.value("STATUS").unwrap_or_default();
    assert!(
        status.starts_with("alone: no seed answered within 10s; retrying"),
        "{status}"
    );
    signal(&agent.0, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut agent.0, Duration::from_secs(20)),
        Some(0),
        "{}",
        show_log()
    );
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs dpkg, waiting while another process holds dpkg's lock (apt runs
/// elsewhere on a shared machine).
fn dpkg(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let output = run(Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        if output.status.success() {
            return;
        }
        let report = text(&output);
        if report.contains("lock") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        panic!("dpkg {args:?} failed: {report}");
    }
}

fn package_field(field: &str) -> String {
    let output = run(Command::new("dpkg-query").args(["-W", &format!("-f={field}"), "shoal"]));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn id(flag: &str) -> u32 {
    let output = run(Command::new("id").args([flag, "shoal"]));
    assert!(
        output.status.success(),
        "no `shoal` user: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Purges the package however the test ends.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "shoal"]).output();
    }
}

/// One package test on the machine at a time (dpkg's state is global).
struct MachineLock(#[allow(dead_code)] std::fs::File);

impl MachineLock {
    fn take() -> MachineLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/shoal-package-test.lock")
            .unwrap();
        // SAFETY: flock(2) on a descriptor we own; released when it closes.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
        MachineLock(file)
    }
}
