//! The RDS and EFS providers against the emulator: real calls, checked through the SDK.

mod common;

use std::collections::BTreeMap;

use iac::aws::error::ErrorClass;
use iac::aws::{ec2, efs, rds, tags, Aws};
use iac::plan::{
    DbClusterSpec, DbInstanceSpec, DbSubnetGroupSpec, Details, FileSystemSpec, Kind, Observed,
    ResourceId,
};

const STACK: &str = "shop";
const OTHER: &str = "other-shop";

/// A provider connection to a fresh emulator, two subnets in two AZs of the default VPC and a
/// security group.
struct Env {
    emu: common::Emulator,
    aws: Aws,
    subnets: Vec<String>,
    sg: String,
}

async fn env() -> Env {
    let emu = common::Emulator::start();
    let aws = emu.aws().await;
    let vpc = ec2::default_vpc(&aws).await.expect("default vpc");
    let all = ec2::subnets(&aws, &vpc).await.expect("subnets");
    let mut subnets = Vec::new();
    let mut azs = Vec::new();
    for (id, az) in all {
        if !azs.contains(&az) {
            azs.push(az);
            subnets.push(id);
        }
        if subnets.len() == 2 {
            break;
        }
    }
    assert_eq!(subnets.len(), 2, "two subnets in two AZs");
    let sg = aws
        .ec2
        .create_security_group()
        .group_name("data")
        .description("data tier")
        .vpc_id(&vpc)
        .send()
        .await
        .expect("create security group")
        .group_id()
        .expect("group id")
        .to_string();
    Env {
        emu,
        aws,
        subnets,
        sg,
    }
}

fn identity(stack: &str, id: &str, kind: Kind) -> BTreeMap<String, String> {
    let extra = BTreeMap::from([("team".to_string(), "books".to_string())]);
    tags::identity(stack, &ResourceId::new(id), kind, &extra)
}

fn rds_tags(t: &[aws_sdk_rds::types::Tag]) -> BTreeMap<String, String> {
    t.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn find<'a>(found: &'a [Observed], kind: Kind, id: &str) -> &'a Observed {
    found
        .iter()
        .find(|o| o.kind == kind && o.id.as_str() == id)
        .unwrap_or_else(|| panic!("no {kind} {id} in {found:#?}"))
}

fn subnet_group_spec(name: &str, subnets: &[String]) -> DbSubnetGroupSpec {
    DbSubnetGroupSpec {
        name: name.to_string(),
        description: format!("{name} database subnets"),
        subnet_ids: subnets.to_vec(),
    }
}

fn cluster_spec(identifier: &str, subnet_group: &str) -> DbClusterSpec {
    DbClusterSpec {
        identifier: identifier.to_string(),
        engine: "aurora-mysql".to_string(),
        engine_version: Some("8.0.mysql_aurora.3.05.2".to_string()),
        database_name: "bookstore".to_string(),
        master_username: "bookstore".to_string(),
        subnet_group: ResourceId::new(subnet_group),
        security_groups: vec![ResourceId::new("db-sg")],
        backup_retention_days: 7,
        port: 3306,
        deletion_protection: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aurora_subnet_group_cluster_and_instance() {
    let env = env().await;
    let aws = &env.aws;
    let sdk = &aws.rds;

    // Subnet groups: one of the stack, one of another stack (must not be discovered).
    let group = subnet_group_spec("shop-db", &env.subnets);
    let group_name = rds::create_subnet_group(
        aws,
        &group,
        &identity(STACK, "db-subnets", Kind::DbSubnetGroup),
    )
    .await
    .expect("create subnet group");
    assert_eq!(group_name, "shop-db");
    let other_group = rds::create_subnet_group(
        aws,
        &subnet_group_spec("other-shop-db", &env.subnets),
        &identity(OTHER, "db-subnets", Kind::DbSubnetGroup),
    )
    .await
    .expect("create the other stack's subnet group");
    // (moto 5.2.5 accepts a second CreateDBSubnetGroup of the same name and replaces the
    // group; AWS answers DBSubnetGroupAlreadyExists. Not asserted here.)

    // The cluster.
    let spec = cluster_spec("shop-db", "db-subnets");
    let (endpoint, secret) = rds::create_cluster(
        aws,
        &spec,
        &group_name,
        vec![env.sg.clone()],
        &identity(STACK, "db", Kind::DbCluster),
    )
    .await
    .expect("create cluster");
    let endpoint = endpoint.expect("the emulator answers with an endpoint at once");
    let secret = secret.expect("the emulator answers with the secret at once");
    assert!(secret.starts_with("arn:aws:secretsmanager:"), "{secret}");

    let c = sdk
        .describe_db_clusters()
        .db_cluster_identifier("shop-db")
        .send()
        .await
        .expect("describe cluster");
    let c = &c.db_clusters()[0];
    assert_eq!(c.storage_encrypted(), Some(true));
    assert_eq!(
        c.master_user_secret().and_then(|s| s.secret_arn()),
        Some(secret.as_str()),
        "ManageMasterUserPassword keeps the password in Secrets Manager"
    );
    assert_eq!(c.backup_retention_period(), Some(7));
    assert_eq!(c.engine(), Some("aurora-mysql"));
    assert_eq!(c.engine_version(), Some("8.0.mysql_aurora.3.05.2"));
    assert_eq!(c.database_name(), Some("bookstore"));
    assert_eq!(c.master_username(), Some("bookstore"));
    assert_eq!(c.port(), Some(3306));
    assert_eq!(c.copy_tags_to_snapshot(), Some(true));
    assert_eq!(c.deletion_protection(), Some(false));
    assert_eq!(c.db_subnet_group(), Some("shop-db"));
    assert_eq!(
        c.vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .collect::<Vec<_>>(),
        vec![env.sg.as_str()]
    );
    let t = rds_tags(c.tag_list());
    assert_eq!(t.get(tags::STACK).map(String::as_str), Some(STACK));
    assert_eq!(t.get(tags::ID).map(String::as_str), Some("db"));
    assert_eq!(t.get("team").map(String::as_str), Some("books"));

    let (status, ep, sec) = rds::cluster_state(aws, "shop-db")
        .await
        .expect("cluster state")
        .expect("the cluster exists");
    assert_eq!(status, "available");
    assert_eq!(ep.as_deref(), Some(endpoint.as_str()));
    assert_eq!(sec.as_deref(), Some(secret.as_str()));

    // The instance in the cluster.
    let inst = DbInstanceSpec {
        identifier: "shop-db-1".to_string(),
        cluster: ResourceId::new("db"),
        instance_class: "db.t3.medium".to_string(),
        engine: "aurora-mysql".to_string(),
    };
    rds::create_instance(
        aws,
        &inst,
        "shop-db",
        &identity(STACK, "db-1", Kind::DbInstance),
    )
    .await
    .expect("create instance");
    let i = sdk
        .describe_db_instances()
        .db_instance_identifier("shop-db-1")
        .send()
        .await
        .expect("describe instance");
    let i = &i.db_instances()[0];
    assert_eq!(i.db_cluster_identifier(), Some("shop-db"));
    assert_eq!(i.db_instance_class(), Some("db.t3.medium"));
    assert_eq!(i.publicly_accessible(), Some(false));
    assert_eq!(
        rds_tags(i.tag_list()).get(tags::ID).map(String::as_str),
        Some("db-1")
    );
    assert_eq!(
        rds::instance_state(aws, "shop-db-1")
            .await
            .expect("instance state")
            .as_deref(),
        Some("available")
    );

    // A second cluster, of another stack, with no instance.
    rds::create_cluster(
        aws,
        &cluster_spec("other-shop-db", "db-subnets"),
        &other_group,
        vec![env.sg.clone()],
        &identity(OTHER, "db", Kind::DbCluster),
    )
    .await
    .expect("create the other cluster");

    // Discovery finds exactly the stack's three resources.
    let found = rds::discover(aws, STACK).await.expect("discover");
    assert_eq!(found.len(), 3, "{found:#?}");
    let g = find(&found, Kind::DbSubnetGroup, "db-subnets");
    assert_eq!(g.physical_id, "shop-db");
    let mut sorted = env.subnets.clone();
    sorted.sort();
    assert_eq!(
        g.details,
        Details::DbSubnetGroup {
            subnet_ids: sorted.clone()
        }
    );
    assert_eq!(g.tags.get(tags::STACK).map(String::as_str), Some(STACK));
    let c = find(&found, Kind::DbCluster, "db");
    assert_eq!(c.physical_id, "shop-db");
    assert_eq!(c.state, "available");
    assert_eq!(
        c.details,
        Details::DbCluster {
            endpoint: Some(endpoint.clone()),
            secret_arn: Some(secret.clone()),
            engine_version: "8.0.mysql_aurora.3.05.2".to_string(),
            backup_retention_days: 7,
            encrypted: true,
            deletion_protection: false,
        }
    );
    assert_eq!(c.tags.get("team").map(String::as_str), Some("books"));
    let i = find(&found, Kind::DbInstance, "db-1");
    assert_eq!(i.physical_id, "shop-db-1");
    assert_eq!(i.state, "available");
    assert_eq!(
        i.details,
        Details::DbInstance {
            instance_class: "db.t3.medium".to_string(),
            cluster: Some("shop-db".to_string()),
        }
    );
    let other = rds::discover(aws, OTHER).await.expect("discover other");
    assert_eq!(other.len(), 2, "{other:#?}");

    // In-place changes.
    let mut changed = spec.clone();
    changed.backup_retention_days = 14;
    rds::modify_cluster(aws, &changed, vec![env.sg.clone()])
        .await
        .expect("modify cluster");
    let c = sdk
        .describe_db_clusters()
        .db_cluster_identifier("shop-db")
        .send()
        .await
        .expect("describe cluster");
    assert_eq!(c.db_clusters()[0].backup_retention_period(), Some(14));

    // A cluster with a live instance cannot be deleted: classified as "retry".
    let busy = rds::delete_cluster(aws, "shop-db", Some("shop-db-final-1"))
        .await
        .expect_err("cluster with members");
    assert!(busy.is(ErrorClass::DependencyViolation), "{busy:?}");

    // Instance, then cluster with a final snapshot.
    rds::delete_instance(aws, "shop-db-1")
        .await
        .expect("delete instance");
    assert_eq!(
        rds::instance_state(aws, "shop-db-1")
            .await
            .expect("instance state"),
        None
    );
    let gone = rds::delete_instance(aws, "shop-db-1")
        .await
        .expect_err("instance gone");
    assert!(gone.is(ErrorClass::NotFound), "{gone:?}");
    rds::delete_cluster(aws, "shop-db", Some("shop-db-final-1"))
        .await
        .expect("delete cluster");
    assert_eq!(
        rds::cluster_state(aws, "shop-db")
            .await
            .expect("cluster state"),
        None
    );
    assert_eq!(
        rds::cluster_snapshots(aws, "shop-db-final")
            .await
            .expect("snapshots"),
        vec!["shop-db-final-1".to_string()]
    );
    let gone = rds::delete_cluster(aws, "shop-db", None)
        .await
        .expect_err("cluster gone");
    assert!(gone.is(ErrorClass::NotFound), "{gone:?}");

    // The other cluster without a snapshot: no manual snapshot appears.
    rds::delete_cluster(aws, "other-shop-db", None)
        .await
        .expect("delete the other cluster");
    assert_eq!(
        rds::cluster_state(aws, "other-shop-db")
            .await
            .expect("cluster state"),
        None
    );
    let manual: Vec<String> = rds::cluster_snapshots(aws, "")
        .await
        .expect("snapshots")
        .into_iter()
        .filter(|s| !s.starts_with("rds:"))
        .collect();
    assert_eq!(manual, vec!["shop-db-final-1".to_string()]);
    assert!(rds::cluster_snapshots(aws, "other-shop-db")
        .await
        .expect("snapshots")
        .is_empty());

    // Updating a subnet group. moto 5.2.5's ModifyDBSubnetGroup drops the group from its
    // backend after answering (it pops it and never puts it back), so this is done last, on
    // the other stack's group: the answer must be a success, and the group, if still listed,
    // must carry the change.
    let mut changed_group = subnet_group_spec("other-shop-db", &env.subnets[..1]);
    changed_group.description = "changed".to_string();
    rds::update_subnet_group(aws, &changed_group)
        .await
        .expect("update subnet group");
    match sdk
        .describe_db_subnet_groups()
        .db_subnet_group_name("other-shop-db")
        .send()
        .await
    {
        Ok(g) => {
            let g = &g.db_subnet_groups()[0];
            assert_eq!(g.db_subnet_group_description(), Some("changed"));
            assert_eq!(g.subnets().len(), 1);
        }
        Err(e) => {
            let e = iac::aws::AwsError::from_sdk("rds:DescribeDBSubnetGroups", e);
            assert_eq!(
                e.code.as_deref(),
                Some("DBSubnetGroupNotFoundFault"),
                "{e:?}"
            );
        }
    }

    // Subnet groups last.
    rds::delete_subnet_group(aws, "shop-db")
        .await
        .expect("delete subnet group");
    let gone = rds::delete_subnet_group(aws, "shop-db")
        .await
        .expect_err("subnet group gone");
    assert!(gone.is(ErrorClass::NotFound), "{gone:?}");
    assert!(rds::discover(aws, STACK)
        .await
        .expect("discover")
        .is_empty());
}

/// Subnet group listings carry no tags, and an account holds groups of its own and of other
/// stacks: only the tags of groups named after the stack (`shop-...`) are read. `shop-staging`'s
/// group is named so too; its tags tell it apart.
#[tokio::test(flavor = "multi_thread")]
async fn only_subnet_groups_named_after_the_stack_have_their_tags_read() {
    let env = env().await;
    let groups = [
        ("shop-db", Some(STACK)),
        ("shop-staging-db", Some("shop-staging")),
        ("other-shop-db", Some(OTHER)),
        ("legacy-db", None),
        ("shopfront", None),
    ];
    for (name, stack) in groups {
        let spec = subnet_group_spec(name, &env.subnets);
        let tags = stack
            .map(|s| identity(s, "db-subnets", Kind::DbSubnetGroup))
            .unwrap_or_default();
        rds::create_subnet_group(&env.aws, &spec, &tags)
            .await
            .expect("create subnet group");
    }
    let proxy = common::AwsProxy::logging(&env.emu);
    let found = rds::discover(&common::aws_at(&proxy.url).await, STACK)
        .await
        .expect("discover");
    let names: Vec<&str> = found.iter().map(|o| o.physical_id.as_str()).collect();
    assert_eq!(names, ["shop-db"]);
    let calls = proxy.calls();
    let read: Vec<&str> = calls
        .of("rds:ListTagsForResource", "")
        .iter()
        .flat_map(|c| &c.ids)
        .filter_map(|arn| arn.rsplit_once(":subgrp:").map(|(_, name)| name))
        .collect();
    let mut read = read;
    read.sort();
    assert_eq!(read, ["shop-db", "shop-staging-db"], "{}", calls.changes());
}

#[tokio::test(flavor = "multi_thread")]
async fn efs_file_system_and_mount_targets() {
    let env = env().await;
    let aws = &env.aws;
    let sdk = &aws.efs;

    let spec = FileSystemSpec {
        creation_token: "shop-files".to_string(),
        keep_on_down: true,
        protected: false,
    };
    let t = identity(STACK, "files", Kind::FileSystem);
    let fs = efs::create_file_system(aws, &spec, &t)
        .await
        .expect("create file system");
    let again = efs::create_file_system(aws, &spec, &t)
        .await
        .expect("create again with the same token");
    assert_eq!(fs, again, "the creation token makes creation idempotent");
    let described = sdk
        .describe_file_systems()
        .creation_token("shop-files")
        .send()
        .await
        .expect("describe file systems");
    assert_eq!(described.file_systems().len(), 1);
    let d = &described.file_systems()[0];
    assert_eq!(d.encrypted(), Some(true));
    assert_eq!(d.performance_mode().as_str(), "generalPurpose");
    assert_eq!(
        d.throughput_mode().map(|m| m.as_str()),
        Some("elastic"),
        "throughput mode"
    );
    let dt: BTreeMap<String, String> = d
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert_eq!(dt.get(tags::STACK).map(String::as_str), Some(STACK));
    assert_eq!(dt.get(tags::ID).map(String::as_str), Some("files"));
    assert_eq!(dt.get(tags::DATA).map(String::as_str), Some("true"));
    assert_eq!(
        efs::file_system_state(aws, &fs)
            .await
            .expect("state")
            .as_deref(),
        Some("available")
    );

    // More file systems than one page (the emulator pages by 10): one of the stack without
    // `keep_on_down`, the rest another stack's.
    let scratch = efs::create_file_system(
        aws,
        &FileSystemSpec {
            creation_token: "shop-scratch".to_string(),
            keep_on_down: false,
            protected: false,
        },
        &identity(STACK, "scratch", Kind::FileSystem),
    )
    .await
    .expect("create scratch file system");
    for n in 0..11 {
        efs::create_file_system(
            aws,
            &FileSystemSpec {
                creation_token: format!("other-{n}"),
                keep_on_down: false,
                protected: false,
            },
            &identity(OTHER, &format!("files-{n}"), Kind::FileSystem),
        )
        .await
        .expect("create another stack's file system");
    }

    // Mount targets in two subnets; asking again for the same subnet answers the same id.
    let mut targets = Vec::new();
    for subnet in &env.subnets {
        let mt = efs::create_mount_target(aws, &fs, subnet, vec![env.sg.clone()])
            .await
            .expect("create mount target");
        assert_eq!(
            efs::mount_target_states(aws, &fs)
                .await
                .expect("states")
                .get(&mt)
                .map(String::as_str),
            Some("available")
        );
        targets.push(mt);
    }
    let mt_again = efs::create_mount_target(aws, &fs, &env.subnets[0], vec![env.sg.clone()])
        .await
        .expect("create the same mount target again");
    assert_eq!(mt_again, targets[0]);

    let found = efs::discover(aws, STACK).await.expect("discover");
    assert_eq!(found.len(), 4, "{found:#?}");
    let f = find(&found, Kind::FileSystem, "files");
    assert_eq!(f.physical_id, fs);
    assert_eq!(f.state, "available");
    assert_eq!(
        f.details,
        Details::FileSystem {
            encrypted: true,
            keep_on_down: true,
            protected: false,
        }
    );
    assert_eq!(f.tags.get("team").map(String::as_str), Some("books"));
    let s = find(&found, Kind::FileSystem, "scratch");
    assert_eq!(s.physical_id, scratch);
    assert_eq!(
        s.details,
        Details::FileSystem {
            encrypted: true,
            keep_on_down: false,
            protected: false,
        }
    );
    for (subnet, mt) in env.subnets.iter().zip(&targets) {
        let m = find(&found, Kind::MountTarget, &format!("mount-{subnet}"));
        assert_eq!(&m.physical_id, mt);
        assert_eq!(m.state, "available");
        assert_eq!(
            m.details,
            Details::MountTarget {
                file_system_id: fs.clone(),
                subnet_id: subnet.clone(),
            }
        );
    }
    assert_eq!(
        efs::discover(aws, OTHER)
            .await
            .expect("discover other")
            .len(),
        11
    );

    // The file system cannot go before its mount targets: classified as "retry".
    let busy = efs::delete_file_system(aws, &fs)
        .await
        .expect_err("file system with mount targets");
    assert!(busy.is(ErrorClass::DependencyViolation), "{busy:?}");

    for mt in &targets {
        efs::delete_mount_target(aws, mt)
            .await
            .expect("delete mount target");
        let states = efs::mount_target_states(aws, &fs).await.expect("states");
        assert_eq!(states.get(mt), None, "{states:?}");
        let gone = efs::delete_mount_target(aws, mt)
            .await
            .expect_err("mount target gone");
        assert!(gone.is(ErrorClass::NotFound), "{gone:?}");
    }
    for id in [&fs, &scratch] {
        efs::delete_file_system(aws, id)
            .await
            .expect("delete file system");
        assert_eq!(efs::file_system_state(aws, id).await.expect("state"), None);
        let gone = efs::delete_file_system(aws, id)
            .await
            .expect_err("file system gone");
        assert!(gone.is(ErrorClass::NotFound), "{gone:?}");
    }
    assert!(efs::discover(aws, STACK)
        .await
        .expect("discover")
        .is_empty());
}
