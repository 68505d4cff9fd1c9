//! AWS access: configuration, one file per service, tags and error classification.
//!
//! Providers here do the I/O; tiers never call AWS and the executor never knows about services.

pub mod autoscaling;
pub mod boot_report;
pub mod calls;
pub mod ec2;
pub mod efs;
pub mod elbv2;
pub mod error;
pub mod iam;
pub mod lock;
pub mod provider;
pub mod rds;
pub mod route53;
pub mod ssm;
pub mod tagging;
pub use crate::plan::tags;

use std::sync::Arc;
use std::time::Duration;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::{BehaviorVersion, Region};

pub use calls::CallLog;
pub use error::{AwsError, ErrorClass};

/// How to reach AWS, from flags and the environment.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// `--region`; the stack file's region wins over the environment but not over the flag.
    pub region: Option<String>,
    pub profile: Option<String>,
    /// `--endpoint-url` (the standard `AWS_ENDPOINT_URL` is honoured by the SDK itself).
    pub endpoint_url: Option<String>,
}

impl AwsOptions {
    /// The endpoint override in effect, from the flag or the standard variable.
    pub fn endpoint_override(&self) -> Option<String> {
        self.endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|s| !s.trim().is_empty())
    }
}

/// Attempts per call, first one included (the SDK's default is 3).
pub const MAX_ATTEMPTS: u32 = 10;
/// The ceiling of one backoff (the SDK's default, 20 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How long `iac` keeps retrying a throttled (`Throttling`, `RequestLimitExceeded`, …) or 5xx
/// call: the SDK's standard mode (full-jitter exponential backoff, 1 s doubling up to 20 s),
/// with ten attempts instead of three. The SDK default gives up after about 3 s of waiting
/// (two waits of at most 1 s and 2 s), shorter than a burst from other pipelines in a busy
/// account lasts, and a failed `up` costs far more than waiting; ten attempts wait up to about
/// 2 minutes in the worst case, about 1 minute on average. Other errors (invalid input, access
/// denied, not found) are not retried: they fail at once, naming the call.
pub fn retry_budget() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_secs(1))
        .with_max_backoff(MAX_BACKOFF)
}

/// Clients for every service, sharing one configuration and one call log.
#[derive(Clone, Debug)]
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub route53: aws_sdk_route53::Client,
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub rds: aws_sdk_rds::Client,
    pub efs: aws_sdk_efs::Client,
    pub iam: aws_sdk_iam::Client,
    pub region: String,
    /// Set when requests go to an emulator or another non-AWS endpoint: no HTTP probes then,
    /// since emulated addresses are fake.
    pub endpoint_override: Option<String>,
    pub calls: Arc<CallLog>,
    /// What the endpoint turned out to support, learnt once per run from its answers.
    pub capabilities: Arc<Capabilities>,
}

/// Optional parts of an API that an endpoint may lack (an emulator does; AWS never does), each
/// learnt once from the endpoint's answer to one call and then remembered.
#[derive(Debug, Default)]
pub struct Capabilities {
    /// `None` when instance refreshes work; otherwise the answer that showed they do not.
    pub(crate) instance_refresh: std::sync::OnceLock<Option<String>>,
}

impl Aws {
    /// Loads the standard credential chain with the given overrides. Makes no request.
    pub async fn connect(opts: &AwsOptions, stack_region: Option<&str>) -> Aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // The region never comes from instance metadata: that would send a request off this
        // machine, and `iac` runs on laptops and CI far more than on EC2.
        let region = match opts
            .region
            .clone()
            .or_else(|| stack_region.map(str::to_string))
        {
            Some(r) => Region::new(r),
            None => RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(ProfileFileRegionProvider::new())
                .or_else(Region::new("us-east-1"))
                .region()
                .await
                .unwrap_or_else(|| Region::new("us-east-1")),
        };
        loader = loader.region(region);
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        let endpoint_override = opts.endpoint_override();
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        // A standard variable or profile setting (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`) wins; the
        // SDK reads those itself.
        if std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
            && std::env::var_os("AWS_RETRY_MODE").is_none()
        {
            loader = loader.retry_config(retry_budget());
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let calls = Arc::new(CallLog::default());
        let interceptor = calls::Counter(calls.clone());
        Aws {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            ssm: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            route53: aws_sdk_route53::Client::from_conf(
                aws_sdk_route53::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            tagging: aws_sdk_resourcegroupstagging::Client::from_conf(
                aws_sdk_resourcegroupstagging::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            rds: aws_sdk_rds::Client::from_conf(
                aws_sdk_rds::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            efs: aws_sdk_efs::Client::from_conf(
                aws_sdk_efs::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&sdk)
                    .interceptor(interceptor)
                    .build(),
            ),
            region,
            endpoint_override,
            calls,
            capabilities: Arc::default(),
        }
    }
}
