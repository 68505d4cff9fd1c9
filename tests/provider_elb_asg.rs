//! The ELBv2 and Auto Scaling providers against the emulator: target groups, load balancers,
//! listeners (forward, HTTPS, redirect), discovery by tag, groups launched from a launch
//! template and registered in the target group, in-place updates, CPU target-tracking policies
//! and deletion. Instance refreshes, which the emulator does not implement, are checked against a
//! small local stub of the Auto Scaling API.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{
    InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use iac::aws::{autoscaling, ec2, elbv2, tags, Aws, ErrorClass};
use iac::plan::{
    AutoScalingGroupSpec, Details, Kind, ListenerAction, ListenerSpec, LoadBalancerSpec, Observed,
    ResourceId, ScalingPolicySpec, TargetGroupSpec,
};

const STACK: &str = "elbtest";
const CERT: &str =
    "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000";

async fn connect(url: &str) -> Aws {
    common::aws_at(url).await
}

fn ident(id: &str, kind: Kind) -> BTreeMap<String, String> {
    let extra = BTreeMap::from([("team".to_string(), "web".to_string())]);
    tags::identity(STACK, &ResourceId::new(id), kind, &extra)
}

fn find<'a>(obs: &'a [Observed], id: &str) -> &'a Observed {
    obs.iter()
        .find(|o| o.id.as_str() == id)
        .unwrap_or_else(|| panic!("`{id}` not discovered in {obs:#?}"))
}

fn tg_spec(vpc: &str) -> TargetGroupSpec {
    TargetGroupSpec {
        name: "elbtest-web".into(),
        port: 8080,
        vpc_id: vpc.into(),
        health_path: "/healthz".into(),
        healthy_threshold: 3,
        unhealthy_threshold: 4,
        interval_s: 15,
        timeout_s: 6,
        matcher: "200-399".into(),
        deregistration_delay_s: 45,
    }
}

fn listener(port: u16, action: ListenerAction, cert: Option<&str>) -> ListenerSpec {
    ListenerSpec {
        load_balancer: ResourceId::new("lb"),
        port,
        action,
        certificate_arn: cert.map(str::to_string),
    }
}

async fn deregistration_delay(aws: &Aws, arn: &str) -> Option<String> {
    aws.elbv2
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .expect("describe target group attributes")
        .attributes()
        .iter()
        .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|a| a.value())
        .map(str::to_string)
}

async fn describe_listener(
    aws: &Aws,
    arn: &str,
) -> aws_sdk_elasticloadbalancingv2::types::Listener {
    aws.elbv2
        .describe_listeners()
        .listener_arns(arn)
        .send()
        .await
        .expect("describe listeners")
        .listeners()
        .first()
        .cloned()
        .expect("the listener")
}

async fn describe_group(aws: &Aws, name: &str) -> aws_sdk_autoscaling::types::AutoScalingGroup {
    aws.autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe auto scaling groups")
        .auto_scaling_groups()
        .first()
        .cloned()
        .expect("the group")
}

async fn policies(aws: &Aws, group: &str) -> Vec<aws_sdk_autoscaling::types::ScalingPolicy> {
    aws.autoscaling
        .describe_policies()
        .auto_scaling_group_name(group)
        .send()
        .await
        .expect("describe policies")
        .scaling_policies()
        .to_vec()
}

/// Instance id → (state, tags).
async fn instances(
    aws: &Aws,
    ids: &[String],
) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    let out = aws
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                (
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    i.tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                ),
            )
        })
        .collect()
}

/// A security group and a launch template made directly with the SDK (the launch template
/// provider is not under test here). Returns (security group id, a second security group id,
/// launch template id).
async fn prerequisites(aws: &Aws, vpc: &str) -> (String, String, String) {
    let sg = aws
        .ec2
        .create_security_group()
        .group_name("elbtest-lb")
        .description("load balancer")
        .vpc_id(vpc)
        .send()
        .await
        .expect("create security group")
        .group_id()
        .expect("group id")
        .to_string();
    let sg2 = aws
        .ec2
        .create_security_group()
        .group_name("elbtest-lb-2")
        .description("load balancer, second")
        .vpc_id(vpc)
        .send()
        .await
        .expect("create security group")
        .group_id()
        .expect("group id")
        .to_string();
    let image = aws
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("describe images")
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_string))
        .expect("an image");
    let lt = aws
        .ec2
        .create_launch_template()
        .launch_template_name("elbtest-web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .instance_type(InstanceType::T3Micro)
                .security_group_ids(&sg)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key(tags::STACK).value(STACK).build())
                .build(),
        )
        .send()
        .await
        .expect("create launch template")
        .launch_template()
        .and_then(|l| l.launch_template_id())
        .expect("launch template id")
        .to_string();
    (sg, sg2, lt)
}

/// A certificate requested from the emulator's ACM (through boto3 in the emulator's own
/// virtualenv, as the seed script does: there is no ACM client among the crate's dependencies).
fn acm_certificate(emu: &common::Emulator) -> String {
    let python = common::moto_server().with_file_name("python");
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import sys, boto3\n\
             acm = boto3.client('acm', endpoint_url=sys.argv[1])\n\
             print(acm.request_certificate(DomainName='app.example.org')['CertificateArn'])",
        )
        .arg(&emu.url)
        .envs(common::dummy_env())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "request certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(arn.starts_with("arn:aws:acm:us-east-1:"), "{arn}");
    arn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_and_auto_scaling_against_the_emulator() {
    let emu = common::Emulator::start();
    let aws = connect(&emu.url).await;

    let vpc = ec2::default_vpc(&aws).await.expect("default vpc");
    let all_subnets = ec2::subnets(&aws, &vpc).await.expect("subnets");
    let mut subnets: Vec<(String, String)> = Vec::new();
    for (id, az) in all_subnets {
        if !subnets.iter().any(|(_, a)| *a == az) {
            subnets.push((id, az));
        }
    }
    assert!(subnets.len() >= 2, "two AZs in the default VPC");
    let subnet_ids: Vec<String> = subnets[..2].iter().map(|(s, _)| s.clone()).collect();
    let (sg, sg2, lt) = prerequisites(&aws, &vpc).await;

    // ── Target group ──────────────────────────────────────────────────────────────────────────
    let tg_spec = tg_spec(&vpc);
    let tg = elbv2::create_target_group(&aws, &tg_spec, &ident("web-tg", Kind::TargetGroup))
        .await
        .expect("create target group");
    let described = aws
        .elbv2
        .describe_target_groups()
        .target_group_arns(&tg)
        .send()
        .await
        .expect("describe target groups");
    let t = &described.target_groups()[0];
    assert_eq!(t.target_group_name(), Some("elbtest-web"));
    assert_eq!(t.protocol().map(|p| p.as_str()), Some("HTTP"));
    assert_eq!(t.port(), Some(8080));
    assert_eq!(t.vpc_id(), Some(vpc.as_str()));
    assert_eq!(t.target_type().map(|p| p.as_str()), Some("instance"));
    assert_eq!(t.health_check_path(), Some("/healthz"));
    assert_eq!(t.healthy_threshold_count(), Some(3));
    assert_eq!(t.unhealthy_threshold_count(), Some(4));
    assert_eq!(t.health_check_interval_seconds(), Some(15));
    assert_eq!(t.health_check_timeout_seconds(), Some(6));
    assert_eq!(t.matcher().and_then(|m| m.http_code()), Some("200-399"));
    assert_eq!(deregistration_delay(&aws, &tg).await.as_deref(), Some("45"));

    let mut tg_spec2 = tg_spec.clone();
    tg_spec2.health_path = "/up".into();
    tg_spec2.healthy_threshold = 2;
    tg_spec2.matcher = "200".into();
    tg_spec2.deregistration_delay_s = 30;
    elbv2::update_target_group(&aws, &tg, &tg_spec2)
        .await
        .expect("update target group");
    let described = aws
        .elbv2
        .describe_target_groups()
        .target_group_arns(&tg)
        .send()
        .await
        .expect("describe target groups");
    let t = &described.target_groups()[0];
    assert_eq!(t.health_check_path(), Some("/up"));
    assert_eq!(t.healthy_threshold_count(), Some(2));
    assert_eq!(t.matcher().and_then(|m| m.http_code()), Some("200"));
    assert_eq!(deregistration_delay(&aws, &tg).await.as_deref(), Some("30"));

    // Another stack's target group, which discovery must leave alone.
    let mut other_spec = tg_spec.clone();
    other_spec.name = "otherstack-web".into();
    let other_tags = tags::identity(
        "otherstack",
        &ResourceId::new("web-tg"),
        Kind::TargetGroup,
        &BTreeMap::new(),
    );
    let other_tg = elbv2::create_target_group(&aws, &other_spec, &other_tags)
        .await
        .expect("create the other stack's target group");

    // ── Load balancer ─────────────────────────────────────────────────────────────────────────
    let lb_spec = LoadBalancerSpec {
        name: "elbtest-lb".into(),
        subnet_ids: subnet_ids.clone(),
        security_groups: vec![ResourceId::new("lb-sg")],
    };
    let (lb, dns) = elbv2::create_load_balancer(
        &aws,
        &lb_spec,
        vec![sg.clone()],
        &ident("lb", Kind::LoadBalancer),
    )
    .await
    .expect("create load balancer");
    assert!(!dns.is_empty());
    let described = aws
        .elbv2
        .describe_load_balancers()
        .load_balancer_arns(&lb)
        .send()
        .await
        .expect("describe load balancers");
    let l = &described.load_balancers()[0];
    assert_eq!(l.scheme().map(|s| s.as_str()), Some("internet-facing"));
    assert_eq!(l.r#type().map(|s| s.as_str()), Some("application"));
    assert_eq!(l.ip_address_type().map(|s| s.as_str()), Some("ipv4"));
    let mut lb_subnets: Vec<String> = l
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id().map(str::to_string))
        .collect();
    lb_subnets.sort();
    let mut want_subnets = subnet_ids.clone();
    want_subnets.sort();
    assert_eq!(lb_subnets, want_subnets);
    let mut lb_azs: Vec<String> = l
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name().map(str::to_string))
        .collect();
    lb_azs.dedup();
    assert_eq!(lb_azs.len(), 2, "two availability zones");
    assert_eq!(l.security_groups(), std::slice::from_ref(&sg));
    let state = elbv2::load_balancer_state(&aws, &lb)
        .await
        .expect("load balancer state");
    assert!(
        matches!(state.as_deref(), Some("provisioning" | "active")),
        "{state:?}"
    );

    elbv2::set_load_balancer_security_groups(&aws, &lb, vec![sg2.clone()])
        .await
        .expect("set security groups");
    let described = aws
        .elbv2
        .describe_load_balancers()
        .load_balancer_arns(&lb)
        .send()
        .await
        .expect("describe load balancers");
    assert_eq!(
        described.load_balancers()[0].security_groups(),
        std::slice::from_ref(&sg2)
    );

    // ── Listeners ─────────────────────────────────────────────────────────────────────────────
    let forward = ListenerAction::Forward(ResourceId::new("web-tg"));
    let http_spec = listener(80, forward.clone(), None);
    let err = elbv2::create_listener(
        &aws,
        &lb,
        &http_spec,
        None,
        &ident("http-listener", Kind::Listener),
    )
    .await
    .expect_err("a forward listener needs its target group's ARN");
    assert!(err.is(ErrorClass::InvalidInput), "{err}");

    let http = elbv2::create_listener(
        &aws,
        &lb,
        &http_spec,
        Some(&tg),
        &ident("http-listener", Kind::Listener),
    )
    .await
    .expect("create HTTP listener");
    let d = describe_listener(&aws, &http).await;
    assert_eq!(d.protocol().map(|p| p.as_str()), Some("HTTP"));
    assert_eq!(d.port(), Some(80));
    let a = &d.default_actions()[0];
    assert_eq!(a.r#type().map(|t| t.as_str()), Some("forward"));
    assert_eq!(a.target_group_arn(), Some(tg.as_str()));

    // The emulator checks that the certificate exists in ACM (as AWS does): the made-up ARN
    // is refused, one requested from its ACM is accepted.
    let https_spec = listener(443, forward.clone(), Some(CERT));
    let err = elbv2::create_listener(
        &aws,
        &lb,
        &https_spec,
        Some(&tg),
        &ident("https-listener", Kind::Listener),
    )
    .await
    .expect_err("an unknown certificate");
    assert_eq!(err.code.as_deref(), Some("CertificateNotFound"), "{err}");
    let cert = acm_certificate(&emu);
    let https_spec = listener(443, forward.clone(), Some(&cert));
    let https = elbv2::create_listener(
        &aws,
        &lb,
        &https_spec,
        Some(&tg),
        &ident("https-listener", Kind::Listener),
    )
    .await
    .expect("create HTTPS listener");
    let d = describe_listener(&aws, &https).await;
    assert_eq!(d.protocol().map(|p| p.as_str()), Some("HTTPS"));
    assert_eq!(d.port(), Some(443));
    assert_eq!(d.ssl_policy(), Some(elbv2::SSL_POLICY));
    assert_eq!(
        d.certificates().first().and_then(|c| c.certificate_arn()),
        Some(cert.as_str())
    );
    assert_eq!(d.default_actions()[0].target_group_arn(), Some(tg.as_str()));

    let redirect_spec = listener(80, ListenerAction::RedirectHttps, None);
    elbv2::modify_listener(&aws, &http, &redirect_spec, None)
        .await
        .expect("modify HTTP listener to redirect");
    let d = describe_listener(&aws, &http).await;
    assert_eq!(d.protocol().map(|p| p.as_str()), Some("HTTP"));
    let a = &d.default_actions()[0];
    assert_eq!(a.r#type().map(|t| t.as_str()), Some("redirect"));
    let r = a.redirect_config().expect("redirect config");
    assert_eq!(r.protocol(), Some("HTTPS"));
    assert_eq!(r.port(), Some("443"));
    assert_eq!(r.status_code().map(|s| s.as_str()), Some("HTTP_301"));

    // A listener without tags falls back to `listener-<port>`.
    let untagged = aws
        .elbv2
        .create_listener()
        .load_balancer_arn(&lb)
        .port(8081)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .default_actions(
            aws_sdk_elasticloadbalancingv2::types::Action::builder()
                .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
                .target_group_arn(&tg)
                .build(),
        )
        .send()
        .await
        .expect("create untagged listener")
        .listeners()[0]
        .listener_arn()
        .expect("arn")
        .to_string();

    // ── Discovery ─────────────────────────────────────────────────────────────────────────────
    let found = elbv2::discover(&aws, STACK).await.expect("discover");
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found.iter().all(|o| o.physical_id != other_tg));
    let o = find(&found, "web-tg");
    assert_eq!(o.kind, Kind::TargetGroup);
    assert_eq!(o.physical_id, tg);
    assert_eq!(o.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        o.details,
        Details::TargetGroup {
            port: 8080,
            health_path: "/up".into(),
            healthy_threshold: 2,
            unhealthy_threshold: 4,
            interval_s: 15,
            timeout_s: 6,
            matcher: "200".into(),
            deregistration_delay_s: Some(30),
        }
    );
    let o = find(&found, "lb");
    assert_eq!(o.kind, Kind::LoadBalancer);
    assert_eq!(o.physical_id, lb);
    assert!(matches!(o.state.as_str(), "provisioning" | "active"));
    match &o.details {
        Details::LoadBalancer {
            dns_name,
            scheme,
            subnet_ids: s,
            security_group_ids,
        } => {
            assert_eq!(dns_name, &dns);
            assert_eq!(scheme, "internet-facing");
            let mut s = s.clone();
            s.sort();
            assert_eq!(s, want_subnets);
            assert_eq!(security_group_ids, &vec![sg2.clone()]);
        }
        d => panic!("{d:?}"),
    }
    let o = find(&found, "http-listener");
    assert_eq!(o.kind, Kind::Listener);
    assert_eq!(o.physical_id, http);
    assert_eq!(o.tags.get(tags::STACK).map(String::as_str), Some(STACK));
    assert_eq!(
        o.details,
        Details::Listener {
            load_balancer_arn: lb.clone(),
            port: 80,
            action: "redirect:https".into(),
            certificate_arn: None,
        }
    );
    assert_eq!(elbv2::action_key(None), "redirect:https");
    let o = find(&found, "https-listener");
    assert_eq!(
        o.details,
        Details::Listener {
            load_balancer_arn: lb.clone(),
            port: 443,
            action: elbv2::action_key(Some(&tg)),
            certificate_arn: Some(cert.clone()),
        }
    );
    assert_eq!(elbv2::action_key(Some(&tg)), format!("forward:{tg}"));
    let o = find(&found, "listener-8081");
    assert_eq!(o.physical_id, untagged);
    elbv2::delete_listener(&aws, &untagged)
        .await
        .expect("delete untagged listener");

    // ── Auto Scaling group ────────────────────────────────────────────────────────────────────
    let mut asg = AutoScalingGroupSpec {
        name: "elbtest-web".into(),
        launch_template: ResourceId::new("web-lt"),
        min: 2,
        max: 6,
        desired: 2,
        subnet_ids: subnet_ids.clone(),
        target_groups: vec![ResourceId::new("web-tg")],
        health_check_grace_s: 120,
        scale_in_protection: false,
        min_healthy_percent: 90,
        warmup_s: 60,
        role: "web".into(),
    };
    let mut asg_tags = ident("web-asg", Kind::AutoScalingGroup);
    // What `up` last applied, read back as the group's `applied_desired`.
    asg_tags.insert(tags::DESIRED.to_string(), "3".to_string());
    autoscaling::create_group(&aws, &asg, &lt, "1", vec![tg.clone()], &asg_tags)
        .await
        .expect("create group");
    assert!(autoscaling::group_exists(&aws, &asg.name)
        .await
        .expect("group exists"));
    assert!(!autoscaling::group_exists(&aws, "no-such-group")
        .await
        .expect("group exists"));
    let g = describe_group(&aws, &asg.name).await;
    assert_eq!(g.min_size(), Some(2));
    assert_eq!(g.max_size(), Some(6));
    assert_eq!(g.desired_capacity(), Some(2));
    let spec_lt = g.launch_template().expect("launch template");
    assert_eq!(spec_lt.launch_template_id(), Some(lt.as_str()));
    assert_eq!(spec_lt.version(), Some("1"));
    assert_eq!(g.target_group_arns(), std::slice::from_ref(&tg));
    assert_eq!(g.health_check_type(), Some("ELB"));
    assert_eq!(g.health_check_grace_period(), Some(120));
    assert_eq!(g.new_instances_protected_from_scale_in(), Some(false));
    let mut zone_ids: Vec<String> = g
        .vpc_zone_identifier()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    zone_ids.sort();
    assert_eq!(zone_ids, want_subnets);
    for t in g.tags() {
        let key = t.key().unwrap_or_default();
        let propagates = t.propagate_at_launch().unwrap_or(false);
        assert_eq!(
            propagates,
            // Its instances are not the group: no logical id, kind or applied capacity.
            key != tags::ID && key != tags::KIND && key != tags::DESIRED,
            "PropagateAtLaunch of {key}"
        );
    }
    assert_eq!(g.tags().len(), asg_tags.len());
    let first_instances: Vec<String> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert_eq!(first_instances.len(), 2);

    // The emulator launches the instances and registers them in the target group.
    let health = elbv2::target_health(&aws, &tg)
        .await
        .expect("target health");
    assert_eq!(health.len(), 2, "{health:?}");
    let mut targets: Vec<String> = health.iter().map(|(id, _, _)| id.clone()).collect();
    targets.sort();
    let mut want_targets = first_instances.clone();
    want_targets.sort();
    assert_eq!(targets, want_targets);
    assert!(health.iter().all(|(_, state, _)| !state.is_empty()));

    // Instances carry the stack and user tags but not the identity of a stack resource.
    let inst = instances(&aws, &first_instances).await;
    assert_eq!(inst.len(), 2);
    for (id, (state, t)) in &inst {
        assert_eq!(state, "running", "{id}");
        assert_eq!(t.get(tags::STACK).map(String::as_str), Some(STACK), "{id}");
        assert_eq!(t.get(tags::MANAGED_BY).map(String::as_str), Some("iac"));
        assert_eq!(t.get("team").map(String::as_str), Some("web"));
        assert!(!t.contains_key(tags::ID), "{id} has iac:id: {t:?}");
        assert!(!t.contains_key(tags::KIND), "{id} has iac:kind: {t:?}");
    }
    let scan = iac::aws::provider::discover_kinds(&aws, STACK, &[Kind::Instance].into())
        .await
        .expect("discover instances");
    assert!(
        scan.resources.is_empty(),
        "group instances are not stack resources: {:?}",
        scan.resources
    );

    // ── In-place update ───────────────────────────────────────────────────────────────────────
    let v2 = aws
        .ec2
        .create_launch_template_version()
        .launch_template_id(&lt)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .instance_type(InstanceType::T3Small)
                .build(),
        )
        .send()
        .await
        .expect("create launch template version")
        .launch_template_version()
        .and_then(|v| v.version_number())
        .expect("version number");
    assert_eq!(v2, 2);
    asg.min = 3;
    asg.max = 8;
    asg.desired = 3;
    asg.health_check_grace_s = 200;
    autoscaling::update_group(&aws, &asg, &lt, "2", Some(asg.desired))
        .await
        .expect("update group");
    let g = describe_group(&aws, &asg.name).await;
    assert_eq!(g.min_size(), Some(3));
    assert_eq!(g.max_size(), Some(8));
    assert_eq!(g.desired_capacity(), Some(3));
    assert_eq!(
        g.launch_template().and_then(|l| l.version()),
        Some("2"),
        "{:?}",
        g.launch_template()
    );
    assert_eq!(g.health_check_grace_period(), Some(200));
    assert_eq!(g.instances().len(), 3);
    assert_eq!(
        elbv2::target_health(&aws, &tg)
            .await
            .expect("target health")
            .len(),
        3
    );
    // Scale-in protection for new instances, then back (the emulator does not terminate
    // protected instances when the group is deleted, unlike ForceDelete on AWS).
    asg.scale_in_protection = true;
    // Without a desired capacity the group keeps the one it has (the policy's).
    autoscaling::update_group(&aws, &asg, &lt, "2", None)
        .await
        .expect("update group");
    let g = describe_group(&aws, &asg.name).await;
    assert_eq!(g.new_instances_protected_from_scale_in(), Some(true));
    asg.scale_in_protection = false;
    // Without a desired capacity the group keeps the one it has (the policy's).
    autoscaling::update_group(&aws, &asg, &lt, "2", None)
        .await
        .expect("update group");
    let g = describe_group(&aws, &asg.name).await;
    assert_eq!(g.new_instances_protected_from_scale_in(), Some(false));
    let group_instances: Vec<String> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();

    let err = autoscaling::update_group(
        &aws,
        &AutoScalingGroupSpec {
            name: "no-such-group".into(),
            ..asg.clone()
        },
        &lt,
        "2",
        None,
    )
    .await
    .expect_err("updating a missing group");
    assert!(err.is(ErrorClass::NotFound), "{err}");

    // ── CPU policy ────────────────────────────────────────────────────────────────────────────
    let mut policy = ScalingPolicySpec {
        name: autoscaling::cpu_policy_name(&asg.name),
        group: ResourceId::new("web-asg"),
        cpu_target: 50.0,
        warmup_s: 90,
    };
    let arn = autoscaling::put_cpu_policy(&aws, &policy, &asg.name)
        .await
        .expect("put policy");
    assert!(!arn.is_empty());
    let ps = policies(&aws, &asg.name).await;
    assert_eq!(ps.len(), 1, "{ps:?}");
    let p = &ps[0];
    assert_eq!(p.policy_name(), Some("elbtest-web-cpu"));
    assert_eq!(p.policy_type(), Some("TargetTrackingScaling"));
    assert_eq!(p.estimated_instance_warmup(), Some(90));
    let c = p.target_tracking_configuration().expect("target tracking");
    assert_eq!(c.target_value(), Some(50.0));
    assert_eq!(
        c.predefined_metric_specification()
            .and_then(|m| m.predefined_metric_type())
            .map(|t| t.as_str()),
        Some("ASGAverageCPUUtilization")
    );

    policy.cpu_target = 65.5;
    policy.warmup_s = 120;
    let arn2 = autoscaling::put_cpu_policy(&aws, &policy, &asg.name)
        .await
        .expect("put policy again");
    let ps = policies(&aws, &asg.name).await;
    assert_eq!(ps.len(), 1, "still one policy: {ps:?}");
    assert_eq!(ps[0].policy_arn(), Some(arn2.as_str()));
    assert_eq!(
        ps[0]
            .target_tracking_configuration()
            .and_then(|c| c.target_value()),
        Some(65.5)
    );
    assert_eq!(ps[0].estimated_instance_warmup(), Some(120));

    // ── Discovery of groups and policies ──────────────────────────────────────────────────────
    let found = autoscaling::discover(&aws, STACK).await.expect("discover");
    assert_eq!(found.len(), 2, "{found:#?}");
    let o = find(&found, "web-asg");
    assert_eq!(o.kind, Kind::AutoScalingGroup);
    assert_eq!(o.physical_id, asg.name);
    assert_eq!(o.state, "active");
    assert_eq!(o.tags, asg_tags);
    assert_eq!(
        o.details,
        Details::AutoScalingGroup {
            min: 3,
            max: 8,
            desired: 3,
            applied_desired: Some(3),
            launch_template_version: "2".into(),
            target_group_arns: vec![tg.clone()],
            health_check_type: "ELB".into(),
            health_check_grace_s: 200,
            scale_in_protection: false,
            instances: 3,
            in_service: {
                let mut ids = group_instances.clone();
                ids.sort();
                ids
            },
        }
    );
    let o = find(&found, autoscaling::CPU_POLICY_ID);
    assert_eq!(o.kind, Kind::ScalingPolicy);
    assert_eq!(o.physical_id, arn2);
    assert_eq!(o.tags.get(tags::STACK).map(String::as_str), Some(STACK));
    assert_eq!(
        o.details,
        Details::ScalingPolicy {
            group: asg.name.clone(),
            cpu_target: Some("65.5".into()),
            warmup_s: Some(120),
        }
    );
    assert!(autoscaling::discover(&aws, "otherstack")
        .await
        .expect("discover")
        .is_empty());

    // moto 5.2.5 answers DescribeScalingActivities with no activity at all: the call and the
    // parsing of its answer work (status reads them from real AWS).
    let acts = autoscaling::activities(&aws, &asg.name, 2)
        .await
        .expect("activities");
    assert_eq!(acts, Vec::<(String, String)>::new());

    // ── Deletion ──────────────────────────────────────────────────────────────────────────────
    autoscaling::delete_policy(&aws, &asg.name, &policy.name)
        .await
        .expect("delete policy");
    assert!(policies(&aws, &asg.name).await.is_empty());
    autoscaling::delete_group(&aws, &asg.name)
        .await
        .expect("delete group");
    assert!(!autoscaling::group_exists(&aws, &asg.name)
        .await
        .expect("group exists"));
    let err = autoscaling::delete_group(&aws, &asg.name)
        .await
        .expect_err("deleting a missing group");
    assert!(err.is(ErrorClass::NotFound), "{err}");
    let inst = instances(&aws, &group_instances).await;
    for (id, (state, _)) in &inst {
        assert!(
            matches!(state.as_str(), "terminated" | "shutting-down"),
            "{id} is {state}"
        );
    }
    // (The emulator leaves terminated instances registered, `healthy`, in the target group, so
    // target health is not checked here: AWS deregisters them.)

    elbv2::delete_listener(&aws, &http)
        .await
        .expect("delete listener");
    elbv2::delete_listener(&aws, &https)
        .await
        .expect("delete listener");
    let err = elbv2::delete_listener(&aws, &https)
        .await
        .expect_err("deleting a missing listener");
    assert!(err.is(ErrorClass::NotFound), "{err}");
    elbv2::delete_load_balancer(&aws, &lb)
        .await
        .expect("delete load balancer");
    assert_eq!(
        elbv2::load_balancer_state(&aws, &lb)
            .await
            .expect("load balancer state"),
        None
    );
    elbv2::delete_target_group(&aws, &tg)
        .await
        .expect("delete target group");
    let err = elbv2::delete_target_group(&aws, &tg)
        .await
        .expect_err("deleting a missing target group");
    assert!(err.is(ErrorClass::NotFound), "{err}");

    assert!(elbv2::discover(&aws, STACK)
        .await
        .expect("discover")
        .is_empty());
    assert!(autoscaling::discover(&aws, STACK)
        .await
        .expect("discover")
        .is_empty());
    // The other stack's target group is untouched.
    assert_eq!(
        elbv2::discover(&aws, "otherstack")
            .await
            .expect("discover")
            .len(),
        1
    );
}

// ── Instance refresh, against a stub ──────────────────────────────────────────────────────────

/// What the stub was asked: one decoded form per request.
type Requests = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// A minimal Auto Scaling endpoint for the instance refresh calls moto 5.2.5 does not implement
/// (StartInstanceRefresh, CancelInstanceRefresh, DescribeInstanceRefreshes). A started refresh
/// stays in progress until cancelled, and the first start after a cancel is still refused, as
/// on AWS while the cancelled refresh winds down.
struct RefreshStub {
    url: String,
    requests: Requests,
}

#[derive(Default)]
struct StubState {
    started: u32,
    active: bool,
    cancelling: bool,
}

const NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

impl RefreshStub {
    fn start() -> RefreshStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Requests = Arc::default();
        let state = Arc::new(Mutex::new(StubState::default()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let reqs = reqs.clone();
                let state = state.clone();
                std::thread::spawn(move || serve(conn, reqs, state));
            }
        });
        RefreshStub { url, requests }
    }

    fn actions(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.get("Action").cloned().unwrap_or_default())
            .collect()
    }
}

/// The name in a load balancer's or target group's ARN (`.../app/<name>/<id>`,
/// `...:targetgroup/<name>/<id>`).
fn name_in(arn: &str) -> &str {
    arn.rsplit('/').nth(1).unwrap_or_default()
}

/// Load balancer and target group listings carry no tags, and an account holds its own and other
/// stacks': only the tags of those named after the stack (`elbtest-...`) are read.
/// `elbtest-staging`'s are named so too; their tags tell them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_balancers_and_target_groups_named_after_the_stack_have_their_tags_read() {
    let emu = common::Emulator::start();
    let aws = connect(&emu.url).await;
    let vpc = ec2::default_vpc(&aws).await.expect("default vpc");
    let mut zones = BTreeMap::new();
    for (id, az) in ec2::subnets(&aws, &vpc).await.expect("subnets") {
        zones.entry(az).or_insert(id);
    }
    let subnet_ids: Vec<String> = zones.into_values().take(2).collect();
    let owners = [
        ("elbtest", Some(STACK)),
        ("elbtest-staging", Some("elbtest-staging")),
        ("otherstack", Some("otherstack")),
        ("users", None),
    ];
    for (prefix, stack) in owners {
        let identity = |id: &str, kind| {
            stack
                .map(|s| tags::identity(s, &ResourceId::new(id), kind, &BTreeMap::new()))
                .unwrap_or_default()
        };
        let tg = TargetGroupSpec {
            name: format!("{prefix}-tg"),
            ..tg_spec(&vpc)
        };
        elbv2::create_target_group(&aws, &tg, &identity("web-tg", Kind::TargetGroup))
            .await
            .expect("create target group");
        let lb = LoadBalancerSpec {
            name: format!("{prefix}-alb"),
            subnet_ids: subnet_ids.clone(),
            security_groups: vec![],
        };
        elbv2::create_load_balancer(&aws, &lb, vec![], &identity("lb", Kind::LoadBalancer))
            .await
            .expect("create load balancer");
    }
    let proxy = common::AwsProxy::logging(&emu);
    let found = elbv2::discover(&connect(&proxy.url).await, STACK)
        .await
        .expect("discover");
    let mut names: Vec<&str> = found.iter().map(|o| name_in(&o.physical_id)).collect();
    names.sort();
    assert_eq!(names, ["elbtest-alb", "elbtest-tg"], "{found:#?}");
    let calls = proxy.calls();
    let mut read: Vec<&str> = calls
        .of("elasticloadbalancing:DescribeTags", "")
        .iter()
        .flat_map(|c| &c.ids)
        .map(|arn| name_in(arn))
        .collect();
    read.sort();
    assert_eq!(
        read,
        [
            "elbtest-alb",
            "elbtest-staging-alb",
            "elbtest-staging-tg",
            "elbtest-tg"
        ],
        "{}",
        calls.changes()
    );
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn serve(conn: TcpStream, requests: Requests, state: Arc<Mutex<StubState>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line, then headers.
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let form: BTreeMap<String, String> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        requests.lock().unwrap().push(form.clone());
        let (status, xml) = answer(&form, &mut state.lock().unwrap());
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}",
            xml.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn error(code: &str, message: &str) -> (&'static str, String) {
    (
        "400 Bad Request",
        format!(
            "<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>stub</RequestId></ErrorResponse>"
        ),
    )
}

fn ok(action: &str, result: &str) -> (&'static str, String) {
    (
        "200 OK",
        format!(
            "<{action}Response xmlns=\"{NS}\"><{action}Result>{result}</{action}Result>\
             <ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata></{action}Response>"
        ),
    )
}

fn answer(form: &BTreeMap<String, String>, s: &mut StubState) -> (&'static str, String) {
    let action = form.get("Action").map(String::as_str).unwrap_or_default();
    let group = form
        .get("AutoScalingGroupName")
        .map(String::as_str)
        .unwrap_or_default();
    if group != "web" {
        return error(
            "ValidationError",
            &format!("AutoScalingGroup name not found - AutoScalingGroup '{group}' not found"),
        );
    }
    match action {
        "StartInstanceRefresh" => {
            if s.active {
                return error(
                    "InstanceRefreshInProgress",
                    "An Instance Refresh is already in progress and blocks the execution of \
                     this Instance Refresh.",
                );
            }
            if s.cancelling {
                s.cancelling = false;
                return error(
                    "InstanceRefreshInProgress",
                    "An Instance Refresh is being cancelled.",
                );
            }
            s.started += 1;
            s.active = true;
            ok(
                action,
                &format!(
                    "<InstanceRefreshId>refresh-{}</InstanceRefreshId>",
                    s.started
                ),
            )
        }
        "CancelInstanceRefresh" => {
            if !s.active {
                return error("ActiveInstanceRefreshNotFound", "No refresh in progress.");
            }
            s.active = false;
            s.cancelling = true;
            ok(
                action,
                &format!(
                    "<InstanceRefreshId>refresh-{}</InstanceRefreshId>",
                    s.started
                ),
            )
        }
        "DescribeInstanceRefreshes" => {
            let items = if s.started == 0 {
                String::new()
            } else {
                format!(
                    "<member><InstanceRefreshId>refresh-{}</InstanceRefreshId>\
                     <AutoScalingGroupName>web</AutoScalingGroupName>\
                     <Status>{}</Status><PercentageComplete>40</PercentageComplete></member>",
                    s.started,
                    if s.active { "InProgress" } else { "Cancelled" }
                )
            };
            ok(
                action,
                &format!("<InstanceRefreshes>{items}</InstanceRefreshes>"),
            )
        }
        _ => error("InvalidAction", &format!("the stub does not do {action}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_refresh_against_a_stub() {
    let stub = RefreshStub::start();
    let aws = connect(&stub.url).await;

    assert_eq!(
        autoscaling::latest_refresh(&aws, "web")
            .await
            .expect("latest refresh"),
        None
    );
    let to = autoscaling::Desired {
        launch_template_id: "lt-1".to_string(),
        version: "7".to_string(),
        auto_rollback: true,
    };
    let id = autoscaling::start_instance_refresh(&aws, "web", 90, 60, Some(&to))
        .await
        .expect("start refresh");
    assert_eq!(id, "refresh-1");
    let sent = stub.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["Action"], "StartInstanceRefresh");
    assert_eq!(sent["AutoScalingGroupName"], "web");
    assert_eq!(sent["Strategy"], "Rolling");
    assert_eq!(sent["Preferences.MinHealthyPercentage"], "90");
    assert_eq!(sent["Preferences.InstanceWarmup"], "60");
    assert_eq!(sent["Preferences.SkipMatching"], "false");
    assert_eq!(sent["Preferences.ScaleInProtectedInstances"], "Refresh");
    // To version 7, rolled back by AWS if it fails.
    assert_eq!(sent["Preferences.AutoRollback"], "true");
    assert_eq!(
        sent["DesiredConfiguration.LaunchTemplate.LaunchTemplateId"],
        "lt-1"
    );
    assert_eq!(sent["DesiredConfiguration.LaunchTemplate.Version"], "7");
    assert_eq!(
        autoscaling::latest_refresh(&aws, "web")
            .await
            .expect("latest refresh")
            .map(|r| (r.status, r.percent)),
        Some(("InProgress".to_string(), 40))
    );

    // A refresh in progress is cancelled, and the new one started once the old one lets go.
    let id = autoscaling::start_instance_refresh(&aws, "web", 50, 30, None)
        .await
        .expect("restart refresh");
    assert_eq!(id, "refresh-2");
    assert_eq!(
        stub.actions()[3..],
        [
            "StartInstanceRefresh",
            "CancelInstanceRefresh",
            "StartInstanceRefresh",
            "StartInstanceRefresh",
        ]
    );
    assert_eq!(
        autoscaling::latest_refresh(&aws, "web")
            .await
            .expect("latest refresh")
            .map(|r| (r.status, r.percent)),
        Some(("InProgress".to_string(), 40))
    );

    let err = autoscaling::start_instance_refresh(&aws, "gone", 90, 60, None)
        .await
        .expect_err("a missing group");
    assert!(err.is(ErrorClass::NotFound), "{err}");
}
