//! The `ec2` fleet against the emulator: instances come from the stack's launch template with the
//! stack's tags, a monitor started beside running instances adopts them (launching nothing),
//! agents started on this machine with the emulator's instance ids register over loopback gRPC,
//! and a scale-in terminates exactly the instance the policy chose.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceType, RequestLaunchTemplateData};
use iac::scaler::ec2::{launch_template_name, Ec2Fleet};
use iac::scaler::fleet::Fleet;
use iac::scaler::monitor::{serve, Shared};
use iac::scaler::policy::{Health, Mode, PolicyConfig};

const STACK: &str = "scl";
const TOKEN: &str = "ec2-fleet-test-token-0123";

/// Agent processes killed when the test ends, however it ends.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn policy() -> PolicyConfig {
    PolicyConfig {
        min: 2,
        max: 3,
        mode: Mode::Thresholds {
            high: 90.0,
            low: 20.0,
            out_samples: 1,
            in_samples: 2,
            step_out: 1,
            step_in: 1,
        },
        cooldown_out: Duration::ZERO,
        cooldown_in: Duration::from_secs(60),
        warmup: Duration::ZERO,
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(1000),
        boot_deadline: Duration::from_secs(30),
    }
}

async fn instance_states(
    ec2: &aws_sdk_ec2::Client,
) -> BTreeMap<String, (String, BTreeMap<String, String>, String, String)> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:iac:stack")
                .values(STACK)
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let tags = i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            (
                i.instance_id().unwrap_or_default().to_string(),
                (
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    tags,
                    i.image_id().unwrap_or_default().to_string(),
                    i.instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect()
}

async fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_fleet_launches_from_the_template_is_adopted_and_scales_in_the_chosen_instance() {
    let emu = common::Emulator::start();
    let ec2 = emu.ec2().await;
    let image = ec2
        .describe_images()
        .send()
        .await
        .expect("describe images")
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_string))
        .expect("the emulator has images");
    ec2.create_launch_template()
        .launch_template_name(launch_template_name(STACK))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .instance_type(InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("create the launch template");

    let aws = emu.aws().await;
    let extra = BTreeMap::from([("team".to_string(), "web".to_string())]);
    let fleet = Arc::new(Ec2Fleet::new(aws.clone(), STACK, vec![], &extra));

    // Three instances already run (a previous monitor launched them).
    let ids = fleet.launch(3).await.expect("launch");
    assert_eq!(ids.len(), 3);
    let states = instance_states(&ec2).await;
    for id in &ids {
        let (state, tags, img, itype) = &states[id];
        assert_eq!(state, "running");
        assert_eq!(img, &image, "launched from the template's image");
        assert_eq!(itype, "t3.micro", "launched with the template's type");
        for (k, v) in [
            ("iac:stack", STACK),
            ("iac:role", "agent"),
            ("iac:scaler", "pool"),
            ("managed-by", "iac"),
            ("team", "web"),
        ] {
            assert_eq!(tags.get(k).map(String::as_str), Some(v), "{id}: {tags:?}");
        }
        assert!(
            !tags.contains_key("iac:id"),
            "pool instances are not `up`'s"
        );
    }
    let mut listed = fleet.list().await.expect("list");
    let mut sorted = ids.clone();
    sorted.sort();
    listed.sort();
    assert_eq!(listed, sorted);
    // Terminate refuses what is not the pool's (an instance of another stack).
    let foreign = ec2
        .run_instances()
        .image_id(&image)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("foreign instance")
        .instances()[0]
        .instance_id()
        .expect("id")
        .to_string();
    fleet
        .terminate(std::slice::from_ref(&foreign))
        .await
        .expect("terminate");
    let foreign_state = ec2
        .describe_instances()
        .instance_ids(&foreign)
        .send()
        .await
        .expect("describe foreign");
    assert_eq!(
        foreign_state.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str()),
        Some("running")
    );

    // Registrations are admitted only for the pool's running instances: not another stack's,
    // not a made-up id (asked of the emulator by tag and id).
    assert!(fleet.owns(&ids[0]).await.expect("owns"));
    assert!(!fleet.owns(&foreign).await.expect("owns"));
    assert!(!fleet.owns("i-0123456789abcdef0").await.expect("owns"));
    assert!(!fleet.owns("not an id").await.expect("owns"));

    // The monitor starts beside them and adopts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shared = Shared::new(policy(), TOKEN);
    let (s, f) = (shared.clone(), fleet.clone() as Arc<dyn Fleet>);
    let monitor = tokio::spawn(async move {
        serve(s, f, listener, None, std::future::pending())
            .await
            .expect("monitor")
    });

    // Agents on this machine stand in for the instances: same ids. The third is the least loaded.
    let mut agents = Agents(Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let load = if i == 2 { "steady:3" } else { "steady:12" };
        agents.0.push(
            Command::new(common::agent_bin())
                .args(["--monitor", &url, "--instance-id", id, "--simulate", load])
                // The agents and the monitor share this machine: loopback, plaintext.
                .arg("--allow-plaintext")
                .env("IAC_AGENT_TOKEN", TOKEN)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start an agent"),
        );
    }
    wait_for("three registered agents", Duration::from_secs(15), || {
        shared
            .members()
            .iter()
            .filter(|m| m.health == Health::Healthy)
            .count()
            == 3
    })
    .await;

    // Average load under 20 %: one scale-in (min is 2), and the victim is the least loaded.
    let victim = ids[2].clone();
    let start = Instant::now();
    loop {
        let states = instance_states(&ec2).await;
        if states[&victim].0 == "terminated" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no scale-in: {:?}",
            shared.timeline()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Cooldown and min hold it at two: the others keep running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let states = instance_states(&ec2).await;
    for id in &ids[..2] {
        assert_eq!(states[id].0, "running", "{id} must survive");
    }
    let stats = shared.stats();
    assert_eq!(stats.launches, 0, "adopted instances were launched again");
    assert_eq!(stats.terminations, 1);
    assert_eq!(fleet.list().await.expect("list").len(), 2);
    monitor.abort();
}
