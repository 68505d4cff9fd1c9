//! Real boots: `iac up` on the emulator, then the local instance runner
//! (scripts/realboot/runner.py) boots every running instance as a systemd "VM container" that
//! runs its real user-data (apt installs, Docker, compose, nginx / HAProxy, MySQL), and the app
//! answers on 127.0.0.1 from a real database.
//!
//! Needs the private Docker engine, the registry and the images of scripts/realboot
//! (`daemons.sh start`, `images.sh`; scripts/test.sh does both). Missing is a failure.
mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The VM containers of every stack share one docker network with the default VPC's CIDR:
/// one stack at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long one boot may take (apt installs, image pulls, MySQL's first start) before the
/// test gives up and shows the VM's log. A deadline for the wait, not an assertion on speed.
const BOOT_DEADLINE: Duration = Duration::from_secs(900);

fn realboot() -> PathBuf {
    root().join("scripts/realboot")
}

fn docker_host() -> String {
    let run = std::env::var("IAC_REALBOOT_RUN").unwrap_or_else(|_| "/run/iac-realboot".into());
    format!("unix://{run}/docker.sock")
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("run /usr/bin/docker (apt-get install docker.io, or run .ci/run)")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The engine and the VM image must be there: fail loudly, never skip.
fn require_engine() {
    let out = docker(&["image", "inspect", "local/vm:bookworm"]);
    assert!(
        out.status.success(),
        "the real-boot engine or its images are missing ({}): run \
         `bash scripts/realboot/daemons.sh start && bash scripts/realboot/images.sh` \
         (scripts/test.sh does), or `bash .ci/run`",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The runner for one stack; stopped on drop (it removes its VM containers as it exits).
struct Runner {
    child: Child,
    state: tempfile::TempDir,
    stack: String,
}

impl Runner {
    fn start(emu: &Emulator, stack: &str) -> Runner {
        let state = tempfile::tempdir().expect("tempdir");
        let python = moto_server().with_file_name("python");
        let child = Command::new(python)
            .arg(realboot().join("runner.py"))
            .args(["--endpoint", &emu.url, "--stack", stack, "--state"])
            .arg(state.path())
            .env("DOCKER_HOST", docker_host())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the instance runner");
        Runner {
            child,
            state,
            stack: stack.to_string(),
        }
    }

    fn report(&self) -> Value {
        std::fs::read_to_string(self.state.path().join("instances.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    /// Waits until each of `ids` has a VM whose user-data finished, and asserts it exited 0
    /// (showing the VM's boot log otherwise).
    fn wait_booted(&self, ids: &[String]) -> Value {
        let deadline = Instant::now() + BOOT_DEADLINE;
        loop {
            let report = self.report();
            let done = ids
                .iter()
                .all(|id| report["instances"][id]["user_data_rc"].is_i64());
            if done {
                let failed: Vec<String> = ids
                    .iter()
                    .filter(|id| report["instances"][id.as_str()]["user_data_rc"] != 0)
                    .map(|id| {
                        let entry = &report["instances"][id.as_str()];
                        format!(
                            "{id}: the user-data exited {}:\n{}",
                            entry["user_data_rc"],
                            container_log(entry)
                        )
                    })
                    .collect();
                assert!(failed.is_empty(), "{}", failed.join("\n"));
                return report;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = ids
                    .iter()
                    .map(|id| format!("{id}:\n{}", container_log(&report["instances"][id])))
                    .collect();
                panic!(
                    "the VMs did not finish booting; report {report:#}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Waits until no VM container of this stack is left.
    fn wait_no_vms(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = vm_containers(&self.stack);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "VM containers left after down: {left:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // SIGTERM: the runner removes its containers, network and loop devices, then exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_containers(stack: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=iac.localcloud.stack={stack}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn container_log(entry: &Value) -> String {
    match entry["container"].as_str() {
        Some(c) => {
            let out = docker(&[
                "exec",
                c,
                "tail",
                "-n",
                "60",
                "/var/log/cloud-init-output.log",
            ]);
            String::from_utf8_lossy(&out.stdout).to_string()
        }
        None => format!("no container: {entry}"),
    }
}

/// Runs `cmd` inside the VM container `c` and returns its stdout (any exit code).
fn vm_exec(c: &str, cmd: &str) -> String {
    let out = docker(&["exec", c, "bash", "-c", cmd]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One HTTP request with curl: (status, body).
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-m", "20", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn stack_instances(emu: &Emulator, stack: &str) -> Vec<(String, String)> {
    live_instances(&emu.ec2().await, stack)
        .await
        .into_iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                tag(i.tags(), "iac:id").unwrap_or_default(),
            )
        })
        .collect()
}

/// The secrets' rule, checked inside a VM: `secret` is in no process's arguments.
fn assert_not_in_ps(c: &str, secret: &str) {
    assert!(!secret.is_empty(), "no secret to look for");
    let ps = vm_exec(c, "ps -eo args");
    assert!(!ps.is_empty(), "ps printed nothing in {c}");
    assert!(
        !ps.contains(secret),
        "the database password is in a process listing of {c}"
    );
}

/// `secret` as the boot scripts put it into a database URL (RFC 3986 unreserved kept).
fn url_encoded(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'~' | b'-' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The secrets' rule for containers, checked inside a VM: neither `secret` nor its URL-encoded
/// form is in a process's arguments, nor in what `docker inspect` shows of the VM's running
/// containers (Config.Env, Cmd, Entrypoint, Args, mounts...), of which there are `containers`.
fn assert_secret_hidden_in_vm(c: &str, secret: &str, containers: usize) {
    assert_not_in_ps(c, secret);
    assert_not_in_ps(c, &url_encoded(secret));
    let inspect = vm_exec(c, "docker inspect $(docker ps -q)");
    let all = json(&inspect);
    assert_eq!(
        all.as_array().map_or(0, Vec::len),
        containers,
        "containers running in {c}: {inspect}"
    );
    for form in [secret.to_string(), url_encoded(secret)] {
        assert!(
            !inspect.contains(&form),
            "a secret is in `docker inspect` of a container in {c}"
        );
    }
}

/// Metadata requests stay in the VM: 169.254.169.254 is a local address there, and the rest
/// of the link-local range is unreachable.
fn assert_imds_local(c: &str) {
    let local = vm_exec(c, "ip route get 169.254.169.254");
    assert!(
        local.starts_with("local "),
        "IMDS is not local in {c}: {local}"
    );
    let other = docker(&["exec", c, "ip", "route", "get", "169.254.169.253"]);
    assert!(
        !other.status.success(),
        "other link-local addresses are routable in {c}: {}",
        String::from_utf8_lossy(&other.stdout)
    );
}

/// GETs `url` until the set of instance ids that answered holds `want` ids (or `tries` ran
/// out); each answer must be a 200 with the row `title` read from the database.
fn answering_ids(
    url: &str,
    title: &str,
    want: usize,
    tries: usize,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..tries {
        let (code, body) = http("GET", url, None);
        if code == 200 {
            let v = json(&body);
            assert!(
                v["books"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|x| x["title"] == title)),
                "{} answered without the row written: {body}",
                v["instance_id"]
            );
            seen.insert(v["instance_id"].as_str().unwrap_or_default().to_string());
            if seen.len() >= want {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    seen
}

/// The instance ids of `all` (id, logical id) whose logical id starts with `prefix`.
fn by_role(all: &[(String, String)], prefix: &str) -> Vec<String> {
    all.iter()
        .filter(|(_, id)| id.starts_with(prefix))
        .map(|(i, _)| i.clone())
        .collect()
}

/// An lb-vms stack booted for real, with a row written through its balancer.
struct LbVms {
    ids: Vec<String>,
    report: Value,
    balancer: Vec<String>,
    webs: Vec<String>,
    /// The catalog through the balancer's published port 80.
    url: String,
}

/// Waits for the four VMs of lb-vms stack `name` to boot, writes the row `title` through
/// HAProxy (which admits a web VM a few seconds after its boot, once its checks pass), and
/// asserts both web VMs answer with it, from the database VM.
async fn lb_vms_booted_with_a_row(
    emu: &Emulator,
    runner: &Runner,
    name: &str,
    title: &str,
) -> LbVms {
    let all = stack_instances(emu, name).await;
    let ids: Vec<String> = all.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(ids.len(), 4, "balancer, two web VMs, database: {all:?}");
    let report = runner.wait_booted(&ids);
    let balancer = by_role(&all, "lb");
    let webs = by_role(&all, "web");
    assert_eq!((balancer.len(), webs.len()), (1, 2), "{all:?}");
    let lb = report["instances"][&balancer[0]]["ports"]["80"]
        .as_str()
        .expect("balancer port 80")
        .to_string();
    let url = format!("http://{lb}/book/catalog");
    let mut answer = (0, String::new());
    for _ in 0..60 {
        answer = http("POST", &url, Some(title));
        if answer.0 != 503 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(answer.0, 201, "{}", answer.1);
    let want: std::collections::BTreeSet<String> = webs.iter().cloned().collect();
    assert_eq!(
        answering_ids(&url, title, 2, 40),
        want,
        "both web VMs answer through HAProxy, from the database VM"
    );
    LbVms {
        ids,
        report,
        balancer,
        webs,
        url,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_boot_for_real_and_balance_across_web_vms() {
    let _one = ONE_AT_A_TIME.lock().await;
    require_engine();
    let emu = Emulator::start();
    let stack = StackFile::from_example(
        "stacks/bookstore-lb-vms.yaml",
        "rb-lb",
        &[("ghcr.io/example/bookstore:1.0.0", "bookstore:test")],
    );
    // iac reaches the emulator through the strict layer, which answers GetCommandInvocation from
    // what the runner (playing the SSM agent) really ran: the update's and the reload's real
    // results count.
    let name = "rb-lb";
    let (runner, cloud) = up_for_real(&emu, &stack, name);
    let iac = |args: &[&str]| iac_via(&emu, &cloud, &stack, args);
    let title = format!("lb real boot {}", std::process::id());
    let LbVms {
        ids,
        report,
        balancer,
        webs,
        url,
    } = lb_vms_booted_with_a_row(&emu, &runner, "rb-lb", &title).await;

    // The password iac generated is in no process listing on any VM, nor in `docker inspect`
    // of the web VMs' app containers.
    let pw = emu.secure_value("/iac/rb-lb/db-password").await;
    for id in &ids {
        let c = report["instances"][id]["container"]
            .as_str()
            .expect("container");
        assert_not_in_ps(c, &pw);
        assert_imds_local(c);
    }
    for id in &webs {
        let c = report["instances"][id]["container"]
            .as_str()
            .expect("container");
        assert_secret_hidden_in_vm(c, &pw, 1);
    }

    // Issue 10 for real on lb-vms: an image update goes through HAProxy one web VM at a time
    // (drain, update, ready) while the test keeps asking the balancer: every request gets an
    // answer with the row written before, so there is no moment without a healthy backend.
    let want: std::collections::BTreeSet<String> = webs.iter().cloned().collect();
    let lb_c = report["instances"][&balancer[0]]["container"]
        .as_str()
        .expect("container")
        .to_string();
    stack.rewrite(&[("image: bookstore:test", "image: bookstore:test2")]);
    let (r, watched) = watch_balancer(&url, &title, &lb_c, || iac(&["up", "--yes"]));
    assert_exit(&r, 0);
    watched.assert_always_served("the update");
    let now: Vec<String> = instance_ids(&emu, name).await;
    assert_eq!(now, ids, "no instance replaced");
    let report = runner.report();
    for web in &webs {
        let c = report["instances"][web]["container"]
            .as_str()
            .expect("container");
        assert_eq!(app_image(c), "bookstore:test2", "{web} runs the new image");
        assert_eq!(
            invocation_statuses(&report, web),
            ["Success"],
            "{web} ran its update"
        );
    }
    // The balancer ran drain and ready around each web VM's update.
    let lb_runs = invocation_statuses(&report, &balancer[0]);
    assert!(
        lb_runs.len() >= 4 && lb_runs.iter().all(|s| s == "Success"),
        "{lb_runs:?}"
    );
    assert_eq!(
        answering_ids(&url, &title, 2, 40),
        want,
        "both back in rotation"
    );

    // A third web VM: iac reloads HAProxy in place (Run Command, run by the runner on the
    // balancer), and the new VM answers too.
    stack.rewrite(&[("count: 2", "count: 3")]);
    assert_exit(&iac(&["up", "--yes"]), 0);
    let all = stack_instances(&emu, "rb-lb").await;
    let webs = by_role(&all, "web");
    assert_eq!(webs.len(), 3, "{all:?}");
    let ids: Vec<String> = all.iter().map(|(i, _)| i.clone()).collect();
    let report = runner.wait_booted(&ids);
    let commands = &report["instances"][&balancer[0]]["commands"];
    assert!(
        commands
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|x| x["rc"] == 0)),
        "the balancer ran the reload: {commands:#}"
    );
    let seen = answering_ids(&url, &title, 3, 120);
    let want: std::collections::BTreeSet<String> = webs.iter().cloned().collect();
    assert_eq!(
        seen, want,
        "the third web VM is in rotation after the reload"
    );

    run_ok({
        let mut c = emu.iac();
        c.args(["down", "--yes", "--delete-data"]).arg(stack.path());
        c
    });
    runner.wait_no_vms();
}

/// What the balancer did while `iac` worked: the answer to each request (a 200 only when it
/// had the row written before) and, sampled between requests, each web VM's status in HAProxy.
#[derive(Default)]
struct Watched {
    answers: Vec<(u16, String)>,
    /// (server, status) of backend `app`, one list per sample (empty when the socket failed).
    servers: Vec<Vec<(String, String)>>,
}

impl Watched {
    /// Every request got a good answer and HAProxy had a web VM UP in every sample: no moment
    /// without a healthy backend during `what`.
    fn assert_always_served(&self, what: &str) {
        let failed: Vec<&(u16, String)> = self.answers.iter().filter(|(c, _)| *c != 200).collect();
        assert!(
            self.answers.len() > 10 && failed.is_empty(),
            "{} of {} requests during {what} got no good answer: {failed:?}",
            failed.len(),
            self.answers.len()
        );
        let none_up: Vec<&Vec<(String, String)>> = self
            .servers
            .iter()
            .filter(|s| !s.iter().any(|(_, status)| status.starts_with("UP")))
            .collect();
        assert!(
            none_up.is_empty(),
            "HAProxy had no web VM UP in {} of {} samples during {what}: {none_up:?}",
            none_up.len(),
            self.servers.len()
        );
    }

    /// The servers some sample saw out of rotation (drained) while another was UP.
    fn drained(&self) -> std::collections::BTreeSet<String> {
        self.servers
            .iter()
            .flat_map(|s| s.iter().filter(|(_, status)| status == "DRAIN"))
            .map(|(server, _)| server.clone())
            .collect()
    }
}

/// The web VMs of backend `app` and their status, from HAProxy's admin socket on the balancer
/// VM `c` (`show stat`: column 2 the server, column 18 its status).
fn haproxy_servers(c: &str) -> Vec<(String, String)> {
    vm_exec(
        c,
        "echo 'show stat' | socat stdio unix-connect:/run/iac-haproxy.sock",
    )
    .lines()
    .map(|l| l.split(',').collect::<Vec<&str>>())
    .filter(|f| f.len() > 17 && f[0] == "app" && !matches!(f[1], "FRONTEND" | "BACKEND"))
    .map(|f| (f[1].to_string(), f[17].to_string()))
    .collect()
}

/// Runs `during` while another thread keeps asking the balancer (`url`, for the row `title`)
/// and sampling HAProxy on the balancer VM `balancer`; returns what `during` returned and what
/// was seen.
fn watch_balancer<T>(
    url: &str,
    title: &str,
    balancer: &str,
    during: impl FnOnce() -> T,
) -> (T, Watched) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = Watched::default();
            while !stop.load(Ordering::SeqCst) {
                let (code, body) = http("GET", url, None);
                let ok = code == 200
                    && json(&body)["books"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|x| x["title"] == title));
                seen.answers.push((if ok { 200 } else { code }, body));
                seen.servers.push(haproxy_servers(balancer));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        // The watcher stops even when `during` panics.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
        stop.store(true, Ordering::SeqCst);
        let seen = watcher.join().expect("the watcher");
        match out {
            Ok(out) => (out, seen),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The image of the container named `app` in the web VM `c`.
fn app_image(c: &str) -> String {
    vm_exec(c, "docker inspect --format '{{.Config.Image}}' app")
        .trim()
        .to_string()
}

/// The VM container of instance `id` in the runner's `report`.
fn container_of(report: &Value, id: &str) -> String {
    report["instances"][id]["container"]
        .as_str()
        .unwrap_or_else(|| panic!("no VM container for {id}: {report:#}"))
        .to_string()
}

/// Issue 10's rollback for real on lb-vms. A release that cannot start on web-2 only (the
/// stand-in app exits at start when `BOOKSTORE_FAIL_ON_INSTANCE` names its instance) is
/// deployed: web-1 is drained, updated and put back; web-2's new container fails its health
/// check. `up` exits 1 naming the failing step on web-2, `/iac/<stack>/app` is the last good
/// spec again, web-1 is sent it again (drained, updated back, put back), web-2's old container
/// never stopped serving, and while all of that runs every request through the balancer gets
/// the row and HAProxy always has a web VM UP. Then the fixed file rolls both forward.
#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_roll_back_a_web_vm_update_that_fails_its_health_check_then_roll_forward() {
    let _one = ONE_AT_A_TIME.lock().await;
    require_engine();
    let emu = Emulator::start();
    let name = "rb-lbrb";
    let stack = StackFile::from_example(
        "stacks/bookstore-lb-vms.yaml",
        name,
        &[("ghcr.io/example/bookstore:1.0.0", "bookstore:test")],
    );
    let (runner, cloud) = up_for_real(&emu, &stack, name);
    let iac = |args: &[&str]| iac_via(&emu, &cloud, &stack, args);
    let title = format!("lb rollback {}", std::process::id());
    let LbVms {
        ids,
        report,
        balancer,
        url,
        ..
    } = lb_vms_booted_with_a_row(&emu, &runner, name, &title).await;
    let all = stack_instances(&emu, name).await;
    let web = |logical: &str| {
        all.iter()
            .find(|(_, l)| l == logical)
            .map(|(i, _)| i.clone())
            .unwrap_or_else(|| panic!("no {logical}: {all:?}"))
    };
    let (web1, web2) = (web("web-1"), web("web-2"));
    let lb_c = container_of(&report, &balancer[0]);
    let (web1_c, web2_c) = (container_of(&report, &web1), container_of(&report, &web2));
    let good_spec = app_spec_param(&emu, name).await;
    assert!(good_spec.contains("IMAGE=bookstore:test\n"), "{good_spec}");
    let app_id = |c: &str| {
        vm_exec(
            c,
            "docker inspect --format '{{.Id}} {{.State.StartedAt}}' app",
        )
        .trim()
        .to_string()
    };
    let web2_app = app_id(&web2_c);
    assert!(!web2_app.is_empty(), "web-2 runs its app container");

    // The bad release: a new image and a setting with which the app cannot start on web-2.
    let fail_on = format!("    BOOKSTORE_FAIL_ON_INSTANCE: {web2}\n");
    stack.rewrite(&[
        ("image: bookstore:test", "image: bookstore:test2"),
        (
            "    FLASK_ENV: production\n",
            &format!("    FLASK_ENV: production\n{fail_on}"),
        ),
    ]);
    let (r, watched) = watch_balancer(&url, &title, &lb_c, || iac(&["up", "--yes"]));
    assert_exit(&r, 1);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&format!(
            "failed on {web2}: iac-app-update: FAILED in step health: app-next"
        )) && out.contains("app keeps serving"),
        "the failing step is named, on web-2:\n{out}"
    );
    assert!(
        out.contains(&format!("set /iac/{name}/app back to its last good value")),
        "{out}"
    );
    watched.assert_always_served("the failed update and its rollback");
    assert_eq!(
        watched.drained(),
        ["web-1", "web-2"].map(String::from).into(),
        "each web VM was drained in turn, the other one UP"
    );
    assert_eq!(
        app_spec_param(&emu, name).await,
        good_spec,
        "the spec parameter is back to the last good spec"
    );
    assert_eq!(instance_ids(&emu, name).await, ids, "no instance replaced");
    let report = runner.report();
    assert_eq!(
        invocation_statuses(&report, &web1),
        ["Success", "Success"],
        "web-1 was updated, then sent the last good spec again"
    );
    assert_eq!(invocation_statuses(&report, &web2), ["Failed"]);
    // Drain and ready around web-1, web-2, then web-1 again for the rollback.
    assert_eq!(invocation_statuses(&report, &balancer[0]), ["Success"; 6]);
    for c in [&web1_c, &web2_c] {
        assert_eq!(
            app_image(c),
            "bookstore:test",
            "{c} serves the last good image"
        );
        assert_eq!(
            vm_exec(c, "docker ps -a --format '{{.Names}}'").trim(),
            "app",
            "{c}: nothing but the serving container is left"
        );
    }
    assert_eq!(
        app_id(&web2_c),
        web2_app,
        "web-2's old container kept serving, never stopped"
    );
    let both: std::collections::BTreeSet<String> = [web1.clone(), web2.clone()].into();
    assert_eq!(answering_ids(&url, &title, 2, 40), both, "both in rotation");

    // The fixed file rolls both forward.
    stack.rewrite(&[(fail_on.as_str(), "")]);
    let (r, watched) = watch_balancer(&url, &title, &lb_c, || iac(&["up", "--yes"]));
    assert_exit(&r, 0);
    watched.assert_always_served("the roll forward");
    let spec = app_spec_param(&emu, name).await;
    assert!(
        spec.contains("IMAGE=bookstore:test2\n") && !spec.contains("BOOKSTORE_FAIL_ON_INSTANCE"),
        "{spec}"
    );
    let report = runner.report();
    assert_eq!(
        invocation_statuses(&report, &web1),
        ["Success", "Success", "Success"]
    );
    assert_eq!(invocation_statuses(&report, &web2), ["Failed", "Success"]);
    for c in [&web1_c, &web2_c] {
        assert_eq!(
            app_image(c),
            "bookstore:test2",
            "{c} runs the fixed release"
        );
    }
    assert_eq!(answering_ids(&url, &title, 2, 40), both, "both in rotation");

    let r = iac(&["down", "--yes", "--delete-data"]);
    assert_exit(&r, 0);
    runner.wait_no_vms();
}

/// The exit code of `iac` is `code` (its output shown when not).
fn assert_exit(r: &Run, code: i32) {
    assert_eq!(r.code, code, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// The ids of the stack's live instances.
async fn instance_ids(emu: &Emulator, name: &str) -> Vec<String> {
    stack_instances(emu, name)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// The runner for stack `name`, and the strict layer in front of the emulator with the runner
/// as its SSM agent (docs/real-boot.md): `iac` through it sees what each Run Command really did
/// in the VM, where the emulator alone says Success at once.
fn runner_as_ssm_agent(emu: &Emulator, name: &str) -> (Runner, StrictAws) {
    let runner = Runner::start(emu, name);
    let cloud = StrictAws::start(
        emu,
        serde_json::json!({ "ssm_agent": runner.state.path().join("instances.json") }),
    );
    (runner, cloud)
}

/// The runner and the strict layer for stack `name` (`runner_as_ssm_agent`), then `iac up
/// --wait` of `stack` through them: it returns once every VM the local cloud booted has reported
/// its boot ready (without --wait an endpoint override skips the wait), exit 0, the app up.
fn up_for_real(emu: &Emulator, stack: &StackFile, name: &str) -> (Runner, StrictAws) {
    let (runner, cloud) = runner_as_ssm_agent(emu, name);
    let r = iac_via(emu, &cloud, stack, &UP_WAIT);
    assert_exit(&r, 0);
    assert_app_up(&r);
    (runner, cloud)
}

/// `up` that waits for the boot reports of the VMs the local cloud boots.
const UP_WAIT: [&str; 5] = ["up", "--yes", "--wait", "--wait-timeout", "10m"];

/// `up` waited for every instance it launched to report its boot ready.
fn assert_app_up(r: &Run) {
    assert!(
        r.stdout.contains("The app is up"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// `iac ARGS STACK-FILE` through the strict layer `cloud`.
fn iac_via(emu: &Emulator, cloud: &StrictAws, stack: &StackFile, args: &[&str]) -> Run {
    let mut c = emu.iac_at(&cloud.url);
    c.args(args).arg(stack.path());
    run(c)
}

/// The spec parameter `/iac/<stack>/app` as it is now.
async fn app_spec_param(emu: &Emulator, stack: &str) -> String {
    emu.secure_value(&format!("/iac/{stack}/app")).await
}

/// The image of the container nginx sends requests to (the slot iac-app-update switched to).
fn serving_image(c: &str) -> String {
    vm_exec(
        c,
        "docker inspect --format '{{.Config.Image}}' \"app-$(cat /etc/iac/app.slot)\"",
    )
    .trim()
    .to_string()
}

/// GET /book/catalog through the VM's published port 80: answered by `instance`, with `title`.
fn assert_row_read_back(port80: &str, instance: &str, title: &str, when: &str) {
    let (code, body) = http("GET", &format!("http://{port80}/book/catalog"), None);
    assert_eq!(code, 200, "{when}: {body}");
    let catalog = json(&body);
    assert_eq!(catalog["instance_id"], instance, "{when}: {body}");
    assert!(
        catalog["books"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x["title"] == title)),
        "{when}: the row written before is not read back: {body}"
    );
}

/// The statuses of the Run Command invocations the runner ran on `instance`, in order.
fn invocation_statuses(report: &Value, instance: &str) -> Vec<String> {
    let mut inv: Vec<&Value> = report["invocations"]
        .as_object()
        .map(|m| m.values().filter(|v| v["instance"] == instance).collect())
        .unwrap_or_default();
    inv.sort_by(|a, b| {
        a["start"]
            .as_f64()
            .partial_cmp(&b["start"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    inv.iter()
        .map(|v| v["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Issue 10 for real on single-vm, one `up` reused across three changes. iac reaches the
/// emulator through the strict layer, which answers GetCommandInvocation from what the runner
/// (playing the SSM agent) really ran in the VM: a failed update is seen as failed.
/// 1. An image update is applied in place (same VM, blue/green behind nginx); the row written
///    before is read back.
/// 2. An update to an image that exits at start: `up` exits 1 naming the failing step, the
///    spec parameter is set back to the last good spec, the old container keeps serving.
/// 3. An instance-type change: a new VM boots with the same data volume (a loop device kept per
///    volume id), the row is read back from its MySQL, and the old VM is gone.
#[tokio::test(flavor = "multi_thread")]
async fn single_vm_updates_in_place_rolls_back_and_keeps_its_data_across_a_replacement() {
    let _one = ONE_AT_A_TIME.lock().await;
    require_engine();
    let emu = Emulator::start();
    let name = "rb-upd";
    let stack = StackFile::example(
        name,
        &[
            ("ghcr.io/example/bookstore:1.0.0", "bookstore:test"),
            (
                "domain:\n  name: books.example.org\n  email: ops@example.org\n  hosted_zone: example.org",
                "",
            ),
        ],
    );
    let (runner, cloud) = up_for_real(&emu, &stack, name);
    let iac = |args: &[&str]| iac_via(&emu, &cloud, &stack, args);
    let ids: Vec<String> = instance_ids(&emu, name).await;
    assert_eq!(ids.len(), 1, "one instance: {ids:?}");
    let vm = ids[0].clone();
    let report = runner.wait_booted(&ids);
    let c = report["instances"][&vm]["container"]
        .as_str()
        .expect("container")
        .to_string();
    let port80 = report["instances"][&vm]["ports"]["80"]
        .as_str()
        .expect("port 80 published")
        .to_string();
    let ec2 = emu.ec2().await;
    let volumes = data_volumes(&ec2, name).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].1.as_deref(), Some(vm.as_str()), "{volumes:?}");
    assert!(
        port80.starts_with("127.0.0.1:"),
        "published on loopback only: {port80}"
    );
    // Through nginx to the app: a row written, then read back from MySQL.
    let title = format!("kept across updates {}", std::process::id());
    let (code, body) = http(
        "POST",
        &format!("http://{port80}/book/catalog"),
        Some(&title),
    );
    assert_eq!(code, 201, "{body}");
    assert_row_read_back(&port80, &vm, &title, "after the first boot");
    assert_eq!(serving_image(&c), "bookstore:test");
    // nginx, not the app, answered on port 80 (the app listens on the VM's loopback only).
    let headers = Command::new("curl")
        .args(["-sSI", "-m", "20", &format!("http://{port80}/book/catalog")])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(headers.contains("server: nginx"), "{headers}");
    // The app's secret came from SSM through the AWS CLI, the emulator and the metadata stub's
    // role credentials, into the running slot's secrets file (one per blue/green slot).
    let app_secrets = vm_exec(
        &c,
        "cat /etc/iac/app.secrets.app-\"$(cat /etc/iac/app.slot)\"",
    );
    assert!(app_secrets.contains("SECRET_KEY="), "{app_secrets}");
    // The database passwords (the app's from SSM, MySQL's own from the data volume) are in no
    // process listing and no `docker inspect` of the app and the database, while the app
    // answered from the database above.
    let db_pw = emu.secure_value(&format!("/iac/{name}/db-password")).await;
    let root_pw = vm_exec(&c, "cat /var/lib/iac-data/.iac/mysql-root-password");
    for pw in [db_pw.as_str(), root_pw.trim()] {
        assert_secret_hidden_in_vm(&c, pw, 2);
    }
    assert_imds_local(&c);

    // 1. An image update, in place.
    stack.rewrite(&[("image: bookstore:test", "image: bookstore:test2")]);
    let r = iac(&["up", "--yes"]);
    assert_exit(&r, 0);
    let now: Vec<String> = instance_ids(&emu, name).await;
    assert_eq!(now, ids, "the same VM");
    let good_spec = app_spec_param(&emu, name).await;
    assert!(good_spec.contains("IMAGE=bookstore:test2\n"), "{good_spec}");
    assert_eq!(serving_image(&c), "bookstore:test2", "nginx switched");
    assert_eq!(
        invocation_statuses(&runner.report(), &vm),
        ["Success"],
        "the update ran in the VM"
    );
    assert_row_read_back(&port80, &vm, &title, "after the image update");

    // 2. An image whose container exits at start: rolled back, the old one keeps serving.
    stack.rewrite(&[("image: bookstore:test2", "image: bookstore:crash")]);
    let r = iac(&["up", "--yes"]);
    assert_exit(&r, 1);
    assert!(
        format!("{}{}", r.stdout, r.stderr)
            .contains("FAILED in step health: app-blue exited and was restarted"),
        "the failing step is named:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        app_spec_param(&emu, name).await,
        good_spec,
        "the spec parameter is back to the last good spec"
    );
    assert_eq!(
        invocation_statuses(&runner.report(), &vm),
        ["Success", "Failed"]
    );
    assert_eq!(
        serving_image(&c),
        "bookstore:test2",
        "the old container serves"
    );
    assert_row_read_back(&port80, &vm, &title, "after the failed update");

    // 3. A new instance type replaces the VM; the data volume moves to the new one.
    stack.rewrite(&[
        ("image: bookstore:crash", "image: bookstore:test2"),
        ("type: t3.small", "type: t3.medium"),
    ]);
    let r = iac(&UP_WAIT);
    assert_exit(&r, 0);
    assert_app_up(&r);
    let now: Vec<String> = instance_ids(&emu, name).await;
    assert_eq!(now.len(), 1, "{now:?}");
    let new_vm = now[0].clone();
    assert_ne!(new_vm, vm, "a new VM");
    assert_eq!(
        data_volumes(&ec2, name).await,
        vec![(volumes[0].0.clone(), Some(new_vm.clone()))],
        "the same data volume, attached to the new VM"
    );
    let report = runner.wait_booted(&now);
    assert_eq!(
        vm_containers(name),
        [format!("iac-vm-{new_vm}")],
        "the old VM is gone"
    );
    let new_c = report["instances"][&new_vm]["container"]
        .as_str()
        .expect("container");
    let port80 = report["instances"][&new_vm]["ports"]["80"]
        .as_str()
        .expect("port 80 published");
    let log = vm_exec(new_c, "cat /var/log/cloud-init-output.log");
    assert!(
        !log.contains("formatting the blank data volume"),
        "the new VM formatted the data volume:\n{log}"
    );
    assert_row_read_back(port80, &new_vm, &title, "on the new VM");
    assert_eq!(serving_image(new_c), "bookstore:test2");

    let r = iac(&["down", "--yes", "--delete-data"]);
    assert_exit(&r, 0);
    runner.wait_no_vms();
}
