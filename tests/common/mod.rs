//! Test harness: a private moto server per test on a free loopback port, the `iac` binary wired
//! to it, SDK clients to check what exists, and a delaying proxy to slow calls down.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `c` with stdout a pipe whose reader is already gone (like `iac … | head -0`) and
/// asserts that it ends successfully, without a panic or a "Broken pipe" message.
pub fn assert_closed_pipe_is_success(mut c: Command) {
    let what = format!("{c:?}");
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iac starts");
    drop(child.stdout.take());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("stderr");
    }
    let status = child.wait().expect("iac ends");
    assert_eq!(status.code(), Some(0), "{what}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}\n{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{what}\n{stderr}");
}

/// The moto server executable: `IAC_MOTO_SERVER`, else the project's `.venv`. Missing is a
/// failure, never a skip.
pub fn moto_server() -> PathBuf {
    let path = std::env::var_os("IAC_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/moto_server"));
    assert!(
        path.exists(),
        "the AWS emulator is missing at {}: run `scripts/emulator.sh install` (or `bash .ci/run`)",
        path.display()
    );
    path
}

/// A loopback port that is free now, for a server started a moment later (moto, a monitor).
/// Taken below the kernel's ephemeral range (32768 and up on Linux): ports handed out with
/// `bind(0)` come from that range, and so do the local ports of outgoing connections, which
/// could take such a port between this check and the server's own bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000")
}

/// `iac`'s own AWS clients aimed at `url`, with the dummy credentials in this process's
/// environment (set once, before any test thread reads them).
pub async fn aws_at(url: &str) -> iac::aws::Aws {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in dummy_env() {
            std::env::set_var(k, v);
        }
    });
    iac::aws::Aws::connect(
        &iac::aws::AwsOptions {
            endpoint_url: Some(url.to_string()),
            region: Some(REGION.into()),
            profile: None,
        },
        None,
    )
    .await
}

/// The `iac-agent` binary the workspace build puts beside the test binaries (or
/// `IAC_AGENT_BIN`). Missing is a failure, never a skip.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IAC_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("iac-agent");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p iac-agent` (scripts/test.sh builds the whole workspace)",
        bin.display()
    );
    bin
}

/// A running moto server, stopped on drop. Its output goes to a log file, whose tail a failing
/// test prints (a 500 from the emulator is explained there).
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub url: String,
    log: tempfile::NamedTempFile,
}

impl Emulator {
    pub fn start() -> Emulator {
        let server = moto_server();
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file for the emulator");
        let out = log.reopen().expect("the emulator's log");
        let err = log.reopen().expect("the emulator's log");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // AWS managed policies (AmazonSSMManagedInstanceCore) exist only when loaded.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let mut emu = Emulator {
            child,
            port,
            url,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            emu.assert_alive();
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}:\n{}",
                emu.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        emu.seed();
        emu
    }

    /// Panics with the emulator's log when its process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the emulator exited ({status}):\n{}", self.log_tail());
        }
    }

    /// The last 40 lines of the emulator's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// What an AWS Academy account already has: vockey, LabInstanceProfile, the hosted zone,
    /// the app's secret.
    fn seed(&self) {
        let python = moto_server().with_file_name("python");
        let out = Command::new(python)
            .arg(root().join("scripts/seed_emulator.py"))
            .arg(&self.url)
            .envs(dummy_env())
            .output()
            .expect("run the seed script");
        assert!(
            out.status.success(),
            "seeding failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `iac` binary aimed at this emulator (through the standard variable, as users do).
    pub fn iac(&self) -> Command {
        self.iac_at(&self.url)
    }

    pub fn iac_at(&self, url: &str) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("iac"));
        c.current_dir(root())
            .envs(dummy_env())
            .env("AWS_ENDPOINT_URL", url)
            .env("CI", "true");
        c
    }

    pub async fn config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.url).await
    }

    /// `iac`'s own clients aimed at this emulator.
    pub async fn aws(&self) -> iac::aws::Aws {
        aws_at(&self.url).await
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.config().await)
    }

    pub async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.config().await)
    }

    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.config().await)
    }

    /// The type and the decrypted value of SSM parameter `name`, if it exists.
    #[allow(dead_code)]
    pub async fn param(&self, name: &str) -> Option<(String, String)> {
        let out = self
            .ssm()
            .await
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .ok()?;
        let p = out.parameter()?;
        Some((
            p.r#type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            p.value().unwrap_or_default().to_string(),
        ))
    }

    /// The decrypted value of SSM parameter `name`; panics when it cannot be read.
    #[allow(dead_code)]
    pub async fn secure_value(&self, name: &str) -> String {
        self.ssm()
            .await
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .parameter()
            .and_then(|p| p.value())
            .unwrap_or_default()
            .to_string()
    }

    pub async fn tagging(&self) -> aws_sdk_resourcegroupstagging::Client {
        aws_sdk_resourcegroupstagging::Client::new(&self.config().await)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let alive = matches!(self.child.try_wait(), Ok(None));
            eprintln!(
                "--- emulator on port {} ({}), last lines of its log:\n{}",
                self.port,
                if alive { "running" } else { "exited" },
                self.log_tail()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SDK settings for the emulator (or a proxy in front of it) at `url`, with dummy credentials.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

pub fn dummy_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        // Unimplemented calls answer 500, which the SDK retries: fail fast instead.
        ("AWS_MAX_ATTEMPTS", "2"),
    ]
}

/// Output of a finished command, with the NDJSON records parsed.
#[derive(Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn record(&self, event: &str) -> serde_json::Value {
        self.records()
            .into_iter()
            .rev()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no `{event}` record in:\n{}\n{}", self.stdout, self.stderr))
    }
}

pub fn run(mut cmd: Command) -> Run {
    let out = cmd.output().expect("run iac");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Runs and asserts the exit code, showing the output when it differs.
pub fn run_ok(cmd: Command) -> Run {
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

/// `iac -o json up FILE --yes` against `url` (the emulator or a proxy in front of it); must
/// succeed.
pub fn iac_up(emu: &Emulator, url: &str, file: &Path) -> Run {
    let mut c = emu.iac_at(url);
    c.args(["-o", "json", "up"]).arg(file).arg("--yes");
    run_ok(c)
}

/// `iac -o json down --stack STACK --yes EXTRA...` against `url`; the caller checks the exit
/// code (4 when data is kept).
pub fn iac_down(emu: &Emulator, url: &str, stack: &str, extra: &[&str]) -> Run {
    let mut c = emu.iac_at(url);
    c.args(["-o", "json", "down", "--stack", stack, "--yes"])
        .args(extra);
    run(c)
}

/// A copy of an example stack with its `name` and some text replaced, in a temp dir.
pub struct StackFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl StackFile {
    /// The single-vm example (stacks/bookstore-vm.yaml) as stack `name`.
    pub fn example(name: &str, edits: &[(&str, &str)]) -> StackFile {
        StackFile::from_example("stacks/bookstore-vm.yaml", name, edits)
    }

    /// The example at `example` (relative to the crate) as stack `name`, each `(from, to)` of
    /// `edits` replaced (and required to be there).
    pub fn from_example(example: &str, name: &str, edits: &[(&str, &str)]) -> StackFile {
        let mut text = std::fs::read_to_string(root().join(example))
            .unwrap_or_else(|e| panic!("example stack {example}: {e}"));
        // The top-level `name:` line (the only unindented one).
        let start = if text.starts_with("name: ") {
            0
        } else {
            text.find("\nname: ")
                .unwrap_or_else(|| panic!("{example} has no top-level `name:`"))
                + 1
        };
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        text.replace_range(start..end, &format!("name: {name}"));
        for (from, to) in edits {
            assert!(text.contains(from), "{example} has no `{from}`");
            text = text.replace(from, to);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write stack");
        StackFile { dir, path }
    }

    pub fn rewrite(&self, edits: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(&self.path).expect("read stack");
        for (from, to) in edits {
            assert!(text.contains(from), "the stack has no `{from}`");
            text = text.replace(from, to);
        }
        std::fs::write(&self.path, text).expect("write stack");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A TCP proxy on loopback that waits `delay` before forwarding each chunk a client sends, so
/// every AWS call takes at least that long (used to interrupt `up` part-way, and to measure
/// how parallelism hides latency).
pub struct SlowProxy {
    pub url: String,
    /// The directions of connections still being pumped (two per connection).
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowProxy {
    pub fn start(upstream_port: u16, delay: Duration) -> SlowProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                counter.fetch_add(2, Ordering::SeqCst);
                let (up, down) = (counter.clone(), counter.clone());
                std::thread::spawn(move || {
                    pump(client, server, Some(delay));
                    up.fetch_sub(1, Ordering::SeqCst);
                });
                std::thread::spawn(move || {
                    pump(s2, c2, None);
                    down.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SlowProxy {
            url: format!("http://127.0.0.1:{port}"),
            open,
        }
    }

    /// Waits until every connection is done both ways: what a killed client had sent, still
    /// held back by the delay, has reached the emulator and been answered.
    pub fn wait_idle(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy still had {} open directions after {within:?}",
                self.open.load(std::sync::atomic::Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP proxy on loopback that answers every `nth` connection's request with HTTP 503 and
/// closes it, passing the others through: injected faults the engine must ride out.
pub struct FlakyProxy {
    pub url: String,
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FlakyProxy {
    pub fn start(upstream_port: u16, nth: usize) -> FlakyProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().flatten().enumerate() {
                if n % nth == nth - 1 {
                    let mut client = client;
                    let mut buf = [0u8; 16384];
                    let _ = client.read(&mut buf);
                    let _ = client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    counter.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                std::thread::spawn(move || pump(client, server, None));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        FlakyProxy {
            url: format!("http://127.0.0.1:{port}"),
            refused,
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Option<Duration>) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The strict layer: `tests/proxy/strict_aws.py` in front of an emulator, enforcing what real
/// AWS enforces and moto does not (client-token binding, zone offerings, one subnet per zone,
/// eventual consistency after creates, dependency and in-use refusals, busy volumes), and
/// answering the public image parameters from a table the test rewrites between runs.
pub struct StrictAws {
    child: Child,
    pub url: String,
    table: PathBuf,
    _dir: tempfile::TempDir,
}

/// The public parameter `ubuntu-24.04` resolves through.
pub const UBUNTU_2404: &str =
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id";

impl StrictAws {
    /// Starts the proxy in front of `emu` with `table` (see the script's header).
    pub fn start(emu: &Emulator, table: serde_json::Value) -> StrictAws {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("table.json");
        let port = free_port();
        let proxy = StrictAws {
            child: Command::new(moto_server().with_file_name("python"))
                .arg(root().join("tests/proxy/strict_aws.py"))
                .args([port.to_string(), emu.port.to_string()])
                .arg(&path)
                .stdout(Stdio::null())
                .spawn()
                .expect("start the strict proxy"),
            url: format!("http://127.0.0.1:{port}"),
            table: path,
            _dir: dir,
        };
        proxy.set(table);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the strict proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// Replaces the table; the proxy reads it on every request.
    pub fn set(&self, table: serde_json::Value) {
        std::fs::write(&self.table, table.to_string()).expect("write the proxy's table");
    }
}

impl Drop for StrictAws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// What a stack left in EC2, looked up by its `iac:stack` tag

/// Filter on the stack's `iac:stack` tag.
pub fn stack_filter(stack: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:iac:stack")
        .values(stack)
        .build()
}

/// The security groups tagged with the stack.
pub async fn security_groups(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
    ec2.describe_security_groups()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("describe groups")
        .security_groups()
        .to_vec()
}

/// The value of tag `key`.
pub fn tag(t: &[aws_sdk_ec2::types::Tag], key: &str) -> Option<String> {
    t.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// All tags as a map.
pub fn tag_map(t: &[aws_sdk_ec2::types::Tag]) -> std::collections::BTreeMap<String, String> {
    t.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Live (neither terminated nor shutting down) instances tagged with the stack.
pub async fn live_instances(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = ec2
        .describe_instances()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
        .cloned()
        .collect()
}

/// Live instances of the stack by logical id (their `iac:id` tag).
pub async fn instances_by_logical_id(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> std::collections::BTreeMap<String, aws_sdk_ec2::types::Instance> {
    live_instances(ec2, stack)
        .await
        .into_iter()
        .map(|i| (tag(i.tags(), "iac:id").expect("iac:id tag"), i))
        .collect()
}

/// The stack's data volumes (`iac:id=data`) as EC2 describes them.
pub async fn describe_data_volumes(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> Vec<aws_sdk_ec2::types::Volume> {
    ec2.describe_volumes()
        .filters(stack_filter(stack))
        // The root volume carries the stack's tags too; the data volume is `iac:id=data`.
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:iac:id")
                .values("data")
                .build(),
        )
        .send()
        .await
        .expect("describe volumes")
        .volumes()
        .to_vec()
}

/// The stack's data volumes as (volume id, attached instance).
pub async fn data_volumes(ec2: &aws_sdk_ec2::Client, stack: &str) -> Vec<(String, Option<String>)> {
    describe_data_volumes(ec2, stack)
        .await
        .iter()
        .map(|v| {
            (
                v.volume_id().unwrap_or_default().to_string(),
                v.attachments()
                    .first()
                    .and_then(|a| a.instance_id())
                    .map(str::to_string),
            )
        })
        .collect()
}

/// The stack's one data volume, read back with DescribeVolumes: encrypted, tagged as data, in
/// the availability zone of the live instance `holder` (a logical id, read back with
/// DescribeInstances) and attached to it. Returned for the tier's own checks.
pub async fn assert_data_volume_on(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
    holder: &str,
) -> aws_sdk_ec2::types::Volume {
    let vols = describe_data_volumes(ec2, stack).await;
    assert_eq!(vols.len(), 1, "one data volume: {vols:#?}");
    let vol = vols[0].clone();
    let vms = instances_by_logical_id(ec2, stack).await;
    let vm = vms
        .get(holder)
        .unwrap_or_else(|| panic!("no live instance {holder}: {:?}", vms.keys()));
    assert_eq!(vol.encrypted(), Some(true), "{vol:#?}");
    assert_eq!(tag(vol.tags(), "iac:data").as_deref(), Some("true"));
    let zone = vm.placement().and_then(|p| p.availability_zone());
    assert!(zone.is_some(), "{holder} has no zone: {vm:#?}");
    assert_eq!(vol.availability_zone(), zone, "in the zone of {holder}");
    let attached: Vec<Option<&str>> = vol.attachments().iter().map(|a| a.instance_id()).collect();
    assert_eq!(attached, [vm.instance_id()], "attached to {holder} only");
    vol
}

/// `down` without `--delete-data` (run `d`) kept the data volume `vol_id` and nothing else:
/// exit 4, one resource kept, none remaining, no live instance, the volume `available`.
pub async fn assert_down_kept_data(ec2: &aws_sdk_ec2::Client, stack: &str, d: &Run, vol_id: &str) {
    assert_eq!(
        d.code, 4,
        "exit 4 says data was kept:\n{}\n{}",
        d.stdout, d.stderr
    );
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert_eq!(
        d.record("verified")["kept"].as_array().map(Vec::len),
        Some(1),
        "{}",
        d.stdout
    );
    assert!(live_instances(ec2, stack).await.is_empty());
    let vol = ec2
        .describe_volumes()
        .volume_ids(vol_id)
        .send()
        .await
        .expect("the data volume is kept");
    assert_eq!(
        vol.volumes()[0].state().map(|s| s.as_str()),
        Some("available")
    );
}

/// The `up` run `r` after a `down` that kept the data volume `vol_id` adopted it: it is still
/// the stack's only data volume, attached to the new `holder` (a logical id) in its zone, and
/// `up` created no volume.
pub async fn assert_data_volume_adopted(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
    vol_id: &str,
    holder: &str,
    r: &Run,
) {
    let vol = assert_data_volume_on(ec2, stack, holder).await;
    assert_eq!(vol.volume_id(), Some(vol_id), "the same volume");
    let mutating = r.record("summary")["mutating_calls"].clone();
    assert!(
        mutating.get("ec2:CreateVolume").is_none() && mutating.get("ec2:AttachVolume").is_some(),
        "up attached the kept volume and created none: {mutating}"
    );
}

/// The stack's security groups by logical id, with their single-port TCP rules as sorted
/// (port, source) where the source is a CIDR or `group:<logical id>` (the group id when the
/// group is not the stack's).
pub async fn group_rules(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> std::collections::BTreeMap<String, Vec<(i32, String)>> {
    let groups = ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("groups");
    let ids: std::collections::BTreeMap<String, String> = groups
        .security_groups()
        .iter()
        .map(|g| {
            (
                g.group_id().unwrap_or_default().to_string(),
                tag(g.tags(), "iac:id").unwrap_or_default(),
            )
        })
        .collect();
    groups
        .security_groups()
        .iter()
        .map(|g| {
            let mut v: Vec<(i32, String)> = Vec::new();
            for p in g.ip_permissions() {
                assert_eq!(p.ip_protocol(), Some("tcp"));
                assert_eq!(p.from_port(), p.to_port());
                let port = p.from_port().unwrap_or(-1);
                v.extend(
                    p.ip_ranges()
                        .iter()
                        .map(|r| (port, r.cidr_ip().unwrap_or_default().to_string())),
                );
                v.extend(
                    p.ipv6_ranges()
                        .iter()
                        .map(|r| (port, r.cidr_ipv6().unwrap_or_default().to_string())),
                );
                v.extend(p.user_id_group_pairs().iter().map(|u| {
                    let id = u.group_id().unwrap_or_default();
                    (port, format!("group:{}", ids.get(id).map_or(id, |s| s)))
                }));
            }
            v.sort();
            (tag(g.tags(), "iac:id").unwrap_or_default(), v)
        })
        .collect()
}

/// bench/slow_proxy.py in front of an emulator: a delay per request and, optionally, seeded
/// throttling errors and bare 503s in each service's own format, or DependencyViolation refusals.
/// Every request it answers is logged in order (see [`Calls`]). Stopped on drop.
pub struct AwsProxy {
    child: Child,
    pub url: String,
    stats: tempfile::NamedTempFile,
    calls: tempfile::NamedTempFile,
    /// The directory of the file whose creation lets held requests through.
    gate: tempfile::TempDir,
}

/// Polls the proxy's call log every 50 ms until `seen` holds of it, while `child` (an `iac`
/// run held at some call by [`AwsProxy::holding`]) still runs; fails if the run ends first or
/// after 120 s, showing the calls. Gives the log that satisfied `seen`.
pub async fn until_calls(
    proxy: &AwsProxy,
    child: &mut Child,
    seen: impl Fn(&Calls) -> bool,
) -> Calls {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let calls = proxy.calls();
        if seen(&calls) {
            return calls;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "iac ended ({status}) before the calls awaited:\n{}",
                calls.changes()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not the calls awaited in 120 s:\n{}",
            calls.changes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl AwsProxy {
    /// Adds `delay_ms` to every request.
    pub fn slow(emu: &Emulator, delay_ms: u64) -> AwsProxy {
        AwsProxy::start(emu, &[delay_ms.to_string()])
    }

    /// Adds `delay_ms` to every request, and holds every request for `op` (`ec2:RunInstances`)
    /// until [`AwsProxy::release`]: a run stays at that step for as long as a test needs.
    pub fn holding(emu: &Emulator, delay_ms: u64, op: &str) -> AwsProxy {
        let gate = tempfile::tempdir().expect("gate dir");
        let hold = format!("--hold={op}:{}", gate.path().join("go").display());
        AwsProxy::start_with(emu, &[delay_ms.to_string(), hold], gate)
    }

    /// Lets the held requests through, and those to come.
    pub fn release(&self) {
        std::fs::write(self.gate.path().join("go"), b"").expect("open the gate");
    }

    /// Forwards every request at once, logging each (see [`AwsProxy::calls`]).
    pub fn logging(emu: &Emulator) -> AwsProxy {
        AwsProxy::start(emu, &["0".to_string()])
    }

    /// Answers the first `times` requests for `op` (`ec2:DeleteSecurityGroup`) with the
    /// service's 400 DependencyViolation, as AWS does while something still uses the resource;
    /// forwards the rest.
    pub fn violating(emu: &Emulator, op: &str, times: u64) -> AwsProxy {
        AwsProxy::start(emu, &["0".to_string(), format!("--violate={op}:{times}")])
    }

    /// Answers a share `throttle` of the requests with the service's throttling error and a
    /// share `unavailable` with a bare 503 (the same `seed`, the same sequence).
    pub fn faulty(emu: &Emulator, throttle: f64, unavailable: f64, seed: u64) -> AwsProxy {
        AwsProxy::start(
            emu,
            &[
                "0".to_string(),
                format!("--throttle={throttle}"),
                format!("--unavailable={unavailable}"),
                format!("--seed={seed}"),
            ],
        )
    }

    fn start(emu: &Emulator, args: &[String]) -> AwsProxy {
        AwsProxy::start_with(emu, args, tempfile::tempdir().expect("gate dir"))
    }

    fn start_with(emu: &Emulator, args: &[String], gate: tempfile::TempDir) -> AwsProxy {
        let python = moto_server().with_file_name("python");
        let port = free_port();
        let stats = tempfile::NamedTempFile::new().expect("stats file");
        let calls = tempfile::NamedTempFile::new().expect("calls file");
        let child = Command::new(python)
            .arg(root().join("bench/slow_proxy.py"))
            .args([port.to_string(), emu.port.to_string()])
            .args(args)
            .arg(format!("--stats={}", stats.path().display()))
            .arg(format!("--calls={}", calls.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bench/slow_proxy.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        AwsProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            stats,
            calls,
            gate,
        }
    }

    /// (throttled, unavailable) answers given so far.
    pub fn injected(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.stats.path()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        (
            v["throttled"].as_u64().unwrap_or(0),
            v["unavailable"].as_u64().unwrap_or(0),
        )
    }

    /// Every request answered so far, in the order the answers were sent.
    pub fn calls(&self) -> Calls {
        let text = std::fs::read_to_string(self.calls.path()).expect("read the proxy's call log");
        Calls(
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect(),
        )
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the proxy answered: the operation (`ec2:RunInstances`, as the service is named
/// in the request's credential scope), the ids the request names, the ids a create answered
/// with, the status, the injected error if any, and when it was sent and answered on one
/// counter shared by all requests.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Call {
    pub op: String,
    pub ids: Vec<String>,
    pub created: Vec<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub start: u64,
    pub end: u64,
}

impl Call {
    /// Whether the request or its answer names `id` (any call when `id` is empty).
    pub fn names(&self, id: &str) -> bool {
        id.is_empty() || self.ids.iter().chain(&self.created).any(|i| i == id)
    }

    /// Whether it is a read (Describe, List, Get).
    pub fn is_read(&self) -> bool {
        let name = self.op.split(':').nth(1).unwrap_or_default();
        ["Describe", "List", "Get"]
            .iter()
            .any(|p| name.starts_with(p))
    }
}

/// The proxy's call log, with order assertions that name the calls they looked at.
pub struct Calls(pub Vec<Call>);

impl Calls {
    /// The calls after the first `n` (those of a later run through the same proxy).
    pub fn since(self, n: usize) -> Calls {
        Calls(self.0.into_iter().skip(n).collect())
    }

    /// Calls of `op` naming `id` (in the request or the answer; any when `id` is empty).
    pub fn of(&self, op: &str, id: &str) -> Vec<&Call> {
        self.0
            .iter()
            .filter(|c| c.op == op && c.names(id))
            .collect()
    }

    /// The one id the single successful `op` naming `id` answered with: the group id of
    /// `CreateSecurityGroup` for its name, the instance of a `RunInstances`.
    pub fn created(&self, op: &str, id: &str) -> String {
        let made: Vec<&String> = self
            .of(op, id)
            .into_iter()
            .filter(|c| c.error.is_none())
            .flat_map(|c| &c.created)
            .collect();
        assert_eq!(
            made.len(),
            1,
            "{op} {id} made {made:?}:\n{}",
            self.changes()
        );
        made[0].clone()
    }

    /// Asserts that every call `a` (op, id) was answered before any call `b` was sent, and that
    /// there is at least one of each.
    pub fn assert_before(&self, a: (&str, &str), b: (&str, &str)) {
        let (first, then) = (self.of(a.0, a.1), self.of(b.0, b.1));
        assert!(!first.is_empty(), "no {a:?} in:\n{}", self.changes());
        assert!(!then.is_empty(), "no {b:?} in:\n{}", self.changes());
        let answered = first.iter().map(|c| c.end).max().unwrap_or(0);
        let sent = then.iter().map(|c| c.start).min().unwrap_or(0);
        assert!(
            answered < sent,
            "{a:?} (answered at {answered}) must come before {b:?} (sent at {sent}):\n{}",
            self.changes()
        );
    }

    /// Asserts each step happened after the one before it (see [`Calls::assert_before`]).
    pub fn assert_in_order(&self, steps: &[(&str, &str)]) {
        for pair in steps.windows(2) {
            self.assert_before(pair[0], pair[1]);
        }
    }

    /// The log without reads (Describe, List, Get), one call a line, for failure messages.
    pub fn changes(&self) -> String {
        self.0
            .iter()
            .filter(|c| !c.is_read())
            .map(|c| {
                format!(
                    "  {:>4}-{:<4} {} {:?} -> {:?} {}",
                    c.start,
                    c.end,
                    c.op,
                    c.ids,
                    c.created,
                    c.error.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Launches one pool instance the way the monitor does: RunInstances from the launch template,
/// tagged at creation with the pool tags and no `iac:id`.
pub async fn launch_pool_instance(ec2: &aws_sdk_ec2::Client, stack: &str) -> String {
    let tags: Vec<aws_sdk_ec2::types::Tag> = [
        ("Name", format!("{stack}-agent")),
        ("iac:stack", stack.to_string()),
        ("iac:role", "agent".to_string()),
        ("iac:scaler", "pool".to_string()),
        ("managed-by", "iac".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
    .collect();
    let out = ec2
        .run_instances()
        .launch_template(
            aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                .launch_template_name(format!("{stack}-agent"))
                .version("$Default")
                .build(),
        )
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .expect("launch from the template");
    out.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_string()
}

/// The file systems created for the stack (by creation token).
pub async fn file_systems(
    efs: &aws_sdk_efs::Client,
    stack: &str,
) -> Vec<aws_sdk_efs::types::FileSystemDescription> {
    efs.describe_file_systems()
        .creation_token(format!("iac-{stack}-efs"))
        .send()
        .await
        .expect("describe file systems")
        .file_systems()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Secret values in what commands print

/// Reads every secret of Secrets Manager (the Aurora managed password) as `[[name, value]]`,
/// with boto3 from the emulator's own venv (the crate has no Secrets Manager client).
const READ_SECRETS: &str = r#"
import json, sys, boto3
sm = boto3.client("secretsmanager", endpoint_url=sys.argv[1])
out = []
for page in sm.get_paginator("list_secrets").paginate():
    for s in page["SecretList"]:
        value = sm.get_secret_value(SecretId=s["ARN"]).get("SecretString")
        if value:
            out.append([s["Name"], value])
print(json.dumps(out))
"#;

/// The shortest run of a secret's characters that counts as leaked.
pub const LEAK_WINDOW: usize = 12;

/// The secret values in the emulator, read back by value (never guessed from key names): the
/// generated passwords and tokens, the private keys of TLS bundles, whatever the stack's
/// instances wrote as SecureStrings (swarm join tokens), the app's own secret parameters, and
/// the secrets in Secrets Manager (Aurora's managed password).
pub struct Secrets {
    /// (where it is kept, the secret text).
    pub values: Vec<(String, String)>,
}

impl Secrets {
    /// Every SecureString parameter of the (test's own) account, the stack's under
    /// `/iac/<stack>/` among them, and every Secrets Manager secret. A multi-line parameter
    /// that is no PEM bundle is a spec (`KEY=VALUE` lines: an image, plain settings, secret
    /// parameter *names*) that `plan` may show; the values it names are parameters of their
    /// own, read here.
    pub async fn read(emu: &Emulator, stack: &str) -> Secrets {
        let ssm = emu.ssm().await;
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = ssm
                .describe_parameters()
                .parameter_filters(
                    aws_sdk_ssm::types::ParameterStringFilter::builder()
                        .key("Type")
                        .values("SecureString")
                        .build()
                        .expect("a filter"),
                )
                .set_next_token(token)
                .send()
                .await
                .expect("describe parameters");
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_string)),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut values = Vec::new();
        for name in names {
            let value = emu.secure_value(&name).await;
            values.extend(
                secret_material(&value)
                    .into_iter()
                    .map(|v| (name.clone(), v)),
            );
        }
        let out = Command::new(moto_server().with_file_name("python"))
            .args(["-c", READ_SECRETS, &emu.url])
            .envs(dummy_env())
            .output()
            .expect("read Secrets Manager");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stored: Vec<(String, String)> =
            serde_json::from_slice(&out.stdout).expect("the secrets as JSON");
        for (name, value) in stored {
            // A JSON secret (RDS's: username, password, engine...): its password fields.
            let fields: Option<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_str(&value).ok();
            match fields {
                Some(map) => values.extend(
                    map.iter()
                        .filter(|(k, _)| k.to_ascii_lowercase().contains("password"))
                        .filter_map(|(_, v)| v.as_str())
                        .map(|v| (name.clone(), v.to_string())),
                ),
                None => values.push((name, value)),
            }
        }
        let prefix = format!("/iac/{stack}/");
        assert!(
            !values.is_empty(),
            "no secret found for stack {stack} (looked under {prefix} and in the whole account): the check would prove nothing"
        );
        Secrets { values }
    }

    /// Where each secret is kept (a parameter or secret name), for tests that assert which
    /// ones were checked.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.values.iter().map(|(n, _)| n.as_str()).collect();
        v.dedup();
        v
    }

    /// Adds the secrets of `other` not already here (a second read, after a secret was
    /// replaced or before an earlier `down` deleted it).
    pub fn merge(&mut self, other: Secrets) {
        for v in other.values {
            if !self.values.contains(&v) {
                self.values.push(v);
            }
        }
    }

    /// Asserts that no secret, nor any run of [`LEAK_WINDOW`] of its characters, is in the
    /// stdout or stderr of any of `runs` (also with the output's whitespace removed, for a key
    /// printed across lines).
    pub fn assert_absent(&self, runs: &[&Run]) {
        let labels: Vec<String> = (0..runs.len()).map(|i| format!("run {i}")).collect();
        let labelled: Vec<(&str, &Run)> = labels
            .iter()
            .map(String::as_str)
            .zip(runs.iter().copied())
            .collect();
        self.assert_absent_labelled(&labelled);
    }

    /// [`Secrets::assert_absent`] with each run named (the command it was) in the failure.
    pub fn assert_absent_labelled(&self, runs: &[(&str, &Run)]) {
        for (label, r) in runs {
            for (stream, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                let mut seen = std::collections::HashSet::new();
                for t in [text.as_bytes(), squeezed.as_bytes()] {
                    seen.extend(t.windows(LEAK_WINDOW));
                }
                for (name, secret) in &self.values {
                    let b = secret.as_bytes();
                    let leaked = if b.len() < LEAK_WINDOW {
                        text.contains(secret.as_str())
                    } else {
                        b.windows(LEAK_WINDOW).any(|w| seen.contains(w))
                    };
                    assert!(
                        !leaked,
                        "`{label}` (exit {}) printed (part of) the secret in {name} on its {stream}:\n{text}",
                        r.code
                    );
                }
            }
        }
    }
}

/// Every run of a scenario, named by its command, kept for the secret check at its end.
#[derive(Default)]
pub struct Runs(pub Vec<(String, Run)>);

impl Runs {
    /// Keeps a copy of `r` under `what` (the command) and hands `r` back.
    pub fn keep(&mut self, what: &str, r: Run) -> Run {
        self.0.push((what.to_string(), r.clone()));
        r
    }

    /// The commands kept, in order.
    pub fn commands(&self) -> Vec<&str> {
        self.0.iter().map(|(w, _)| w.as_str()).collect()
    }

    /// Asserts that no secret of `secrets` is in the output of any run kept.
    pub fn assert_no_secret(&self, secrets: &Secrets) {
        let labelled: Vec<(&str, &Run)> = self.0.iter().map(|(w, r)| (w.as_str(), r)).collect();
        secrets.assert_absent_labelled(&labelled);
    }
}

/// The secret text in one SecureString value: the base64 bodies of its private keys (a TLS
/// bundle's certificates are public), nothing for a multi-line spec, else the whole value.
fn secret_material(value: &str) -> Vec<String> {
    if value.contains("-----BEGIN ") {
        let mut keys = Vec::new();
        let mut body: Option<String> = None;
        for line in value.lines() {
            if line.starts_with("-----BEGIN ") && line.contains("PRIVATE KEY") {
                body = Some(String::new());
            } else if line.starts_with("-----END ") {
                keys.extend(body.take());
            } else if let Some(b) = body.as_mut() {
                b.push_str(line.trim());
            }
        }
        return keys;
    }
    if value.trim().contains('\n') || value.trim().is_empty() {
        return Vec::new();
    }
    vec![value.trim().to_string()]
}

/// Reads the secrets (see [`Secrets::read`]) and asserts none is in the output of `runs`.
pub async fn assert_no_secrets(emu: &Emulator, stack: &str, runs: &[&Run]) {
    Secrets::read(emu, stack).await.assert_absent(runs);
}
