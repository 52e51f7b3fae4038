//! A real PostgreSQL server (with pgvector) for a test: its own data directory, a free
//! loopback port, stopped with the test.
//!
//! The binaries come from `deploy/test-tools.sh` (the pgserver wheel's build of PostgreSQL
//! 16.2 + pgvector 0.6.2, in `$MMC_TOOLS_DIR/deploy-tools/postgres/bin`). PostgreSQL
//! refuses to run as root, and CI runs as root: then the server runs as `nobody`.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{free_port_range, run_tool, ChildGuard};

/// A PostgreSQL server started for a test (killed when dropped).
pub struct Postgres {
    bin: PathBuf,
    /// Holds the data directory (and the socket directory).
    dir: tempfile::TempDir,
    pub port: u16,
    process: Option<ChildGuard>,
}

/// The unprivileged user to run the server as when the tests run as root.
fn server_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok().flatten().expect("a `nobody` user to run PostgreSQL as (it refuses root)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The directory of PostgreSQL's binaries. For a server run as `nobody` they are copied
/// once (per machine boot) out of root's home, which `nobody` cannot enter.
fn binaries(shared: bool) -> PathBuf {
    let install = crate::tools_root().join("deploy-tools/postgres");
    let install = std::fs::canonicalize(&install)
        .unwrap_or_else(|_| panic!("{} is missing: run `bash deploy/test-tools.sh` (deploy/setup.sh --test runs it)", install.display()));
    if !shared {
        return install.join("bin");
    }
    // The wheel's tree: its binaries find their libraries at $ORIGIN/../../../pgserver.libs.
    let tree = install.ancestors().nth(2).expect("the pgserver wheel's tree").to_path_buf();
    let copy = std::env::temp_dir().join(format!("mmc-{}", tree.file_name().unwrap().to_string_lossy()));
    static COPIED: std::sync::Once = std::sync::Once::new();
    COPIED.call_once(|| {
        if copy.join("pgserver/pginstall/bin/postgres").exists() {
            return;
        }
        let staging = copy.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        run_tool(Command::new("cp").arg("-a").arg(&tree).arg(&staging));
        run_tool(Command::new("chmod").args(["-R", "a+rX"]).arg(&staging));
        // Another test process may have put its copy in place first: either is complete.
        if std::fs::rename(&staging, &copy).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    });
    copy.join("pgserver/pginstall/bin")
}

impl Postgres {
    /// Makes a fresh cluster (`initdb`) and starts the server on a free loopback port.
    pub fn start() -> Self {
        let user = server_user();
        let bin = binaries(user.is_some());
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = user {
            // The unprivileged server must reach its directory.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-D", "data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]).current_dir(dir.path());
        as_user(&mut initdb, user);
        run_tool(&mut initdb);
        let mut pg = Self { bin, dir, port: 0, process: None };
        pg.port = free_port_range(1);
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
            .arg("-k")
            .arg(self.dir.path())
            // Test data need not survive a power cut: skip the disk syncs.
            .args(["-c", "fsync=off"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        as_user(&mut cmd, server_user());
        self.process = Some(ChildGuard::spawn(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.psql("postgres", "SELECT 1").status.success() {
            assert!(Instant::now() < deadline, "PostgreSQL did not accept connections within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// psql running `sql` in `database` (unaligned, tuples only, stopping at an error).
    fn psql_command(&self, database: &str, sql: &str) -> Command {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql]);
        psql
    }

    fn psql(&self, database: &str, sql: &str) -> std::process::Output {
        self.psql_command(database, sql).output().expect("psql")
    }

    /// Runs `sql` in `database` and returns what psql printed (unaligned, tuples only).
    pub fn query(&self, database: &str, sql: &str) -> String {
        let out = self.psql(database, sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts `sql` in `database` without waiting for it (a transaction held open while
    /// the test acts).
    pub fn spawn_query(&self, database: &str, sql: &str) -> std::process::Child {
        self.psql_command(database, sql).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("psql")
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.query("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server at once (a fast shutdown: open connections are cut), as a
    /// database restart or failover does to its clients.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let pid = nix::unistd::Pid::from_raw(process.pid());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
            process.wait_timeout(Duration::from_secs(30)).expect("PostgreSQL stopped");
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = user {
        // std drops root's supplementary groups with the switch.
        cmd.gid(gid).uid(uid);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
