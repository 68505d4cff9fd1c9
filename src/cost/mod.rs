//! The estimated monthly on-demand cost of a stack, from the price table shipped in the repo
//! (`prices/aws-prices.json`, with its date and source inside).
//!
//! Pure: it reads resources (kinds and specs, or what discovery observed) and a price table,
//! never the network, and knows no tier. A type the table does not list is "unknown", never a
//! guess; usage-priced parts (EFS storage, load balancer capacity units) are shown as rates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Details, Kind, Observed, Resource, Spec};

/// The table embedded at build time.
const SHIPPED: &str = include_str!("../../prices/aws-prices.json");

#[derive(Debug, Clone, Deserialize)]
pub struct PriceTable {
    /// When the prices were read (`2025-01`).
    pub as_of: String,
    /// Where they were read.
    pub source: String,
    pub hours_per_month: f64,
    pub regions: BTreeMap<String, RegionPrices>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegionPrices {
    pub instance_hourly: BTreeMap<String, f64>,
    pub db_instance_hourly: BTreeMap<String, f64>,
    pub load_balancer_hourly: f64,
    pub load_balancer_lcu_hourly: f64,
    pub ebs_gp3_gb_month: f64,
    pub efs_standard_gb_month: f64,
    pub aurora_storage_gb_month: f64,
    pub public_ipv4_hourly: f64,
    pub nat_gateway_hourly: f64,
}

impl PriceTable {
    pub fn shipped() -> Result<PriceTable, serde_json::Error> {
        serde_json::from_str(SHIPPED)
    }
}

/// Something with a price, whatever resource it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Priced {
    /// `count` instances of one type (an Auto Scaling group's desired capacity).
    Instance {
        instance_type: Option<String>,
        count: u32,
    },
    /// An EBS gp3 volume (data volume or root volume).
    Volume {
        gb: u32,
        count: u32,
    },
    DbInstance {
        class: String,
    },
    LoadBalancer,
    /// An Elastic IP: a public IPv4 address, charged by the hour since February 2024.
    PublicIpv4,
    FileSystem,
    NatGateway,
}

/// One priced part of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub priced: Priced,
}

/// One line of the estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub id: String,
    /// `instance t3.micro`, `gp3 20 GB`, `Aurora db.t3.medium`.
    pub what: String,
    /// Whole cents a month; `None` when the table has no price for it.
    pub monthly_cents: Option<u64>,
    /// The same in dollars, for JSON readers.
    pub monthly_usd: Option<f64>,
    /// A usage-priced part on top (`+ $0.30/GB-month`).
    pub plus: Option<String>,
}

/// The estimate for a stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub region: String,
    pub as_of: String,
    pub source: String,
    pub lines: Vec<Line>,
    /// Sum of the known lines, in cents.
    pub total_cents: u64,
    pub total_usd: f64,
    /// How many lines are unknown (then the total is a lower bound).
    pub unknown: usize,
}

/// What a set of desired resources costs (the plan's view).
pub fn items_from_resources(resources: &[Resource]) -> Vec<Item> {
    let template = |id: &crate::plan::ResourceId| {
        resources.iter().find_map(|r| match &r.spec {
            Spec::LaunchTemplate(t) if &r.id == id => Some(t),
            _ => None,
        })
    };
    let mut items = Vec::new();
    for r in resources {
        let id = r.id.to_string();
        match &r.spec {
            Spec::Instance(s) => {
                items.push(instance(&id, Some(&s.instance_type), 1));
                items.push(root(&id, s.disk_gb, 1));
            }
            Spec::AutoScalingGroup(g) => {
                let t = template(&g.launch_template);
                items.push(instance(
                    &id,
                    t.map(|t| t.instance_type.as_str()),
                    g.desired,
                ));
                if let Some(t) = t {
                    items.push(root(&id, t.disk_gb, g.desired));
                }
            }
            Spec::Volume(v) => items.push(Item {
                id,
                priced: Priced::Volume {
                    gb: v.size_gb,
                    count: 1,
                },
            }),
            Spec::DbInstance(d) => items.push(Item {
                id,
                priced: Priced::DbInstance {
                    class: d.instance_class.clone(),
                },
            }),
            other => {
                if let Some(priced) = flat(other.kind()) {
                    items.push(Item { id, priced });
                }
            }
        }
    }
    items
}

/// What the resources found by discovery cost (the status view), and the instances launched
/// on the stack's behalf (an Auto Scaling group's, a scaler's pool), each with the logical id
/// of what launched it: priced by type, one line per launcher and type. `root_gb` holds the
/// size of the instances' root volumes by volume id (see `Details::Instance`): each is priced
/// beside its instance, as the plan does (one line per launcher and size for launched ones).
pub fn items_from_observed(
    found: &[Observed],
    launched: &[Observed],
    root_gb: &BTreeMap<String, u32>,
) -> Vec<Item> {
    let root_of = |o: &Observed| match &o.details {
        Details::Instance {
            root_volume_id: Some(v),
            ..
        } => root_gb.get(v).copied(),
        _ => None,
    };
    let types = tally(launched.iter().filter_map(|o| match &o.details {
        Details::Instance { instance_type, .. } => Some((o.id.as_str(), instance_type.as_str())),
        _ => None,
    }));
    let roots = tally(
        launched
            .iter()
            .filter_map(|o| Some((o.id.as_str(), root_of(o)?))),
    );
    let launched = types
        .into_iter()
        .map(|((id, t), n)| instance(&format!("{id} (instances)"), Some(t), n))
        .chain(roots.into_iter().map(|((id, gb), n)| root(id, gb, n)));
    found
        .iter()
        .flat_map(|o| {
            let id = o.id.to_string();
            let priced = match &o.details {
                Details::Instance { instance_type, .. } => Some(Priced::Instance {
                    instance_type: Some(instance_type.clone()),
                    count: 1,
                }),
                Details::Volume { size_gb, .. } => Some(Priced::Volume {
                    gb: *size_gb,
                    count: 1,
                }),
                Details::DbInstance { instance_class, .. } => Some(Priced::DbInstance {
                    class: instance_class.clone(),
                }),
                // The group's instances come with `launched`.
                Details::AutoScalingGroup { .. } => None,
                _ => flat(o.kind),
            };
            let root = root_of(o).map(|gb| root(&id, gb, 1));
            priced
                .map(|priced| Item { id, priced })
                .into_iter()
                .chain(root)
        })
        .chain(launched)
        .collect()
}

/// How many times each key comes, in the order keys first come.
fn tally<K: PartialEq>(keys: impl IntoIterator<Item = K>) -> Vec<(K, u32)> {
    let mut counts: Vec<(K, u32)> = Vec::new();
    for k in keys {
        match counts.iter_mut().find(|(seen, _)| *seen == k) {
            Some((_, n)) => *n += 1,
            None => counts.push((k, 1)),
        }
    }
    counts
}

fn instance(id: &str, instance_type: Option<&str>, count: u32) -> Item {
    Item {
        id: id.to_string(),
        priced: Priced::Instance {
            instance_type: instance_type.map(str::to_string),
            count,
        },
    }
}

fn root(id: &str, gb: u32, count: u32) -> Item {
    Item {
        id: format!("{id} (root volume)"),
        priced: Priced::Volume { gb, count },
    }
}

/// Kinds priced by their mere existence.
fn flat(kind: Kind) -> Option<Priced> {
    match kind {
        Kind::LoadBalancer => Some(Priced::LoadBalancer),
        Kind::ElasticIp => Some(Priced::PublicIpv4),
        Kind::FileSystem => Some(Priced::FileSystem),
        _ => None,
    }
}

fn cents(usd: f64) -> u64 {
    (usd * 100.0).round().max(0.0) as u64
}

/// Prices `items` in `region`. A region or type missing from the table gives unknown lines.
pub fn estimate(table: &PriceTable, region: &str, items: &[Item]) -> Estimate {
    let prices = table.regions.get(region);
    let h = table.hours_per_month;
    let lines: Vec<Line> = items
        .iter()
        .map(|item| {
            let (what, usd, plus) = match &item.priced {
                Priced::Instance {
                    instance_type,
                    count,
                } => {
                    let t = instance_type.as_deref().unwrap_or("of unknown type");
                    let hourly = instance_type
                        .as_ref()
                        .and_then(|t| prices?.instance_hourly.get(t));
                    let what = if *count == 1 {
                        format!("instance {t}")
                    } else {
                        format!("{count} x instance {t}")
                    };
                    (what, hourly.map(|p| p * h * f64::from(*count)), None)
                }
                Priced::Volume { gb, count } => (
                    if *count == 1 {
                        format!("gp3 {gb} GB")
                    } else {
                        format!("{count} x gp3 {gb} GB")
                    },
                    prices.map(|p| p.ebs_gp3_gb_month * f64::from(*gb) * f64::from(*count)),
                    None,
                ),
                Priced::DbInstance { class } => (
                    format!("Aurora {class}"),
                    prices
                        .and_then(|p| p.db_instance_hourly.get(class))
                        .map(|p| p * h),
                    prices.map(|p| format!("+ ${:.2}/GB-month storage", p.aurora_storage_gb_month)),
                ),
                Priced::LoadBalancer => (
                    "load balancer".to_string(),
                    prices.map(|p| p.load_balancer_hourly * h),
                    prices.map(|p| format!("+ ${}/LCU-hour", p.load_balancer_lcu_hourly)),
                ),
                Priced::PublicIpv4 => (
                    "Elastic IP (public IPv4)".to_string(),
                    prices.map(|p| p.public_ipv4_hourly * h),
                    None,
                ),
                Priced::FileSystem => (
                    "EFS".to_string(),
                    prices.map(|_| 0.0),
                    prices.map(|p| format!("+ ${:.2}/GB-month", p.efs_standard_gb_month)),
                ),
                Priced::NatGateway => (
                    "NAT gateway".to_string(),
                    prices.map(|p| p.nat_gateway_hourly * h),
                    Some("+ data processed".to_string()),
                ),
            };
            let monthly_cents = usd.map(cents);
            Line {
                id: item.id.clone(),
                what,
                monthly_cents,
                monthly_usd: monthly_cents.map(|c| c as f64 / 100.0),
                plus,
            }
        })
        .collect();
    let total_cents = lines.iter().filter_map(|l| l.monthly_cents).sum();
    Estimate {
        region: region.to_string(),
        as_of: table.as_of.clone(),
        source: table.source.clone(),
        unknown: lines.iter().filter(|l| l.monthly_cents.is_none()).count(),
        total_usd: total_cents as f64 / 100.0,
        total_cents,
        lines,
    }
}

/// `$12.34`, or `unknown`.
pub fn dollars(cents: Option<u64>) -> String {
    match cents {
        Some(c) => format!("${}.{:02}", c / 100, c % 100),
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, priced: Priced) -> Item {
        Item {
            id: id.into(),
            priced,
        }
    }

    #[test]
    fn launched_instances_are_priced_one_line_per_launcher_and_type() {
        let vm = |id: &str, phys: &str, t: &str| Observed {
            id: crate::plan::ResourceId::new(id),
            kind: Kind::Instance,
            physical_id: phys.into(),
            state: "running".into(),
            details: Details::Instance {
                instance_type: t.into(),
                image_id: "ami-1".into(),
                key_name: None,
                security_group_ids: Vec::new(),
                spec_hash: None,
                public_ip: None,
                private_ip: None,
                root_volume_id: Some(format!("vol-{phys}")),
            },
            tags: Default::default(),
        };
        // i-4's root volume is gone since the instances were listed: it is left out.
        let root_gb = [
            ("vol-i-0", 20),
            ("vol-i-1", 8),
            ("vol-i-2", 16),
            ("vol-i-3", 8),
        ]
        .into_iter()
        .map(|(v, gb)| (v.to_string(), gb))
        .collect();
        let items = items_from_observed(
            &[vm("monitor", "i-0", "t3.small")],
            &[
                vm("pool", "i-1", "t3.micro"),
                vm("asg", "i-2", "t3.micro"),
                vm("pool", "i-3", "t3.micro"),
                vm("pool", "i-4", "t3.small"),
            ],
            &root_gb,
        );
        let shown: Vec<(String, String, u32)> = items
            .into_iter()
            .map(|i| match i.priced {
                Priced::Instance {
                    instance_type: Some(t),
                    count,
                } => (i.id, t, count),
                Priced::Volume { gb, count } => (i.id, format!("{gb} GB"), count),
                other => panic!("{other:?}"),
            })
            .collect();
        let line = |id: &str, what: &str, n| (id.to_string(), what.to_string(), n);
        assert_eq!(
            shown,
            vec![
                line("monitor", "t3.small", 1),
                line("monitor (root volume)", "20 GB", 1),
                line("pool (instances)", "t3.micro", 2),
                line("asg (instances)", "t3.micro", 1),
                line("pool (instances)", "t3.small", 1),
                line("pool (root volume)", "8 GB", 2),
                line("asg (root volume)", "16 GB", 1),
            ]
        );
    }

    fn sample() -> Vec<Item> {
        vec![
            item(
                "web",
                Priced::Instance {
                    instance_type: Some("t3.micro".into()),
                    count: 2,
                },
            ),
            item("data", Priced::Volume { gb: 20, count: 1 }),
            item(
                "db-1",
                Priced::DbInstance {
                    class: "db.t3.medium".into(),
                },
            ),
            item("alb", Priced::LoadBalancer),
            item("ip", Priced::PublicIpv4),
            item("files", Priced::FileSystem),
            item(
                "odd",
                Priced::Instance {
                    instance_type: Some("x9.gigantic".into()),
                    count: 1,
                },
            ),
        ]
    }

    #[test]
    fn the_shipped_table_has_its_date_and_source_and_the_default_region() {
        let t = PriceTable::shipped().expect("prices/aws-prices.json parses");
        assert!(!t.as_of.is_empty() && t.source.contains("AWS"));
        assert!(t.regions.contains_key("us-east-1"));
        assert_eq!(t.hours_per_month, 730.0);
    }

    #[test]
    fn the_total_is_the_sum_of_the_lines_and_the_lines_match_the_table() {
        let t = PriceTable::shipped().expect("table");
        let p = &t.regions["us-east-1"];
        let e = estimate(&t, "us-east-1", &sample());
        let sum: u64 = e.lines.iter().filter_map(|l| l.monthly_cents).sum();
        assert_eq!(e.total_cents, sum);
        let line = |id: &str| e.lines.iter().find(|l| l.id == id).expect("line");
        let expect = |usd: f64| Some(cents(usd));
        assert_eq!(
            line("web").monthly_cents,
            expect(p.instance_hourly["t3.micro"] * 730.0 * 2.0)
        );
        assert_eq!(
            line("data").monthly_cents,
            expect(p.ebs_gp3_gb_month * 20.0)
        );
        assert_eq!(
            line("db-1").monthly_cents,
            expect(p.db_instance_hourly["db.t3.medium"] * 730.0)
        );
        assert_eq!(
            line("alb").monthly_cents,
            expect(p.load_balancer_hourly * 730.0)
        );
        assert_eq!(
            line("ip").monthly_cents,
            expect(p.public_ipv4_hourly * 730.0)
        );
        assert_eq!(line("ip").monthly_cents, Some(365));
        assert_eq!(line("files").monthly_cents, Some(0));
        assert_eq!(line("files").plus.as_deref(), Some("+ $0.30/GB-month"));
    }

    #[test]
    fn an_unknown_type_or_region_is_unknown_not_a_guess() {
        let t = PriceTable::shipped().expect("table");
        let e = estimate(&t, "us-east-1", &sample());
        let odd = e.lines.iter().find(|l| l.id == "odd").expect("line");
        assert_eq!(odd.monthly_cents, None);
        assert_eq!(dollars(odd.monthly_cents), "unknown");
        assert_eq!(e.unknown, 1);
        let e = estimate(&t, "xx-nowhere-1", &sample());
        assert_eq!(e.unknown, e.lines.len());
        assert_eq!(e.total_cents, 0);
        assert_eq!(dollars(Some(1234)), "$12.34");
    }
}
